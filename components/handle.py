"""The seam between a cluster and everything installed on it.

Every cluster component ends in a ClusterHandle. GPU enablement, monitoring and teams take a handle and
nothing else about the cloud, so this module must never import a cloud SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

# Node labels every GPU pool carries on every cloud, so that workloads and agents select pools the same way.
POOL_LABEL = "mlplatform.io/pool"
ACCELERATOR_LABEL = "mlplatform.io/accelerator"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"

SYSTEM_POOL = "system"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"

    def toleration(self) -> dict[str, str]:
        """The pod toleration that matches exactly this taint."""
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


# The taint of every GPU node: only pods that ask for a GPU pool (and per-node GPU agents) land there.
GPU_TAINT = Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")


def gpu_pool_labels(pool: str, accelerator: str) -> dict[str, str]:
    return {POOL_LABEL: pool, ACCELERATOR_LABEL: accelerator, GPU_PRESENT_LABEL: "true"}


@dataclass(frozen=True)
class GpuPool:
    name: str
    accelerator: str
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    spot: bool
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = (GPU_TAINT,)

    @property
    def max_gpus(self) -> int:
        return self.gpus_per_node * self.max_nodes

    def describe(self) -> dict[str, object]:
        """Plain data for stack outputs: what a team needs to target this pool."""
        return {
            "name": self.name,
            "accelerator": self.accelerator,
            "gpusPerNode": self.gpus_per_node,
            "minNodes": self.min_nodes,
            "maxNodes": self.max_nodes,
            "maxGpus": self.max_gpus,
            "spot": self.spot,
            "labels": dict(self.labels),
            "taints": [str(t) for t in self.taints],
        }


@dataclass(frozen=True)
class Capabilities:
    """What the cluster brings by itself, so that platform components install only what is missing."""

    # The nodes' image ships NVIDIA drivers (EKS accelerated AMI, GKE with managed driver installation).
    gpu_drivers: bool
    # The cloud runs its own NVIDIA device plugin (GKE), so installing ours would double-advertise GPUs.
    device_plugin: bool
    # Real GPUs exist; kind has none and imitates them.
    physical_gpus: bool


@dataclass(frozen=True)
class ClusterHandle:
    name: str
    cloud: str
    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]
    capabilities: Capabilities
    gpu_pools: tuple[GpuPool, ...] = ()
    # Where the platform's own controllers run: never on GPU nodes.
    system_node_selector: Mapping[str, str] = field(default_factory=lambda: {POOL_LABEL: SYSTEM_POOL})

    @property
    def gpu_capacity(self) -> int:
        return sum(pool.max_gpus for pool in self.gpu_pools)
