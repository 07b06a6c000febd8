"""What the API server refuses and allows in team namespaces: CEL admission policies and the teams' extra rights.

Quotas and queues cap how much a team holds; these ValidatingAdmissionPolicies (built into Kubernetes, no
controller to run) keep each pod on the platform's lines: GPU nodes for GPU work, GPU work through the team's
queue, no system or foreign pools. Each message says what to change. They bind to every namespace that
carries the team label, team stacks' included; `enforcement` chooses Deny or Warn (both audited).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.admissionregistration.v1 import (
    MatchResourcesArgs,
    NamedRuleWithOperationsArgs,
    ValidatingAdmissionPolicyBindingSpecArgs,
    ValidatingAdmissionPolicySpecArgs,
    ValidationArgs,
    VariableArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, LabelSelectorRequirementArgs, ObjectMetaArgs
from pulumi_kubernetes.rbac.v1 import PolicyRuleArgs

from core.vocabulary import DEFAULT_LOCAL_QUEUE, GPU_TAINT, ML_PRIORITY_CLASSES, POOL_LABEL, TEAM_LABEL
from core.handle import ClusterHandle
from config.queues import QueueLayout

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# A CEL predicate on a resource name `r`: whole GPUs, renamed time-sliced shares, MIG slices.
_IS_GPU = "(r == 'nvidia.com/gpu' || r.startsWith('nvidia.com/gpu.') || r.startsWith('nvidia.com/mig-'))"


def _cel(value: object) -> str:
    """A Python str, int, list or dict as a CEL literal."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool) or not isinstance(value, (int, list, dict)):
        raise TypeError(f"no CEL literal for {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_cel(item) for item in value) + "]"
    return "{" + ", ".join(f"{_cel(k)}: {_cel(v)}" for k, v in sorted(value.items())) + "}"


@dataclass(frozen=True)
class Check:
    expression: str
    message: str
    # Evaluated for the message when present (the static message stays as a fallback).
    message_expression: str | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    checks: tuple[Check, ...]


def policy_variables(layout: QueueLayout, system_node_selector: Mapping[str, str]) -> list[tuple[str, str]]:
    """Named expressions every policy shares: the pod spec of a Pod or a Job, its GPU containers, its team."""
    largest = {layout.pools[p].resource: 0 for p in layout.pools}
    for pool in layout.pools.values():
        largest[pool.resource] = max(largest[pool.resource], pool.node_gpus)
    return [
        # A Job's pods are its template's; told apart by shape, which needs no apiVersion or kind in the object.
        ("spec", "has(object.spec.template) ? object.spec.template.spec : object.spec"),
        ("containers", "variables.spec.containers + "
                       "(has(variables.spec.initContainers) ? variables.spec.initContainers : [])"),
        ("gpuContainers", "variables.containers.filter(c, has(c.resources) && "
                          f"((has(c.resources.limits) && c.resources.limits.exists(r, {_IS_GPU})) || "
                          f"(has(c.resources.requests) && c.resources.requests.exists(r, {_IS_GPU}))))"),
        ("requestsGpu", "size(variables.gpuContainers) > 0"),
        ("labels", "has(object.metadata.labels) ? object.metadata.labels : {}"),
        ("team", f"has(namespaceObject.metadata.labels) && {_cel(TEAM_LABEL)} in namespaceObject.metadata.labels "
                 f"? namespaceObject.metadata.labels[{_cel(TEAM_LABEL)}] : ''"),
        # Node label pairs no team pod may ask for, and the pools dedicated to one team.
        ("systemNodes", _cel(sorted(f"{key}={value}" for key, value in system_node_selector.items()))),
        ("dedicatedPools", _cel(dict(layout.dedicated))),
        # The most of each GPU resource one node of any pool offers.
        ("largestNode", _cel(largest)),
    ]


def _forbidden(key: str, value: str) -> str:
    return (f"(({key} + '=' + {value}) in variables.systemNodes || ({key} == {_cel(POOL_LABEL)} && "
            f"{value} in variables.dedicatedPools && variables.dedicatedPools[{value}] != variables.team))")


