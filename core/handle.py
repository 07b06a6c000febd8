"""The seam between a cluster and everything installed on it.

Every cluster component ends in a ClusterHandle. GPU enablement, monitoring and teams take a handle and
nothing else about the cloud, so this module must never import a cloud SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from core.fields import GpuSharing
from versions import KUBERNETES_VERSION
from core.vocabulary import (ACCELERATOR_LABEL, DEVICE_PLUGIN_CONFIG_LABEL, GPU_PRESENT_LABEL, GPU_TAINT, POOL_LABEL,
                             SYSTEM_POOL, SYSTEM_TAINT, Taint)



def gpu_pool_labels(pool: str, accelerator: str) -> dict[str, str]:
    return {POOL_LABEL: pool, ACCELERATOR_LABEL: accelerator, GPU_PRESENT_LABEL: "true",
            DEVICE_PLUGIN_CONFIG_LABEL: pool}


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
    sharing: GpuSharing = GpuSharing()
    # MIG partitions each GPU is cut into where the cloud partitions it (GKE), each one nvidia.com/gpu.
    mig_partitions: int = 1
    # Placed for multi-node work (a fabric between its nodes, nodes close on the network): Kueue admits its
    # jobs by the cluster's topology (ClusterHandle.topology_levels).
    multi_node: bool = False
    # The fabric between nodes (EFA on EKS): the device resources a pod taking a whole node asks for, and the
    # environment NCCL needs to use them, which every team namespace gets as the ConfigMap nccl_config_map(name).
    fabric_devices: Mapping[str, int] = field(default_factory=dict)
    fabric_env: Mapping[str, str] = field(default_factory=dict)
    # The huge pages the fabric's userspace allocates from, which each node reserves at boot (EFA on EKS): what
    # a whole-node pod asks for in requests and limits alike ({"hugepages-2Mi": "42240Mi"}), since a container
    # that asks for none may use none of them.
    huge_pages: Mapping[str, str] = field(default_factory=dict)
    # The annotations a whole-node pod sets to attach to the fabric's NICs (GKE multi-networking's
    # networking.gke.io/interfaces), where the cloud attaches them per pod rather than as device resources.
    fabric_annotations: Mapping[str, str] = field(default_factory=dict)
    # The GPUDirect flavour of the fabric where a pod must run its plugin's way (GKE: tcpx, tcpxo or rdma), and
    # what such a pod adds to its spec: the plugin's daemon (initContainers), volumes, and the volumeMounts of
    # the container running NCCL.
    fabric: str = ""
    fabric_pod: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_gpus(self) -> int:
        """Physical GPUs at the pool's largest."""
        return self.gpus_per_node * self.max_nodes

    @property
    def schedulable_gpus(self) -> int:
        """The nvidia.com/gpu the pool can advertise at its largest, time-slicing shares included."""
        return self.max_gpus * self.sharing.shares_per_gpu * self.mig_partitions

    def describe(self) -> dict[str, object]:
        """Plain data for stack outputs: what a team needs to target this pool."""
        return {
            "name": self.name,
            "accelerator": self.accelerator,
            "gpusPerNode": self.gpus_per_node,
            "minNodes": self.min_nodes,
            "maxNodes": self.max_nodes,
            "maxGpus": self.max_gpus,
            "schedulableGpus": self.schedulable_gpus,
            "sharing": self.sharing.model_dump(by_alias=True),
            "spot": self.spot,
            "labels": dict(self.labels),
            "taints": [str(t) for t in self.taints],
            "multiNode": self.multi_node,
            "fabricDevices": dict(self.fabric_devices),
            # The huge pages such a pod asks for (requests equal to limits), beside some memory of its own.
            "hugePages": dict(self.huge_pages),
            # The ConfigMap of NCCL settings in every team namespace that a pod takes with envFrom.
            "ncclConfigMap": nccl_config_map(self.name) if self.fabric_env else None,
            # Its data, which a team stack's namespaces get from the platform stack's outputs.
            "ncclEnv": dict(self.fabric_env),
            # The annotations of a whole-node pod on the fabric (GKE: its GPU NICs' networks).
            "podAnnotations": dict(self.fabric_annotations),
            # The fabric's GPUDirect flavour and what a whole-node pod on it adds to its spec (GKE).
            "fabric": self.fabric or None,
            "fabricPod": dict(self.fabric_pod),
        }


