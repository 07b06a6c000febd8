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
from core.vocabulary import (GPU_RESOURCE, GPU_UNITS_RESOURCE, KUEUE_API, KUEUE_NAMESPACE, KUEUE_TOPOLOGY,
                             ML_PRIORITY_CLASSES, POOL_LABEL, ROOT_COHORT, SHARED_GPU_RESOURCE, SHARED_GPU_TAINT,
                             SYSTEM_CLUSTER_CRITICAL, TEAM_LABEL)
from core.handle import ClusterHandle, GpuPool, gpu_tolerations
from components.kube import KubernetesObject, helm_release, platform_namespace
from versions import KUEUE, KUEUE_IMAGE, KUEUE_IMAGE_TAG
from config.models import Team
from config.queues import QueueLayout, TeamShare, gpu_resource, one_share_per_container

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
# How long an admitted workload has to get all its pods Ready (see waitForPodsReady below).
WAIT_FOR_PODS_READY = "1h"


def kueue_manager_config() -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2). What it leaves out takes Kueue's defaults
    (apis/config/v1beta2/defaults.go at v0.19.2): ports, leader election, waitForPodsReady's requeuing."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        # A job without kueue.x-k8s.io/queue-name in a team namespace is still Kueue's: it gets the namespace's
        # `default` LocalQueue (the team's queue), so leaving the label off bypasses nothing.
        "manageJobsWithoutQueueName": True,
        "managedJobsNamespaceSelector": TEAM_NAMESPACES,
        "integrations": {"frameworks": list(KUEUE_FRAMEWORKS)},
        # Kueue evicts an admitted workload whose pods are not all Ready in time, and a running one whose pods
        # stay unready as long (recoveryTimeout defaults to it), releasing its quota: a gang that cannot fully
        # start (a pod refused by the ResourceQuota, a node that failed) must not hold GPUs. Each pod of a serving
        # Deployment is a workload of its own, Ready once its readiness probe passes (pkg/controller/jobs/pod
        # PodsReady): on a cold GPU node (the node's start, a multi-gigabyte image, the model's weights) that can
        # take longer than the default 30 minutes, and each eviction starts it over. blockAdmission stays off:
        # one gang waiting for its pods must not stop every other team's admissions.
        "waitForPodsReady": {"timeout": WAIT_FOR_PODS_READY, "blockAdmission": False,
                             "requeuingStrategy": {"timestamp": "Eviction"}},
        "resources": {
            "excludeResourcePrefixes": list(UNQUEUED_RESOURCE_PREFIXES),
            # Every GPU also counts as a GPU unit (pkg/workload applyResourceTransformations; Retain keeps the
            # GPU itself, which the pools' flavors hold): one ceiling per team over all its pools.
            "transformations": [{"input": resource, "strategy": "Retain", "outputs": {GPU_UNITS_RESOURCE: "1"}}
                                for resource in (GPU_RESOURCE, SHARED_GPU_RESOURCE)],
        },
    }


