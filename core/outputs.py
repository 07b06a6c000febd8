"""The stack outputs, typed: the one module that exports them and the only one that reads them.

A platform stack's outputs are what team stacks (by StackReference), `make verify`, the synth's summary and
checks, and `make review` know of a deployed platform; a team stack's say what it created. Renaming a key here
is a change of contract with every deployed team stack, so keys are spelt once, below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from core.vocabulary import DEFAULT_MONITORING_NAMESPACE, POOL_LABEL, SYSTEM_POOL
from versions import KUBERNETES_VERSION as PINNED_KUBERNETES

CLOUD = "cloud"
CLUSTER_NAME = "clusterName"
CLUSTER_IDENTITY = "clusterIdentity"
KUBECONFIG = "kubeconfig"
KUBERNETES_VERSION = "kubernetesVersion"
GPU_POOLS = "gpuPools"
GPU_CAPACITY = "gpuCapacity"
SYSTEM_NODE_SELECTOR = "systemNodeSelector"
# The system pool's taints ("key=value:Effect"), which the platform's controllers tolerate.
SYSTEM_TAINTS = "systemTaints"
GRAFANA = "grafana"
GRAFANA_ADMIN_PASSWORD = "grafanaAdminPassword"
MONITORING_NAMESPACE = "monitoringNamespace"
# Whether pods really run on the cluster (false on make e2e's loopback cluster): what `make verify` can judge.
PODS_RUN = "podsRun"
# The node labels multi-node pools are placed by (the Kueue Topology's levels), outermost first.
TOPOLOGY_LEVELS = "topologyLevels"
TEAMS = "teams"
# Per GPU pool, the GPUs no team is guaranteed: Kueue's root Cohort holds them, and every team borrows them.
UNGUARANTEED_GPUS = "unguaranteedGpus"
# A team stack's own.
TEAM = "team"
NAMESPACES = "namespaces"
BUDGET = "budget"


@dataclass(frozen=True)
class PoolOutput:
    """A GPU pool as a team (and `make verify`) targets it."""

    name: str
    accelerator: str
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    schedulable_gpus: int
    sharing: Mapping[str, Any]
    spot: bool
    labels: Mapping[str, str]
    taints: tuple[str, ...]
    # Placed for multi-node jobs, which Kueue admits by topology (`make verify` runs its NCCL check on these).
    multi_node: bool = False
    # The fabric a whole-node pod asks for (EFA on EKS) and the NCCL environment for it (the ConfigMap
    # nccl-<pool> of every team namespace): what `make verify`'s NCCL check runs with, as a team's job does.
    fabric_devices: Mapping[str, int] = field(default_factory=dict)
    nccl_env: Mapping[str, str] = field(default_factory=dict)
    # Where the cloud attaches the fabric per pod (GKE): the annotations, the GPUDirect flavour (tcpx, tcpxo,
    # rdma) and what a whole-node pod adds to its spec for it (initContainers, volumes, volumeMounts).
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    fabric: str = ""
    fabric_pod: Mapping[str, Any] = field(default_factory=dict)
    # The huge pages each node reserves for the fabric, which a whole-node pod asks for (requests equal limits).
    huge_pages: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def read(pool: Mapping[str, Any]) -> PoolOutput:
        return PoolOutput(pool["name"], str(pool.get("accelerator", "")), int(pool.get("gpusPerNode", 0)),
                          int(pool.get("minNodes", 0)), int(pool.get("maxNodes", 0)),
                          int(pool.get("schedulableGpus", 0)), pool.get("sharing") or {}, bool(pool.get("spot")),
                          pool.get("labels") or {}, tuple(str(t) for t in pool.get("taints") or ()),
                          bool(pool.get("multiNode")),
                          {str(k): int(v) for k, v in (pool.get("fabricDevices") or {}).items()},
                          {str(k): str(v) for k, v in (pool.get("ncclEnv") or {}).items()},
                          {str(k): str(v) for k, v in (pool.get("podAnnotations") or {}).items()},
                          str(pool.get("fabric") or ""), pool.get("fabricPod") or {},
                          {str(k): str(v) for k, v in (pool.get("hugePages") or {}).items()})


@dataclass(frozen=True)
class TeamBudget:
    """What the platform grants a team: its ceiling and guarantee of GPUs, CPU and memory."""

    namespace: str
    gpus: int
    guaranteed_gpus: int
    guarantee: Mapping[str, int]
    cpu: str
    memory: str
    own_stack: bool
    # The GKE GPUDirect pools the team may use, whose pods its baseline namespaces admit under the platform's
    # pod-security policy (components/pod_security.py); a platform from before that policy exports none.
    gpu_direct_pools: tuple[str, ...] = ()

    @staticmethod
    def read(team: Mapping[str, Any]) -> TeamBudget:
        return TeamBudget(str(team.get("namespace", "")), int(team.get("gpus", 0)),
                          int(team.get("guaranteedGpus", 0)), team.get("guarantee") or {}, str(team.get("cpu", "")),
                          str(team.get("memory", "")), bool(team.get("ownStack")),
                          tuple(team.get("gpuDirectPools") or ()))

    def export(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "gpus": self.gpus, "guaranteedGpus": self.guaranteed_gpus,
                "guarantee": dict(self.guarantee), "cpu": self.cpu, "memory": self.memory, "ownStack": self.own_stack,
                "gpuDirectPools": list(self.gpu_direct_pools)}


@dataclass(frozen=True)
class PlatformOutputs:
    """What a platform stack's outputs say, as plain values (the kubeconfig and passwords stay in `raw`)."""

    cloud: str
    cluster_name: Any
    gpu_pools: tuple[PoolOutput, ...]
    gpu_capacity: int
    system_node_selector: Mapping[str, str]
    monitoring_namespace: str
    teams: Mapping[str, TeamBudget]
    unguaranteed_gpus: Mapping[str, int] = field(default_factory=dict)
    kubernetes_version: str = PINNED_KUBERNETES
    # A stack deployed before it exported this ran on a real cluster.
    pods_run: bool = True
    topology_levels: tuple[str, ...] = ()
    # A stack deployed before it exported this had an untainted system pool.
    system_taints: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @staticmethod
    def read(outputs: Mapping[str, Any]) -> PlatformOutputs:
        return PlatformOutputs(
            cloud=str(outputs.get(CLOUD, "?")), cluster_name=outputs.get(CLUSTER_NAME, "?"),
            gpu_pools=tuple(PoolOutput.read(p) for p in outputs.get(GPU_POOLS) or ()),
            gpu_capacity=int(outputs.get(GPU_CAPACITY) or 0),
            system_node_selector=dict(outputs.get(SYSTEM_NODE_SELECTOR) or {POOL_LABEL: SYSTEM_POOL}),
            monitoring_namespace=str(outputs.get(MONITORING_NAMESPACE) or DEFAULT_MONITORING_NAMESPACE),
            teams={name: TeamBudget.read(team) for name, team in (outputs.get(TEAMS) or {}).items()},
            unguaranteed_gpus={pool: int(gpus) for pool, gpus in (outputs.get(UNGUARANTEED_GPUS) or {}).items()},
            kubernetes_version=str(outputs.get(KUBERNETES_VERSION) or PINNED_KUBERNETES),
            pods_run=outputs.get(PODS_RUN) is not False,
            topology_levels=tuple(str(level) for level in outputs.get(TOPOLOGY_LEVELS) or ()),
            system_taints=tuple(str(taint) for taint in outputs.get(SYSTEM_TAINTS) or ()), raw=outputs)

    @property
    def kubeconfig(self) -> str:
        return str(self.raw[KUBECONFIG])