def nccl_settings(pools: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Per pool with a fabric, its NCCL environment, from the pools as described (GpuPool.describe(), or a
    platform stack's gpuPools output, in which a platform deployed before these settings has none)."""
    return {str(pool["name"]): dict(pool["ncclEnv"]) for pool in pools if pool.get("ncclEnv")}


def nccl_config_map(pool: str) -> str:
    """The ConfigMap in every team namespace holding the NCCL environment for a pool's fabric."""
    return f"nccl-{pool}"


def gpu_node_affinity(pools: tuple[GpuPool, ...]) -> dict[str, object]:
    """Pod affinity that allows GPU pool nodes only: one term per pool, matching all of that pool's labels."""
    terms = [{"matchExpressions": [{"key": key, "operator": "In", "values": [value]}
                                   for key, value in sorted(pool.labels.items())]}
             for pool in pools]
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def gpu_tolerations(pools: tuple[GpuPool, ...]) -> list[dict[str, str]]:
    """Exactly the tolerations of the GPU pools' taints, for per-node GPU agents."""
    taints = sorted({taint for pool in pools for taint in pool.taints}, key=str)
    return [taint.toleration() for taint in taints]


def platform_gpu_pool(name: str, accelerator: str, *, gpus_per_node: int, min_nodes: int, max_nodes: int,
                      spot: bool, sharing: GpuSharing, mig_partitions: int = 1, multi_node: bool = False) -> GpuPool:
    """A GPU pool labelled and tainted the platform's way, as every cluster the platform creates makes them."""
    return GpuPool(name=name, accelerator=accelerator, gpus_per_node=gpus_per_node, min_nodes=min_nodes,
                   max_nodes=max_nodes, spot=spot, labels=gpu_pool_labels(name, accelerator), taints=(GPU_TAINT,),
                   sharing=sharing, mig_partitions=mig_partitions, multi_node=multi_node)


# Parts of the control plane and cluster DNS that serve metrics a Prometheus inside the cluster may scrape.
ControlPlanePart = Literal["scheduler", "controller-manager", "etcd", "kube-proxy", "coredns", "kube-dns"]


@dataclass(frozen=True)
class Capabilities:
    """What the cluster brings by itself, so that platform components install only what is missing."""

    # The nodes' image ships NVIDIA drivers (EKS accelerated AMI, GKE with managed driver installation).
    gpu_drivers: bool
    # The cloud runs its own NVIDIA device plugin (GKE), so installing ours would double-advertise GPUs.
    device_plugin: bool
    # Real GPUs exist; kind has none and imitates them (and their metrics).
    physical_gpus: bool
    # PersistentVolumeClaims get volumes that outlive their pods and nodes.
    persistent_volumes: bool
    # Where the node keeps NVIDIA's driver when it is not on the usual paths (GKE), for agents that mount it.
    driver_host_path: str | None = None
    # How the cloud's device plugin names the GPUs it allocates to pods, in the kubelet's pod-resources API:
    # NVIDIA's plugin by UUID, GKE's by device name (nvidia0, ...). Agents that map GPUs to pods must match it.
    gpu_device_ids: Literal["uuid", "device-name"] = "uuid"
    # Agents that read every GPU of a node (the DCGM exporter) get the devices only by running privileged: no
    # NVIDIA container runtime hands them in (GKE).
    gpu_agents_privileged: bool = False
    # What of the control plane and cluster DNS Prometheus can reach on this cluster; nothing else is scraped,
    # so that no alert fires forever for a target that cannot exist. By default what every cluster has.
    scrapeable: frozenset[ControlPlanePart] = frozenset({"coredns"})
    # How NVIDIA's device plugin tells the container runtime which GPUs a container gets. `envvar` (the plugin's
    # default) sets NVIDIA_VISIBLE_DEVICES, which any container may set itself, or inherit from a CUDA image's
    # `all`, to see every GPU of its node; `volume-mounts` mounts the list where only the plugin can, and needs
    # the nodes' container toolkit set to read it and to ignore the variable in unprivileged containers. Only a
    # cloud that configures its GPU nodes' toolkit so says `volume-mounts`.
    gpu_device_list_strategy: Literal["envvar", "volume-mounts"] = "envvar"
    # Pods really run. In a loopback test cluster (make e2e) kwok only marks them Running: a chart's Jobs do no
    # work and its webhooks have no server behind them, so releases leave out what needs them.
    pods_run: bool = True


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
    # The taints of the system pool's nodes, which every platform controller tolerates; none where the platform
    # does not manage the nodes and the cluster's owner says so (an existing cluster).
    system_taints: tuple[Taint, ...] = (SYSTEM_TAINT,)
    # The most nodes the system pool can have (its fixed size, or its autoscaler's ceiling); None where the
    # platform does not manage it (an existing cluster). Decides whether replicated controllers can be spread.
    system_max_nodes: int | None = None
    # The control plane's minor version (what charts are rendered for); clusters the platform does not version
    # run the pinned one.
    kubernetes_version: str = KUBERNETES_VERSION
    # A folder of charts (<name>-<version>/ as `helm pull --untar` gives them) to install from instead of their
    # repositories, for a cluster that reaches none (make e2e's loopback cluster).
    local_charts: str | None = None
    # What the cluster is, whatever its endpoint or CA: the Kubernetes provider's cluster_identifier (see
    # core/provider.py), exported for team stacks' providers.
    identity: pulumi.Input[str] = ""
    # The node labels of the cloud's network hierarchy, outermost first, ending with the hostname: the levels
    # of the Kueue Topology that multi-node pools are placed by. Empty where nodes carry none.
    topology_levels: tuple[str, ...] = ()

    @property
    def system_tolerations(self) -> list[dict[str, str]]:
        """Exactly the tolerations of the system pool's taints, for the platform's controllers."""
        return [taint.toleration() for taint in self.system_taints]

    def system_placement(self) -> dict[str, Any]:
        """A chart's (or pod's) nodeSelector and tolerations for a controller of the platform."""
        return {"nodeSelector": dict(self.system_node_selector), "tolerations": self.system_tolerations}

    @property
    def gpu_capacity(self) -> int:
        """The nvidia.com/gpu all GPU pools can advertise at their largest: what team quotas are held against."""
        return sum(pool.schedulable_gpus for pool in self.gpu_pools)
