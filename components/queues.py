"""Fair sharing of GPUs between teams with Kueue: a ClusterQueue per team in a cohort that lends idle GPUs.

A team is guaranteed some GPUs (held against pool capacity) and capped at a ceiling (its ResourceQuota): Kueue
queues its jobs, lends its idle guarantee to the cohort, lets it borrow idle GPUs up to its ceiling, and
preempts borrowers when an owner wants its guarantee back.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components import sizing
from core.vocabulary import (KUEUE_API, KUEUE_NAMESPACE, KUEUE_TOPOLOGY, ML_PRIORITY_CLASSES, POOL_LABEL,
                             SYSTEM_CLUSTER_CRITICAL, TEAM_LABEL)
from core.handle import ClusterHandle, GpuPool, gpu_tolerations
from components.kube import KubernetesObject, helm_release, platform_namespace
from versions import KUEUE, KUEUE_IMAGE, KUEUE_IMAGE_TAG
from config.models import Team
from config.queues import QueueLayout, TeamShare

CPU_FLAVOR = "default"
# Borrowers may preempt only best-effort work of other teams; owners always reclaim what they lent.
BEST_EFFORT_PRIORITY = min(p.value for p in ML_PRIORITY_CLASSES)


# Kueue's frameworks (the chart's default list): their jobs are queued wherever Kueue manages jobs.
KUEUE_FRAMEWORKS = ("batch/job", "kubeflow.org/mpijob", "ray.io/rayjob", "ray.io/rayservice", "ray.io/raycluster",
                    "jobset.x-k8s.io/jobset", "workload.codeflare.dev/appwrapper", "trainer.kubeflow.org/trainjob",
                    "pod", "deployment", "statefulset", "leaderworkerset.x-k8s.io/leaderworkerset")
# Team namespaces, and only they: their jobs go through Kueue even without a queue name, and Kueue's
# fail-closed pod, deployment and statefulset webhooks cover nothing else (the chart gives every job webhook
# this selector, see its templates/webhook/manifests.yaml), so a Kueue outage never blocks the platform's own
# pods (GPU agents, monitoring, kube-system).
TEAM_NAMESPACES = {"matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}]}
# Node-level resources Kueue leaves out of quota (a prefix match): Kueue 0.19 otherwise never admits a workload
# asking for a resource no ClusterQueue covers, such as an EFA interface, scratch disk or huge pages. The
# scheduler and kubelet account for them per node; they are not what teams share.
UNQUEUED_RESOURCE_PREFIXES = ("vpc.amazonaws.com/", "ephemeral-storage", "hugepages-")
# How long an admitted workload has to get all its pods Ready before Kueue evicts it, releases its quota and
# requeues it (with backoff): a gang that cannot fully start (a pod refused by the ResourceQuota, a node that
# failed) must not hold GPUs. Kueue 0.19 always waits (30 minutes by default, apis/config/v1beta2/defaults.go);
# gangs are placed on nodes that exist (topology-aware scheduling counts Ready nodes only), so what remains is
# pulling a training image of tens of GB and starting it, which 15 minutes covers.
PODS_READY_TIMEOUT = "15m"


def kueue_manager_config() -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2). What it leaves out takes Kueue's defaults
    (apis/config/v1beta2/defaults.go at v0.19.2): ports, leader election, waitForPodsReady (30 minutes)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        # A job without kueue.x-k8s.io/queue-name in a team namespace is still Kueue's: it gets the namespace's
        # `default` LocalQueue (the team's queue), so leaving the label off bypasses nothing.
        "manageJobsWithoutQueueName": True,
        "managedJobsNamespaceSelector": TEAM_NAMESPACES,
        "integrations": {"frameworks": list(KUEUE_FRAMEWORKS)},
        "resources": {"excludeResourcePrefixes": list(UNQUEUED_RESOURCE_PREFIXES)},
        # blockAdmission stays off: one gang waiting for its pods must not stop every other team's admissions.
        "waitForPodsReady": {"timeout": PODS_READY_TIMEOUT, "blockAdmission": False,
                             "requeuingStrategy": {"timestamp": "Eviction"}},
    }


def kueue_values(cluster: ClusterHandle) -> dict[str, Any]:
    return {
        "controllerManager": {
            "manager": {"image": {"repository": KUEUE_IMAGE, "tag": KUEUE_IMAGE_TAG, "pullPolicy": "IfNotPresent"},
                        "priorityClassName": "system-cluster-critical",
                        "resources": sizing.KUEUE_MANAGER.resources()},
            "nodeSelector": dict(cluster.system_node_selector),
            # Its webhooks fail closed in team namespaces: one restart or drained node must not stop admissions.
            # Both replicas serve the webhooks; leader election picks the one that runs the controllers.
            "replicas": 2,
            "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
            "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kueue",
                                                  "control-plane": "controller-manager"}}}],
        },
        "managerConfig": {"controllerManagerConfigYaml": yaml.safe_dump(kueue_manager_config(), sort_keys=False)},
        # Its metrics, scraped by the platform's Prometheus through the chart's ServiceMonitor.
        "enablePrometheus": True,
    }


def gpu_flavor(pool: GpuPool, *, topology: bool) -> dict[str, Any]:
    """Admitted workloads get the pool's node label and tolerate its taint, so they land on that pool. A
    multi-node pool's flavor names the cluster's Topology: Kueue then admits a job there only with a topology
    assignment (pods placed node by node within one domain), and only jobs that ask for one."""
    flavor: dict[str, Any] = {"nodeLabels": {POOL_LABEL: pool.name}, "tolerations": gpu_tolerations((pool,))}
    return flavor | ({"topologyName": KUEUE_TOPOLOGY} if topology and pool.multi_node else {})


def topology(levels: tuple[str, ...]) -> dict[str, Any]:
    """Kueue's Topology (kueue.x-k8s.io/v1beta2): the node labels of the network hierarchy, outermost first."""
    return {"levels": [{"nodeLabel": label} for label in levels]}