def team_policies(layout: QueueLayout) -> list[Policy]:
    priority_classes = [p.name for p in ML_PRIORITY_CLASSES]
    largest = ", ".join(f"{p.resource} {p.node_gpus} on pool {p.name}" for p in layout.pools.values()) or "no GPU pools"
    dedicated = ", ".join(f"{pool} to {team}" for pool, team in sorted(layout.dedicated.items())) or "none"
    affinity = "variables.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    return [
        Policy("gpu-nodes-for-gpu-work", (Check(
            "!has(variables.spec.tolerations) || variables.requestsGpu || !variables.spec.tolerations.exists(t, "
            f"(has(t.key) && t.key == {_cel(GPU_TAINT.key)}) || "
            "(!has(t.key) && has(t.operator) && t.operator == 'Exists'))",
            f"This pod tolerates the GPU nodes' taint ({GPU_TAINT}), or every taint, but asks for no GPU, so it "
            "would hold an expensive GPU node for CPU work. Remove that toleration, or request a GPU in "
            "resources.limits (nvidia.com/gpu: 1)."),)),
        Policy("gpu-limits-equal-requests", (Check(
            "variables.gpuContainers.all(c, has(c.resources.limits) && "
            f"c.resources.limits.exists(r, {_IS_GPU}) && (!has(c.resources.requests) || "
            f"c.resources.requests.all(r, !{_IS_GPU} || "
            "(r in c.resources.limits && string(c.resources.requests[r]) == string(c.resources.limits[r])))))",
            "A container asks for GPUs in resources.requests without the same number in resources.limits. GPUs "
            "are never shared beyond what they advertise: set the GPUs in resources.limits (requests then "
            "default to them), or make requests equal limits."),)),
        Policy("gpu-work-through-team-queue", (Check(
            # What a controller owns (a Job's pods, a JobSet's Jobs) went through the queue as its owner.
            "!variables.requestsGpu || (has(object.metadata.ownerReferences) && "
            "object.metadata.ownerReferences.exists(o, has(o.controller) && o.controller)) || "
            f"({_cel(QUEUE_LABEL)} in variables.labels && variables.labels[{_cel(QUEUE_LABEL)}] in "
            f"[variables.team, {_cel(DEFAULT_LOCAL_QUEUE)}])",
            f"GPU work in a team namespace goes through the team's Kueue queue: label it {QUEUE_LABEL}: "
            f"<team> (or leave the label off for the namespace's {DEFAULT_LOCAL_QUEUE!r} queue), or run it as a "
            "Job whose pods the queue admits.",
            # string(): a messageExpression must be typed string, and variables are dyn.
            f"'GPU work in a team namespace goes through the team\\'s Kueue queue: label it {QUEUE_LABEL}: ' + "
            f"string(variables.team) + ' (or leave the label off for the namespace\\'s {DEFAULT_LOCAL_QUEUE} queue), "
            "or run it as a Job whose pods the queue admits.'"),)),
        Policy("team-pools-only", (
            Check("!has(variables.spec.nodeName)",
                  "spec.nodeName puts a pod on a node past the scheduler, the GPU taint and the team's queue. "
                  f"Remove it; to choose a GPU pool, use nodeSelector {POOL_LABEL}: <pool>."),
            Check("!has(variables.spec.nodeSelector) || !variables.spec.nodeSelector.exists(k, "
                  f"{_forbidden('k', 'variables.spec.nodeSelector[k]')})",
                  "The nodeSelector picks the system pool, where the platform's controllers run, or a GPU pool "
                  f"dedicated to another team (dedicated: {dedicated}). Select a GPU pool your team may use "
                  f"({POOL_LABEL}: <pool>), or none for CPU work."),
            Check(f"!has(variables.spec.affinity) || !has(variables.spec.affinity.nodeAffinity) || "
                  f"!has({affinity}) || !{affinity}.nodeSelectorTerms.exists(t, has(t.matchExpressions) && "
                  "t.matchExpressions.exists(e, e.operator == 'In' && has(e.values) && "
                  f"e.values.exists(v, {_forbidden('e.key', 'v')})))",
                  "The required node affinity allows the system pool or a GPU pool dedicated to another team "
                  f"(dedicated: {dedicated}). Name only GPU pools your team may use."),
        )),
        Policy("gpu-request-fits-a-node", (Check(
            "variables.gpuContainers.all(c, !has(c.resources.limits) || c.resources.limits.all(r, "
            f"!{_IS_GPU} || (r in variables.largestNode && "
            "int(string(c.resources.limits[r])) <= variables.largestNode[r])))",
            f"A container asks for more GPUs than any node offers, or a GPU resource no pool has (largest "
            f"nodes: {largest}), so it could never be scheduled. Ask for at most that many per pod and spread "
            "larger work over several pods (a Job with parallelism, a JobSet)."),)),
        Policy("team-priority-classes", (Check(
            f"!has(variables.spec.priorityClassName) || variables.spec.priorityClassName in {_cel(priority_classes)}",
            f"Team workloads use the ML priority classes ({', '.join(priority_classes)}); the system-* classes "
            "belong to the platform, whose pods they would preempt. Set spec.priorityClassName to one of them, "
            "or leave it unset."),)),
    ]