def kueue_spread(system_max_nodes: int | None) -> dict[str, Any]:
    """Kueue's two replicas on two system nodes wherever the system pool can have two, so that draining one
    node leaves a webhook serving. ScheduleAnyway only scores the spread, and the scheduler may stack both
    replicas on one node; DoNotSchedule with one eligible node counts one domain and is met by stacking too,
    hence minDomains 2: below two system nodes the second replica waits, and the pool's autoscaler (Karpenter
    on EKS, GKE's) adds the node (Kubernetes' PodTopologySpread, minDomains). A pool that can never have two
    nodes (kind's one, or an existing cluster's unknown one) keeps both replicas on the node it has."""
    spread: dict[str, Any] = {
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kueue", "control-plane": "controller-manager"}}}
    if system_max_nodes is not None and system_max_nodes >= 2:
        spread |= {"whenUnsatisfiable": "DoNotSchedule", "minDomains": 2}
    return spread


def kueue_values(cluster: ClusterHandle) -> dict[str, Any]:
    return {
        "controllerManager": {
            "manager": {"image": {"repository": KUEUE_IMAGE, "tag": KUEUE_IMAGE_TAG, "pullPolicy": "IfNotPresent"},
                        "priorityClassName": "system-cluster-critical",
                        "resources": sizing.KUEUE_MANAGER.resources()},
            **cluster.system_placement(),
            # Its webhooks fail closed in team namespaces: one restart or drained node must not stop admissions.
            # Both replicas serve the webhooks; leader election picks the one that runs the controllers.
            "replicas": 2,
            "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
            "topologySpreadConstraints": [kueue_spread(cluster.system_max_nodes)],
        },
        "managerConfig": {"controllerManagerConfigYaml": yaml.safe_dump(kueue_manager_config(), sort_keys=False)},
        # Its metrics, scraped by the platform's Prometheus through the chart's ServiceMonitor.
        "enablePrometheus": True,
    }


def gpu_flavor(pool: GpuPool, *, topology: bool) -> dict[str, Any]:
    """Admitted workloads get the pool's node label and tolerate its taint, so they land on that pool. A
    time-sliced pool whose shares are plain nvidia.com/gpu takes only pods that tolerate SHARED_GPU_TAINT: Kueue
    checks a flavor's nodeTaints against the pod's own tolerations (flavorassigner.checkFlavorForPodSets), so
    a job of several GPUs, which the device plugin refuses there, is never given it (renamed shares need no
    taint: only pods asking for nvidia.com/gpu.shared can be given that pool). A multi-node pool's flavor names
    the cluster's Topology: Kueue then admits a job there only with a topology assignment (pods placed node by
    node within one domain), and only jobs that ask for one."""
    spec: dict[str, Any] = {"nodeLabels": {POOL_LABEL: pool.name}, "tolerations": gpu_tolerations((pool,))}
    if one_share_per_container(pool.sharing) and gpu_resource(pool.sharing) == GPU_RESOURCE:
        taint = SHARED_GPU_TAINT
        spec["nodeTaints"] = [{"key": taint.key, "value": taint.value, "effect": taint.effect}]
    if topology and pool.multi_node:
        spec["topologyName"] = KUEUE_TOPOLOGY
    return spec


def topology(levels: tuple[str, ...]) -> dict[str, Any]:
    """Kueue's Topology (kueue.x-k8s.io/v1beta2): the node labels of the network hierarchy, outermost first."""
    return {"levels": [{"nodeLabel": label} for label in levels]}


def _quota(name: str, nominal: int | str, *, borrowing: int | None = None,
           lending: int | None = None) -> dict[str, Any]:
    """One resource's numbers in a flavor. Quantities as strings, the form the API server stores and returns them
    in: an int here would differ from what the provider reads back, and every preview after `up` would propose an
    update."""
    quota = {"name": name, "nominalQuota": str(nominal)}
    if borrowing is not None:
        quota["borrowingLimit"] = str(borrowing)
    if lending is not None:
        quota["lendingLimit"] = str(lending)
    return quota


def _gpu_group(layout: QueueLayout, pools: list[str], numbers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The resource group of GPU pools: every flavor lists every resource the group covers (a CEL rule of the
    CRDs), a pool's own GPU resource with `numbers[pool]`, the others' zero."""
    resources = sorted({layout.pools[pool].resource for pool in pools})
    return {"coveredResources": resources, "flavors": [
        {"name": pool, "resources": [_quota(r, **numbers[pool]) if r == layout.pools[pool].resource
                                     else _quota(r, 0, **{k: 0 for k in numbers[pool] if k != "nominal"})
                                     for r in resources]} for pool in pools]}


def root_cohort(layout: QueueLayout) -> dict[str, Any]:
    """The Cohort above every team cohort: per pool, the GPUs no team is guaranteed, and their GPU units. Kueue
    lends a Cohort's own nominal quota to every ClusterQueue below it (apis/kueue/v1beta2/cohort_types.go)."""
    rest = layout.unguaranteed
    if not rest:
        return {}
    pools = [pool for pool in layout.pools if pool in rest]
    units = _quota(GPU_UNITS_RESOURCE, sum(rest.values()))
    gpus = _gpu_group(layout, pools, {pool: {"nominal": rest[pool]} for pool in pools})
    if not any(layout.pools[pool].multi_node for pool in pools):
        return {"resourceGroups": [{"coveredResources": [GPU_UNITS_RESOURCE],
                                    "flavors": [{"name": CPU_FLAVOR, "resources": [units]}]}, gpus]}
    # A queue reaching a multi-node pool counts that pool's GPU units in the pool's own flavor (cluster_queue), so
    # the root lends them there too, beside the GPUs; a resource is in one group only, hence one group.
    return {"resourceGroups": [{
        "coveredResources": [GPU_UNITS_RESOURCE, *gpus["coveredResources"]],
        "flavors": [{"name": CPU_FLAVOR, "resources": [units, *(_quota(r, 0) for r in gpus["coveredResources"])]},
                    *({"name": flavor["name"], "resources": [
                        _quota(GPU_UNITS_RESOURCE, rest[flavor["name"]] if layout.pools[flavor["name"]].multi_node
                               else 0), *flavor["resources"]]} for flavor in gpus["flavors"])]}]}


def team_cohort(cohort: str, layout: QueueLayout) -> dict[str, Any]:
    """A cohort of teams under the root: its teams borrow the root's GPUs, but lend nothing up to it, so that no
    team borrows the idle guarantee of a team in another cohort (a Cohort's lendingLimit)."""
    pools = sorted({pool for share in layout.teams.values() if share.cohort == cohort for pool in share.pools},
                   key=list(layout.pools).index)
    spec: dict[str, Any] = {"parentName": ROOT_COHORT}
    if pools:
        spec["resourceGroups"] = [
            {"coveredResources": [GPU_UNITS_RESOURCE],
             "flavors": [{"name": CPU_FLAVOR, "resources": [_quota(GPU_UNITS_RESOURCE, 0, lending=0)]}]},
            _gpu_group(layout, pools, {pool: {"nominal": 0, "lending": 0} for pool in pools})]
    return spec


def cluster_queue(share: TeamShare, layout: QueueLayout, team: Team, *, team_label: str) -> dict[str, Any]:
    """A team's ClusterQueue: CPU and memory at its quota, never borrowed (the namespace's ResourceQuota would
    refuse the pods of a job admitted on borrowed CPU, and Kueue would hold its GPUs until waitForPodsReady
    evicts it, and admit it again); per pool it may use, its guarantee there (lent while idle up to its lending
    limit) and borrowing of idle GPUs; and the GPU units of them all, so that it borrows up to its ceiling over
    every pool together."""
    cpu_memory = [_quota("cpu", team.quota.requests.cpu, borrowing=0),
                  _quota("memory", team.quota.requests.memory, borrowing=0)]
    numbers = {pool: {"nominal": share.guarantee.get(pool, 0), "borrowing": share.borrowing,
                      "lending": share.lending.get(pool, 0)} for pool in share.pools}
    if any(layout.pools[pool].multi_node for pool in share.pools):
        # Kueue 0.19 takes every resource of a topology-placed job from flavors that name a Topology
        # (pkg/scheduler/flavorassigner/tas_flavorassigner.go, checkPodSetAndFlavorMatchForTAS), and a resource
        # is in one group only: so CPU, memory and the GPU units join the GPUs' group, with the team's CPU and
        # memory quota in every flavor (its ResourceQuota stays the cap over all of them) and each pool's GPU units
        # beside its GPUs. `default` comes first and holds no GPUs: CPU-only work is admitted there, GPU work
        # moves on to the pools. The price: such a team's GPU ceiling holds per pool, not over its pools together.
        gpus = _gpu_group(layout, list(share.pools), numbers)
        nothing = {"borrowing": 0, "lending": 0}
        return _cluster_queue_spec(share, team_label, [{
            "coveredResources": ["cpu", "memory", GPU_UNITS_RESOURCE, *gpus["coveredResources"]],
            "flavors": [
                {"name": CPU_FLAVOR, "resources": cpu_memory + [_quota(r, 0, **nothing) for r in
                                                                [GPU_UNITS_RESOURCE, *gpus["coveredResources"]]]},
                *({"name": flavor["name"],
                   "resources": [*cpu_memory, _quota(GPU_UNITS_RESOURCE, **numbers[flavor["name"]]),
                                 *flavor["resources"]]}
                  for flavor in gpus["flavors"])]}])
    defaults = list(cpu_memory)
    covered = ["cpu", "memory"]
    if share.pools:
        covered.append(GPU_UNITS_RESOURCE)
        defaults.append(_quota(GPU_UNITS_RESOURCE, share.guaranteed, borrowing=share.borrowing,
                               lending=sum(share.lending.values())))
    groups: list[dict[str, Any]] = [{"coveredResources": covered,
                                     "flavors": [{"name": CPU_FLAVOR, "resources": defaults}]}]
    if share.pools:
        groups.append(_gpu_group(layout, list(share.pools), numbers))
    return _cluster_queue_spec(share, team_label, groups)


def _cluster_queue_spec(share: TeamShare, team_label: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cohortName": share.cohort,
        "namespaceSelector": {"matchLabels": {TEAM_LABEL: team_label}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": groups,
        # Flavors are listed whole-GPU pools first, then the team's guaranteed pools first (config/queues.py); a
        # job tries every pool where its guarantee has room before it borrows or preempts in one.
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
        # The Cohorts before the ClusterQueues that name them, and deleted after them.
        def cohort(cohort_name: str, spec: dict[str, Any], opts: pulumi.ResourceOptions
                   ) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(f"{name}-cohort-{cohort_name}", api_version=KUEUE_API,
                                                    kind="Cohort", metadata=ObjectMetaArgs(name=cohort_name),
                                                    spec=spec, opts=opts)

        root = cohort(ROOT_COHORT, root_cohort(layout), after_crds)
        after_root = pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(depends_on=[root]))
        cohorts = [cohort(c, team_cohort(c, layout), after_root)
                   for c in sorted({share.cohort for share in layout.teams.values()})]
        # Team namespaces depend on these (stacks/platform.py): destroy deletes them, and with them their
        # Workloads, while Kueue still runs to release its finalizers; a ClusterQueue with admitted Workloads
        # keeps its own finalizer, so deleted first it would never go (issue 23).
        self.cluster_queues: list[k8s.apiextensions.CustomResource] = []
        for team in teams:
            self.cluster_queues.append(k8s.apiextensions.CustomResource(
                f"{name}-{team.name}", api_version=KUEUE_API, kind="ClusterQueue",
                metadata=ObjectMetaArgs(name=team.name),
                spec=cluster_queue(layout.teams[team.name], layout, team, team_label=team.name),
                opts=pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(depends_on=[*flavors, *cohorts]))))
        self.register_outputs({"clusterQueues": [team.name for team in teams]})
