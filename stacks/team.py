"""A team stack: the team's namespaces, on the cluster of a platform stack, within the budget it grants."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pulumi

from components.platform_stack import PlatformStackCluster
from components.pod_security import gpu_fabric
from components.team import TeamNamespace
from config import ConfigError
from config.errors import PROJECT, stack_file
from config.loader import load_team_config
from config.models import TeamStackConfig
from core.handle import nccl_settings
from core.outputs import TeamBudget, export_team
from core.quantity import parse_quantity


def _amount(value: Decimal, unit: str) -> str:
    value = value / 2**30 if unit == "memory" else value
    return format(value.normalize(), "f") + ("Gi" if unit == "memory" else "")


def check_namespaces_free(config: TeamStackConfig, budgets: dict[str, Any], monitoring_namespace: str,
                          stack: str) -> None:
    """ConfigError when a namespace is one the platform stack already has (another team's, monitoring's): two
    stacks would own one namespace, and the second `pulumi up` would fail or take it over."""
    taken = {budget.get("namespace", name): f"team {name}'s" for name, budget in budgets.items()
             if name != config.team and not budget.get("ownStack")}
    taken[monitoring_namespace] = "the platform's monitoring"
    for index, namespace in enumerate(config.namespaces):
        if namespace.name in taken:
            raise ConfigError(f"{stack_file(stack)}: {PROJECT}:namespaces[{index}].name: {namespace.name!r} is "
                              f"{taken[namespace.name]} namespace in the platform stack {config.platform_stack}; "
                              "choose another name.")


def check_budget(config: TeamStackConfig, budgets: dict[str, Any], stack: str) -> None:
    """ConfigError unless the namespaces' quotas fit in the team's budget; the message names both numbers."""
    where = f"{stack_file(stack)}: {PROJECT}:namespaces"
    budget = budgets.get(config.team)
    if budget is None or not budget.get("ownStack"):
        raise ConfigError(f"{stack_file(stack)}: {PROJECT}:team: the platform stack {config.platform_stack} grants "
                          f"no budget to team {config.team!r}; its teams with their own stack are: "
                          f"{', '.join(n for n, b in budgets.items() if b.get('ownStack')) or 'none'}. Ask the "
                          "platform team to add it there with ownStack: true.")
    asked = {
        "gpus": Decimal(sum(ns.quota.gpus for ns in config.namespaces)),
        "cpu": sum((parse_quantity(ns.quota.requests.cpu) for ns in config.namespaces), Decimal(0)),
        "memory": sum((parse_quantity(ns.quota.requests.memory) for ns in config.namespaces), Decimal(0)),
    }
    for resource, amount in asked.items():
        granted = Decimal(budget["gpus"]) if resource == "gpus" else parse_quantity(str(budget[resource]))
        if amount > granted:
            raise ConfigError(
                f"{where}: the namespaces ask for {_amount(amount, resource)} {resource} in all, but team "
                f"{config.team}'s budget on {config.platform_stack} is {_amount(granted, resource)}. Lower the "
                "namespaces' quotas, or ask the platform team to raise the team's quota in the platform stack.")


def main() -> None:
    config = load_team_config()
    stack = pulumi.get_stack()
    platform = PlatformStackCluster("platform", config.platform_stack)

    def namespaces(outputs: list[Any]) -> list[str]:
        budgets, monitoring_namespace, gpu_pools = outputs
        # Checked before any namespace is declared: an over-budget stack creates nothing.
        check_budget(config, budgets, stack)
        check_namespaces_free(config, budgets, monitoring_namespace, stack)
        # The platform stack's policy guards namespaces that leave baseline to it; only a platform that has it
        # names the GPUDirect pools a team may use.
        gpu_direct_pools = TeamBudget.read(budgets[config.team]).gpu_direct_pools
        for index, namespace in enumerate(config.namespaces):
            if gpu_direct_pools and namespace.pod_security == "restricted":
                pulumi.log.warn(f"{stack_file(stack)}: {PROJECT}:namespaces[{index}].podSecurity: team "
                                f"{config.team} may use GPUDirect pool(s) {', '.join(gpu_direct_pools)}, whose pods "
                                "Pod Security 'restricted' refuses in this namespace. Set podSecurity: baseline to "
                                "run them (docs/multi-node.md, \"Pod Security on GPUDirect pools\").")
            TeamNamespace(f"team-{namespace.name}", namespace, platform.provider,
                          monitoring_namespace=monitoring_namespace, owner=config.team,
                          nccl=nccl_settings(gpu_pools or []),
                          gpu_fabric=gpu_fabric(namespace.pod_security, gpu_direct_pools))
        return [namespace.name for namespace in config.namespaces]

    created = pulumi.Output.all(platform.budgets, platform.monitoring_namespace, platform.gpu_pools).apply(namespaces)
    export_team(team=config.team, namespaces=created, cluster_name=platform.cluster_name,
                budget=platform.budgets.apply(lambda budgets: budgets.get(config.team)))