@dataclass(frozen=True)
class TeamOutputs:
    team: str
    cluster_name: Any
    namespaces: tuple[str, ...]
    budget: TeamBudget | None

    @staticmethod
    def read(outputs: Mapping[str, Any]) -> TeamOutputs:
        budget = outputs.get(BUDGET)
        return TeamOutputs(str(outputs[TEAM]), outputs.get(CLUSTER_NAME, "?"), tuple(outputs.get(NAMESPACES) or ()),
                           TeamBudget.read(budget) if isinstance(budget, Mapping) else None)


def is_platform(outputs: Mapping[str, Any]) -> bool:
    return GPU_POOLS in outputs


def is_team(outputs: Mapping[str, Any]) -> bool:
    return TEAM in outputs


def export_platform(*, cloud: str, cluster_name: pulumi.Input[str], cluster_identity: pulumi.Input[str],
                    kubeconfig: pulumi.Input[str],
                    kubernetes_version: str,
                    gpu_pools: list[dict[str, Any]], gpu_capacity: int, system_node_selector: Mapping[str, str],
                    system_taints: Sequence[str],
                    grafana: pulumi.Input[Any], grafana_admin_password: pulumi.Input[str], monitoring_namespace: str,
                    teams: Mapping[str, TeamBudget], unguaranteed_gpus: Mapping[str, int],
                    pods_run: bool = True, topology_levels: tuple[str, ...] = ()) -> None:
    pulumi.export(CLOUD, cloud)
    pulumi.export(CLUSTER_NAME, cluster_name)
    pulumi.export(CLUSTER_IDENTITY, cluster_identity)
    pulumi.export(KUBECONFIG, kubeconfig)
    pulumi.export(KUBERNETES_VERSION, kubernetes_version)
    pulumi.export(GPU_POOLS, gpu_pools)
    pulumi.export(GPU_CAPACITY, gpu_capacity)
    # The labels of the system pool's nodes, where every platform controller runs.
    pulumi.export(SYSTEM_NODE_SELECTOR, dict(system_node_selector))
    pulumi.export(SYSTEM_TAINTS, list(system_taints))
    pulumi.export(GRAFANA, grafana)
    pulumi.export(GRAFANA_ADMIN_PASSWORD, grafana_admin_password)
    pulumi.export(MONITORING_NAMESPACE, monitoring_namespace)
    pulumi.export(PODS_RUN, pods_run)
    pulumi.export(TOPOLOGY_LEVELS, list(topology_levels))
    # Each team's budget; a team with its own stack fits its namespaces in it.
    pulumi.export(TEAMS, {name: budget.export() for name, budget in teams.items()})
    pulumi.export(UNGUARANTEED_GPUS, dict(unguaranteed_gpus))


def export_team(*, team: str, namespaces: pulumi.Input[list[str]], cluster_name: pulumi.Input[Any],
                budget: pulumi.Input[Any]) -> None:
    pulumi.export(TEAM, team)
    pulumi.export(NAMESPACES, namespaces)
    pulumi.export(CLUSTER_NAME, cluster_name)
    pulumi.export(BUDGET, budget)
