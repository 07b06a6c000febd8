"""A team's namespace: quota, container defaults, access and network isolation, as one unit."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core.v1 import LimitRangeItemArgs, LimitRangeSpecArgs, ResourceQuotaSpecArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import NetworkPolicyIngressRuleArgs, NetworkPolicyPeerArgs, NetworkPolicySpecArgs
from pulumi_kubernetes.rbac.v1 import RoleRefArgs, SubjectArgs

from components.kube import pod_security_labels
from config.models import Team
from core.handle import nccl_config_map
from core.vocabulary import DEFAULT_LOCAL_QUEUE, GPU_RESOURCE, PROMETHEUS_POD_LABELS, SHARED_GPU_RESOURCE, TEAM_LABEL

GPU_QUOTA_KEY = f"requests.{GPU_RESOURCE}"


def quota_hard(team: Team, gpus: Mapping[str, int] | None = None) -> dict[str, str]:
    """The ResourceQuota's `hard` limits for a team; `gpus`, per GPU resource, where the platform knows what the
    team's queue can give of each (config/queues.py resource_ceilings), else the ceiling for each."""
    quota = team.quota
    gpus = gpus or {GPU_RESOURCE: quota.gpus, SHARED_GPU_RESOURCE: quota.gpus}
    return {
        "requests.cpu": quota.requests.cpu,
        "requests.memory": quota.requests.memory,
        "limits.cpu": quota.effective_limits.cpu,
        "limits.memory": quota.effective_limits.memory,
        # Extended resources are quota'd on requests only: Kubernetes requires their limits to equal requests.
        # Whole GPUs and renamed time-sliced shares each; Kueue's GPU units hold the one ceiling over both.
        GPU_QUOTA_KEY: str(gpus[GPU_RESOURCE]),
        f"requests.{SHARED_GPU_RESOURCE}": str(gpus[SHARED_GPU_RESOURCE]),
        "pods": str(quota.pods),
        "persistentvolumeclaims": str(quota.persistent_volume_claims),
        "requests.storage": quota.storage,
    }


