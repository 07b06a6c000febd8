"""The platform's rules over resources, as plain functions of a resource's type and inputs.

Each rule returns the list of its violations, as messages that tell the user how to fix them. Inputs use
the providers' schema names (camelCase), as the Pulumi engine and a CrossGuard pack see them.
This module imports nothing from the project, so that the policy pack can load it on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
# Per-node GPU agents: the only workloads that belong on GPU nodes without asking for a GPU.
GPU_AGENT_CHARTS = frozenset({"nvidia-device-plugin", "fake-gpu-operator", "dcgm-exporter"})

Props = dict[str, Any]


@dataclass(frozen=True)
class ResourceRule:
    name: str
    description: str
    enforcement: str  # "mandatory" or "advisory"
    check: Callable[[str, Props], list[str]]


def tolerates_gpu_taint(toleration: Any) -> bool:
    if not isinstance(toleration, dict):
        return False
    if toleration.get("effect") not in (None, "", "NoSchedule"):
        return False
    key, operator = toleration.get("key") or "", toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"  # a toleration of every taint
    return key == GPU_TAINT_KEY and (operator == "Exists" or toleration.get("value") == GPU_TAINT_VALUE)


def _tolerations(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every toleration anywhere in a pod spec or a chart's values, with where it is."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else key
            if key == "tolerations" and isinstance(value, list):
                yield from ((f"{where}[{i}]", toleration) for i, toleration in enumerate(value))
            else:
                yield from _tolerations(value, where)
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from _tolerations(item, f"{path}[{index}]")


def chart_name(props: Props) -> str:
    return str(props.get("chart") or "").rstrip("/").rsplit("/", 1)[-1]


def only_gpu_agents_tolerate_the_gpu_taint(resource_type: str, props: Props) -> list[str]:
    if resource_type == HELM_RELEASE:
        if chart_name(props) in GPU_AGENT_CHARTS:
            return []
        tree, root = props.get("values"), "values"
    elif resource_type.startswith("kubernetes:"):
        tree, root = props.get("spec"), "spec"
    else:
        return []
    return [f"{where} tolerates the GPU taint {GPU_TAINT_KEY}={GPU_TAINT_VALUE}:NoSchedule: only per-node GPU "
            f"agents ({', '.join(sorted(GPU_AGENT_CHARTS))}) may run on GPU nodes without requesting a GPU; "
            "remove the toleration, or request nvidia.com/gpu if this workload uses one"
            for where, toleration in _tolerations(tree, root) if tolerates_gpu_taint(toleration)]


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    ResourceRule(
        name="only-gpu-agents-tolerate-gpu-taint",
        description="Only the platform's per-node GPU agents tolerate the nvidia.com/gpu taint, so that GPU "
                    "nodes run GPU work: remove other tolerations of it.",
        enforcement="mandatory",
        check=only_gpu_agents_tolerate_the_gpu_taint,
    ),
)