def cluster_queue(share: TeamShare, layout: QueueLayout, team: Team, *, team_label: str) -> dict[str, Any]:
    """A team's ClusterQueue: CPU and memory at its quota; per pool it may use, its guarantee there (lent while
    idle up to its lending limit) and borrowing of idle GPUs up to its ceiling."""
    cpu_memory = [{"name": "cpu", "nominalQuota": team.quota.requests.cpu},
                  {"name": "memory", "nominalQuota": team.quota.requests.memory}]
    groups: list[dict[str, Any]] = [{
        "coveredResources": ["cpu", "memory"],
        "flavors": [{"name": CPU_FLAVOR, "resources": cpu_memory}],
    }]
    # Every flavor of a group lists every resource the group covers (a CEL rule of the CRD): a pool's own GPU
    # resource carries its numbers, the others' zero.
    resources = sorted({layout.pools[pool].resource for pool in share.pools})

    def gpu_resource(pool: str, resource: str) -> dict[str, Any]:
        # Quantities as strings, the form the API server stores and returns them in: an int here would differ
        # from what the provider reads back, and every preview after `up` would propose an update.
        if resource != layout.pools[pool].resource:
            return {"name": resource, "nominalQuota": "0", "borrowingLimit": "0", "lendingLimit": "0"}
        return {"name": resource, "nominalQuota": str(share.guarantee.get(pool, 0)),
                "borrowingLimit": str(share.borrowing), "lendingLimit": str(share.lending.get(pool, 0))}

    if any(layout.pools[pool].multi_node for pool in share.pools):
        # Kueue 0.19 takes every resource of a topology-placed job from flavors that name a Topology
        # (pkg/scheduler/flavorassigner/tas_flavorassigner.go, checkPodSetAndFlavorMatchForTAS), and a resource
        # is in one group only: so CPU and memory join the GPUs' group, with the team's quota in every flavor (its
        # ResourceQuota stays the cap over all of them). `default` comes first and holds no GPUs: CPU-only work
        # is admitted there, GPU work moves on to the pools.
        no_gpus = [{"name": r, "nominalQuota": "0", "borrowingLimit": "0", "lendingLimit": "0"} for r in resources]
        groups = [{"coveredResources": ["cpu", "memory", *resources], "flavors": [
            {"name": CPU_FLAVOR, "resources": cpu_memory + no_gpus},
            *({"name": pool, "resources": cpu_memory + [gpu_resource(pool, r) for r in resources]}
              for pool in share.pools)]}]
    elif share.pools:
        groups.append({"coveredResources": resources, "flavors": [
            {"name": pool, "resources": [gpu_resource(pool, r) for r in resources]} for pool in share.pools]})
    return {
        "cohortName": share.cohort,
        "namespaceSelector": {"matchLabels": {TEAM_LABEL: team_label}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": groups,
        # Flavors are listed the team's guaranteed pools first; a job tries every pool where its guarantee
        # has room before it borrows or preempts in one.
        "flavorFungibility": {"whenCanBorrow": "TryNextFlavor", "whenCanPreempt": "TryNextFlavor"},
        "preemption": {
            # An owner gets lent GPUs back at once: borrowers in its cohort are preempted, whatever their priority.
            "reclaimWithinCohort": "Any",
            "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": BEST_EFFORT_PRIORITY},
            "withinClusterQueue": "LowerPriority",
        },
    }