class TeamNamespace(pulumi.ComponentResource):
    def __init__(self, name: str, team: Team, provider: k8s.Provider, *, monitoring_namespace: str,
                 owner: str | None = None, queue_after: list[pulumi.Resource] | None = None,
                 gpu_quota: Mapping[str, int] | None = None, nccl: Mapping[str, Mapping[str, str]] | None = None,
                 gpu_fabric: bool = False, guarded_by: list[pulumi.Resource] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`owner` is the team the namespace belongs to (a team stack's namespaces share their team's queue);
        `queue_after` is what installs Kueue, when this stack installs it; `gpu_quota` is per GPU resource what
        the team's queue can give (the quota.gpus ceiling for each when not given); `nccl` is per pool with a fabric
        between nodes its NCCL environment (core.handle.nccl_settings), which the namespace gets as ConfigMaps.
        `gpu_fabric`: the namespace's pods may use a GKE GPUDirect pool, so its Pod Security enforces
        `privileged` and the platform's policy enforces baseline in its stead (components/pod_security.py), with the
        pool's share; `guarded_by` is that policy where this stack declares it, created before the namespace stops
        enforcing baseline and deleted after it (a team stack's namespaces take the platform stack's, already
        there)."""
        super().__init__("mlplatform:team:TeamNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        owner = owner or team.name
        labels = {TEAM_LABEL: owner}

        # After Kueue and its ClusterQueues, so that destroy deletes the namespace first: its Workloads go while
        # Kueue runs to release their finalizers, and then the ClusterQueues, which admitted Workloads hold.
        # A GPUDirect pod mounts host folders, which Pod Security baseline refuses with no exemption a team can
        # have: such a namespace enforces `privileged`, and the platform's policy baseline with GPUDirect's share.
        enforce = "privileged" if gpu_fabric else team.pod_security
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=ObjectMetaArgs(name=team.name, labels=labels | pod_security_labels(enforce)),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[*(queue_after or []), *(guarded_by or [])])),
        )
        # Every other object lives in the namespace and must wait for it.
        in_namespace = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[namespace]))

        def metadata(object_name: str) -> ObjectMetaArgs:
            return ObjectMetaArgs(name=object_name, namespace=team.name, labels=labels)

        k8s.core.v1.ResourceQuota(
            f"{name}-quota",
            metadata=metadata("team-quota"),
            spec=ResourceQuotaSpecArgs(hard=quota_hard(team, gpu_quota)),
            opts=in_namespace,
        )
        defaults = team.container_defaults
        k8s.core.v1.LimitRange(
            f"{name}-container-defaults",
            metadata=metadata("container-defaults"),
            spec=LimitRangeSpecArgs(limits=[LimitRangeItemArgs(
                type="Container",
                default_request={"cpu": defaults.requests.cpu, "memory": defaults.requests.memory},
                default={"cpu": defaults.limits.cpu, "memory": defaults.limits.memory},
            )]),
            opts=in_namespace,
        )
        for role, groups in (("edit", team.groups.edit), ("view", team.groups.view)):
            if not groups:
                continue
            k8s.rbac.v1.RoleBinding(
                f"{name}-{role}",
                metadata=metadata(f"team-{role}"),
                role_ref=RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
                subjects=[SubjectArgs(api_group="rbac.authorization.k8s.io", kind="Group", name=group)
                          for group in groups],
                opts=in_namespace,
            )

        # Per pool with a fabric between nodes (EFA, GKE's GPUDirect), the environment NCCL needs there, ready for a
        # pod's envFrom: each team would otherwise copy it from the cloud's docs into every job, and get it wrong
        # per machine type.
        for pool, env in sorted((nccl or {}).items()):
            k8s.core.v1.ConfigMap(f"{name}-{nccl_config_map(pool)}", metadata=metadata(nccl_config_map(pool)),
                                  data=dict(env), opts=in_namespace)

        all_pods = LabelSelectorArgs()

        def namespace_peer(namespace: str) -> NetworkPolicyPeerArgs:
            return NetworkPolicyPeerArgs(namespace_selector=LabelSelectorArgs(
                match_labels={"kubernetes.io/metadata.name": namespace}))

        def ingress_from(peer: NetworkPolicyPeerArgs) -> list[NetworkPolicyIngressRuleArgs]:
            return [NetworkPolicyIngressRuleArgs(from_=[peer])]

        # Deny by default; then the team's own pods may talk to each other, and Prometheus may scrape them.
        policies = {
            "default-deny-ingress": [],
            "allow-same-namespace": ingress_from(NetworkPolicyPeerArgs(pod_selector=all_pods)),
            # Prometheus, not every pod of its namespace (Grafana, Alertmanager, the exporters).
            "allow-from-monitoring": ingress_from(NetworkPolicyPeerArgs(
                namespace_selector=namespace_peer(monitoring_namespace).namespace_selector,
                pod_selector=LabelSelectorArgs(match_labels=PROMETHEUS_POD_LABELS))),
        }
        if team.ingress_controller_namespace:
            # A serving namespace takes traffic through the cluster's ingress controller, and from nowhere else.
            policies["allow-from-ingress-controller"] = ingress_from(namespace_peer(team.ingress_controller_namespace))
        for policy_name, ingress in policies.items():
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{policy_name}",
                metadata=metadata(policy_name),
                spec=NetworkPolicySpecArgs(pod_selector=all_pods, policy_types=["Ingress"], ingress=ingress),
                opts=in_namespace,
            )

        # The team's queue in its namespace, named after the team: jobs ask for it by the label
        # kueue.x-k8s.io/queue-name: <team>. Jobs without the label get the `default` one, the same queue.
        after_kueue = pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=queue_after or []))
        for resource_name, queue_name in ((f"{name}-queue", owner), (f"{name}-default-queue", DEFAULT_LOCAL_QUEUE)):
            k8s.apiextensions.CustomResource(
                resource_name, api_version="kueue.x-k8s.io/v1beta2", kind="LocalQueue", metadata=metadata(queue_name),
                spec={"clusterQueue": owner}, opts=after_kueue)

        self.namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.namespace})
