"""Fair sharing of GPUs between teams with Kueue: a ClusterQueue per team in a cohort that lends idle GPUs.

A ResourceQuota caps what a team holds; Kueue queues its jobs and, while other teams leave GPUs idle, lets
it borrow them up to that cap, preempting the borrower when the owner needs them back.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.gpu import ML_PRIORITY_CLASSES
from components.handle import POOL_LABEL, ClusterHandle, GpuPool, gpu_tolerations
from components.kube import SYSTEM_CLUSTER_CRITICAL, KubernetesObject, helm_release, platform_namespace
from components.team import TEAM_LABEL
from versions import KUEUE, KUEUE_IMAGE, KUEUE_IMAGE_TAG
from config.models import KUEUE_NAMESPACE, Team

KUEUE_API = "kueue.x-k8s.io/v1beta2"
CPU_FLAVOR = "default"
# Borrowers may preempt only best-effort work of other teams; owners always reclaim what they lent.
BEST_EFFORT_PRIORITY = min(p.value for p in ML_PRIORITY_CLASSES)


def kueue_values(cluster: ClusterHandle) -> dict[str, Any]:
    return {
        "controllerManager": {
            "manager": {"image": {"repository": KUEUE_IMAGE, "tag": KUEUE_IMAGE_TAG, "pullPolicy": "IfNotPresent"},
                        "priorityClassName": "system-cluster-critical"},
            "nodeSelector": dict(cluster.system_node_selector),
        },
        # Its metrics, scraped by the platform's Prometheus through the chart's ServiceMonitor.
        "enablePrometheus": True,
    }


def gpu_flavor(pool: GpuPool) -> dict[str, Any]:
    """Admitted workloads get the pool's node label and tolerate its taint, so they land on that pool."""
    return {"nodeLabels": {POOL_LABEL: pool.name}, "tolerations": gpu_tolerations((pool,))}


def cluster_queue(team: Team, capacities: dict[str, int], *, team_label: str) -> dict[str, Any]:
    nominal = team.nominal_gpus(capacities)
    borrowing = team.quota.gpus - sum(nominal.values())
    groups: list[dict[str, Any]] = [{
        "coveredResources": ["cpu", "memory"],
        "flavors": [{"name": CPU_FLAVOR, "resources": [
            {"name": "cpu", "nominalQuota": team.quota.requests.cpu},
            {"name": "memory", "nominalQuota": team.quota.requests.memory}]}],
    }]
    if nominal:
        def gpu_resource(pool: str) -> dict[str, Any]:
            resource: dict[str, Any] = {"name": "nvidia.com/gpu", "nominalQuota": nominal[pool],
                                        "borrowingLimit": borrowing}
            if team.queue.lending_limit is not None:
                resource["lendingLimit"] = min(team.queue.lending_limit, nominal[pool])
            return resource
        groups.append({"coveredResources": ["nvidia.com/gpu"],
                       "flavors": [{"name": pool, "resources": [gpu_resource(pool)]} for pool in nominal]})
    return {
        "cohortName": team.queue.cohort,
        "namespaceSelector": {"matchLabels": {TEAM_LABEL: team_label}},
        "queueingStrategy": "BestEffortFIFO",
        "resourceGroups": groups,
        "preemption": {
            "reclaimWithinCohort": "Any",
            "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": BEST_EFFORT_PRIORITY},
            "withinClusterQueue": "LowerPriority",
        },
    }


class Queues(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, cluster: ClusterHandle, teams: list[Team], *, capacities: dict[str, int],
                 after: list[pulumi.Resource], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:queues:Queues", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        namespace = platform_namespace(f"{name}-namespace", KUEUE_NAMESPACE, component="queues",
                                       pod_security="restricted", opts=child,
                                       critical_priority_classes=[SYSTEM_CLUSTER_CRITICAL])
        # After the chart that brings the ServiceMonitor CRD its metrics need.
        self.release = helm_release(f"{name}-kueue", chart=KUEUE, namespace=namespace,
                                    values=kueue_values(cluster), release_name="kueue",
                                    opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=after)))
        after_crds = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.release]))

        def flavor(flavor_name: str, spec: dict[str, Any]) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(f"{name}-flavor-{flavor_name}", api_version=KUEUE_API,
                                                    kind="ResourceFlavor", metadata=ObjectMetaArgs(name=flavor_name),
                                                    spec=spec, opts=after_crds)

        flavors = [flavor(CPU_FLAVOR, {}), *(flavor(pool.name, gpu_flavor(pool)) for pool in cluster.gpu_pools)]
        for priority in ML_PRIORITY_CLASSES:
            KubernetesObject(f"{name}-priority-{priority.name}", api_version=KUEUE_API, kind="WorkloadPriorityClass",
                             name=priority.name, fields={"value": priority.value, "description": priority.description},
                             opts=after_crds)
        for team in teams:
            k8s.apiextensions.CustomResource(
                f"{name}-{team.name}", api_version=KUEUE_API, kind="ClusterQueue",
                metadata=ObjectMetaArgs(name=team.name),
                spec=cluster_queue(team, capacities, team_label=team.name),
                opts=pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(depends_on=flavors)))
        self.register_outputs({"clusterQueues": [team.name for team in teams]})