class Queues(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, cluster: ClusterHandle, teams: list[Team], *, layout: QueueLayout,
                 after: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:queues:Queues", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        namespace = platform_namespace(f"{name}-namespace", KUEUE_NAMESPACE, component="queues",
                                       pod_security="restricted", opts=child,
                                       critical_priority_classes=[SYSTEM_CLUSTER_CRITICAL])
        # After the chart that brings the ServiceMonitor CRD its metrics need.
        self.release = helm_release(f"{name}-kueue", chart=KUEUE, namespace=namespace,
                                    values=kueue_values(cluster), release_name="kueue",
                                    local_charts=cluster.local_charts,
                                    opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=after)))
        after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.release]))

        tas: list[pulumi.Resource] = []
        if cluster.topology_levels and any(pool.multi_node for pool in cluster.gpu_pools):
            # Its levels are immutable (a CEL rule of the CRD): a change replaces it.
            tas.append(k8s.apiextensions.CustomResource(
                f"{name}-topology", api_version=KUEUE_API, kind="Topology",
                metadata=ObjectMetaArgs(name=KUEUE_TOPOLOGY), spec=topology(cluster.topology_levels),
                opts=pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(
                    replace_on_changes=["spec"], delete_before_replace=True))))
        after_topology = pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(depends_on=tas))

        def flavor(flavor_name: str, spec: dict[str, Any]) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(f"{name}-flavor-{flavor_name}", api_version=KUEUE_API,
                                                    kind="ResourceFlavor", metadata=ObjectMetaArgs(name=flavor_name),
                                                    spec=spec, opts=after_topology)

        flavors = [flavor(CPU_FLAVOR, {}),
                   *(flavor(pool.name, gpu_flavor(pool, topology=bool(tas))) for pool in cluster.gpu_pools)]
        for priority in ML_PRIORITY_CLASSES:
            KubernetesObject(f"{name}-priority-{priority.name}", api_version=KUEUE_API, kind="WorkloadPriorityClass",
                             name=priority.name, fields={"value": priority.value, "description": priority.description},
                             opts=after_crds)
        # Team namespaces depend on these (stacks/platform.py): destroy deletes them, and with them their
        # Workloads, while Kueue still runs to release its finalizers; a ClusterQueue with admitted Workloads
        # keeps its own finalizer, so deleted first it would never go (issue 23).
        self.cluster_queues: list[k8s.apiextensions.CustomResource] = []
        for team in teams:
            self.cluster_queues.append(k8s.apiextensions.CustomResource(
                f"{name}-{team.name}", api_version=KUEUE_API, kind="ClusterQueue",
                metadata=ObjectMetaArgs(name=team.name),
                spec=cluster_queue(layout.teams[team.name], layout, team, team_label=team.name),
                opts=pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(depends_on=flavors))))
        self.register_outputs({"clusterQueues": [team.name for team in teams]})