def validation_actions(enforcement: Literal["deny", "warn"]) -> list[str]:
    return ["Deny", "Audit"] if enforcement == "deny" else ["Warn", "Audit"]


def declare_policy(resource_name: str, policy: Policy, *, variables: list[VariableArgs],
                   rules: list[NamedRuleWithOperationsArgs], enforcement: Literal["deny", "warn"],
                   opts: pulumi.ResourceOptions) -> None:
    """A ValidatingAdmissionPolicy of `rules` (CREATE only, so that Kueue's own updates, admission and
    preemption, are never held), bound to every team namespace."""
    full_name = f"mlplatform-{policy.name}"
    vap = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
        resource_name,
        metadata=ObjectMetaArgs(name=full_name),
        spec=ValidatingAdmissionPolicySpecArgs(
            failure_policy="Fail",
            match_constraints=MatchResourcesArgs(resource_rules=rules),
            variables=variables,
            validations=[ValidationArgs(expression=c.expression, message=c.message,
                                        message_expression=c.message_expression)
                         for c in policy.checks],
        ),
        opts=opts)
    k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
        f"{resource_name}-binding",
        metadata=ObjectMetaArgs(name=full_name),
        spec=ValidatingAdmissionPolicyBindingSpecArgs(
            policy_name=full_name, validation_actions=validation_actions(enforcement),
            match_resources=MatchResourcesArgs(namespace_selector=LabelSelectorArgs(match_expressions=[
                LabelSelectorRequirementArgs(key=TEAM_LABEL, operator="Exists")]))),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[vap])))


# Monitors teams may declare in their namespaces, so that Prometheus scrapes their own services.
MONITOR_RESOURCES = ["servicemonitors", "podmonitors"]


class TeamAdmission(pulumi.ComponentResource):
    def __init__(self, name: str, cluster: ClusterHandle, layout: QueueLayout, *,
                 enforcement: Literal["deny", "warn"], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:admission:TeamAdmission", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        variables = [VariableArgs(name=n, expression=e)
                     for n, e in policy_variables(layout, cluster.system_node_selector)]
        # Pods, and Jobs too so that a bad Job is refused when it is submitted rather than when its pods are.
        rules = [NamedRuleWithOperationsArgs(api_groups=[""], api_versions=["v1"], operations=["CREATE"],
                                             resources=["pods"]),
                 NamedRuleWithOperationsArgs(api_groups=["batch"], api_versions=["v1"], operations=["CREATE"],
                                             resources=["jobs"])]
        for policy in team_policies(layout):
            declare_policy(f"{name}-{policy.name}", policy, variables=variables, rules=rules,
                           enforcement=enforcement, opts=child)

        # Teams' edit group may declare monitors of their own services; Prometheus discovers monitors in every
        # namespace, and team NetworkPolicies let it in. Aggregated into the built-in roles, not a new binding.
        for role, verbs in (("edit", ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                                      "watch"]),
                            ("view", ["get", "list", "watch"])):
            k8s.rbac.v1.ClusterRole(
                f"{name}-monitors-{role}",
                metadata=ObjectMetaArgs(name=f"mlplatform-monitors-{role}", labels={
                    f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"}),
                rules=[PolicyRuleArgs(api_groups=["monitoring.coreos.com"], resources=MONITOR_RESOURCES,
                                      verbs=verbs)],
                opts=child)
        self.register_outputs({"policies": [f"mlplatform-{p.name}" for p in team_policies(layout)]})
