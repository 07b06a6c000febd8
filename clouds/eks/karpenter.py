"""Karpenter for an EKS cluster: GPU nodes from zero when a GPU pod is pending, gone again when idle.

Its controller (AWS's chart, pinned, CRDs from the karpenter-crd chart) with Pod Identity, a node role of its
own, the SQS queue and EventBridge rules that tell it of interruptions ahead of time, and per GPU pool an
EC2NodeClass and NodePool. Modelled on Karpenter v1.14's getting-started CloudFormation and guide.

Teardown order is part of the design: every NodePool and EC2NodeClass depends on everything Karpenter needs to
end the instances it made (its IAM policy, Pod Identity, the nodes' role and access entry, the security-group
rules, the queue, and its way to EC2's API: the subnets, their routes, NAT and endpoints), so `pulumi destroy`
deletes them first and their finalizers run while Karpenter still can.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components import sizing
from clouds.eks.network import DISCOVERY_TAG, AwsNetwork
from clouds.eks.karpenter_iam import controller_policy, queue_policy
from core.handle import GpuPool
from core.vocabulary import CPU_POOL, EFA_LABEL, GPU_TAINT, POOL_LABEL, SYSTEM_POOL, SYSTEM_TAINT, Taint
from components.kube import helm_release
from versions import (EFA_DEVICE_PLUGIN, EKS_AMI_ALIAS, EKS_ECR_ACCOUNTS, EKS_SYSTEM_AMI_RELEASES, KARPENTER,
                      KARPENTER_CRD)
from clouds.eks.config import EksClusterConfig, EksGpuPool

NAMESPACE = "kube-system"
# On the nodes of pools with `efa: true`, for the EFA device plugin and for pods that need EFA.
# The root volume of system nodes, the managed node group's and Karpenter's alike.
SYSTEM_DISK_GIB = 50
SERVICE_ACCOUNT = "karpenter"
# The node role's managed policies, as Karpenter's CloudFormation gives KarpenterNodeRole.
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonEKS_CNI_Policy",
                 "AmazonSSMManagedInstanceCore")

# The events Karpenter acts on before AWS takes a node away (the CloudFormation's five rules).
INTERRUPTION_EVENTS = {
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    # Short keys: the rules are autonamed `<cluster>-karpenter-<key>-<7 random>`, within EventBridge's 64.
    "reservation": {"source": ["aws.ec2"], "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"]},
}


def spot_role_missing(invoke: pulumi.InvokeOptions) -> bool:
    """Whether the account lacks EC2 Spot's service-linked role: creating it where it exists fails ("has been
    taken in this account"), and any spot request made in the console or by another tool creates it."""
    roles = aws.iam.get_roles(path_prefix="/aws-service-role/spot.amazonaws.com/",
                              name_regex="^AWSServiceRoleForEC2Spot$", opts=invoke)
    return not roles.names


def efa_plugin_repository(region: str) -> str:
    """The EFA device plugin's image repository in the stack's own region (the chart's default is us-west-2's):
    EKS's ECR registry there, China's regions under .com.cn. Config refuses EFA pools where none is known."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{EKS_ECR_ACCOUNTS[region]}.dkr.ecr.{region}.{suffix}/eks/aws-efa-k8s-device-plugin"


def managed_policy(partition: str, name: str) -> str:
    """An AWS managed policy in the stack's partition (aws, aws-cn, aws-us-gov: aws.get_partition)."""
    return f"arn:{partition}:iam::aws:policy/{name}"


def pod_identity_trust(cluster_arn: str, namespace: str, service_account: str) -> str:
    """Pod Identity may hand the role to one service account of one cluster only, by the session tags it sets
    (EKS User Guide, "Create IAM role with trust policy required by EKS Pod Identity"): without the condition,
    any Pod Identity association in the account could be made to assume it."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"aws:RequestTag/eks-cluster-arn": cluster_arn,
                                       "aws:RequestTag/kubernetes-namespace": namespace,
                                       "aws:RequestTag/kubernetes-service-account": service_account}}}]})


def ec2_trust() -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def cluster_tags(spec: EksClusterConfig) -> dict[str, str]:
    """What everything of the cluster is tagged with, for cost reports."""
    return {"mlplatform.io/cluster": spec.name, "mlplatform.io/environment": spec.environment}


def cost_tags(spec: EksClusterConfig, pool: str) -> dict[str, str]:
    """What every instance, volume and network interface of a pool is tagged with, for cost reports (the
    provider's default tags reach only what Pulumi creates, not what Karpenter or an Auto Scaling group does)."""
    return cluster_tags(spec) | {POOL_LABEL: pool}


@dataclass(frozen=True)
class KarpenterPool:
    """One EC2NodeClass and NodePool pair: a GPU pool, or the system pool's overflow."""

    name: str
    instance_types: list[str]
    capacity_types: list[str]
    labels: dict[str, str]
    taints: list[dict[str, str]]
    # The pool's size cap, in what it is bought for.
    limits: dict[str, int]
    disruption: dict[str, str]
    disk_size_gib: int
    # NVMe instance store on every instance type: striped (RAID0) for images and pods' ephemeral storage.
    instance_store: bool = False
    capacity_reservation_ids: tuple[str, ...] = ()
    # The AMI release; the alias picks the NVIDIA variant for GPU instances and the standard one for others.
    ami_alias: str = EKS_AMI_ALIAS
    # Nodes are replaced within a month (system nodes: stateless controllers, memory leaks cleared).
    expire_after: str = "720h"
    # How many nodes Karpenter may disrupt at once; none given, its default (10% of the nodes).
    disruption_budgets: tuple[dict[str, str], ...] = ()
    # EC2NodeClass userData: what the nodes run at boot besides Karpenter's own NodeConfig.
    user_data: str | None = None
    # EFA pools: a cluster placement group of their own, in one zone: the zone named here (a new VPC), or that of
    # the one subnet named here (an existing network).
    placement_group: bool = False
    zone: str | None = None
    subnet_id: str | None = None
    # What the nodes advertise beyond what EC2 says of the instance type (an EFA pool's huge pages), for
    # Karpenter's launch decisions (a NodeOverlay of the pool).
    extra_capacity: tuple[tuple[str, str], ...] = ()


# The GPU nodes' NVIDIA container toolkit reads the GPUs a container gets from the device plugin's mounts
# (the plugin's `volume-mounts` strategy, Capabilities.gpu_device_list_strategy) and ignores
# NVIDIA_VISIBLE_DEVICES in unprivileged containers, so that no pod sees GPUs it was not given. The accelerated
# AL2023 AMI ships the toolkit with both settings at their defaults (off, on); `nvidia-ctk config --set` rewrites
# its /etc/nvidia-container-runtime/config.toml, which the runtime reads at each container's creation.
_NVIDIA_TOOLKIT = """nvidia-ctk config --in-place \\
  --set accept-nvidia-visible-devices-as-volume-mounts=true \\
  --set accept-nvidia-visible-devices-envvar-when-unprivileged=false
"""

# Where Karpenter keeps an EFA pool's huge pages (HUGE_PAGE_RESOURCE) in its launch decisions: it launches a node
# only for what an instance type advertises, and EC2 advertises no huge pages (aws/karpenter-provider-aws issue
# #3315: "no instance type satisfied resources" for a pod asking for hugepages-2Mi). A NodeOverlay adds them to
# the pool's instance types (Karpenter v1.14, "NodeOverlays", an alpha API behind the nodeOverlay feature gate;
# its own e2e suite pairs such an overlay with userData reserving the pages). Karpenter still counts the node's
# memory whole, though the kubelet takes the reserved pages out of it: a pod asking for nearly all of a node's
# memory could be planned onto a node it then does not fit; whole-node pods ask for far less.
NODE_OVERLAY_API = "karpenter.sh/v1alpha1"


def _huge_page_reservation(pages: int) -> str:
    """At least `pages` 2 MiB pages (vm.nr_hugepages: the default huge page size is 2 MiB on x86_64, the only
    architecture the pools take), never fewer than the AMI reserved: the EFA installer's efa-config.service,
    where the AMI has it, reserves vCPUs x 110 + 1 at every boot, before this runs (amazon-eks-ami's AL2023
    install-efa.sh runs `efa_installer.sh --minimal`, whose minimal mode skips libfabric, Open MPI and
    efa-profile but not efa-config in aws-efa-installer 1.24.1; the AMI takes the latest installer, so this does
    not rely on it). A reservation raised here is also written for systemd-sysctl,
    so that a reboot keeps it. Reserved at boot, while memory is not yet fragmented: the kernel may hand out fewer
    than asked later, and the kubelet advertises what it finds when nodeadm starts it, after this."""
    return f"""want={pages}
have=$(sysctl -n vm.nr_hugepages)
if [ "$have" -lt "$want" ]; then
  sysctl -qw vm.nr_hugepages="$want"
  echo "vm.nr_hugepages = $want" > /etc/sysctl.d/90-mlplatform-efa-hugepages.conf
fi
have=$(sysctl -n vm.nr_hugepages)
if [ "$have" -lt "$want" ]; then
  echo "mlplatform: $have of $want 2 MiB huge pages reserved for EFA; whole-node pods will not fit" >&2
fi
"""


def gpu_node_user_data(huge_pages: int = 0) -> str:
    """A GPU pool's EC2NodeClass userData: a shell part of a MIME archive, which Karpenter merges with its
    NodeConfig for AL2023 and cloud-init runs at first boot, in cloud-final.service; nodeadm-run.service, which
    starts the kubelet, runs after it (amazon-eks-ami, templates/al2023/runtime/rootfs/etc/systemd/system/
    nodeadm-run.service: After=nodeadm-config.service cloud-final.service). An EFA pool's nodes reserve their
    huge pages there too (EksGpuPool.huge_pages, from the instance type's vCPUs)."""
    script = "\n".join(part for part in (_huge_page_reservation(huge_pages) if huge_pages else "",
                                          _NVIDIA_TOOLKIT) if part)
    return f"""MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="MLPLATFORM"

--MLPLATFORM
Content-Type: text/x-shellscript; charset="us-ascii"

#!/bin/bash
set -euo pipefail
{script}
--MLPLATFORM--
"""


def consolidation_policy(pool: EksGpuPool) -> str:
    """Whole-GPU pools lose a node only once it is empty: a training pod is never moved. A time-sliced pool's
    nodes are also repacked: Karpenter plans a burst of share pods as one per physical GPU (its instance types
    advertise no shares), so N pending pods start up to N nodes, which the scheduler's spreading keeps one pod
    each on; with WhenEmptyOrUnderutilized, Karpenter (which sees the running nodes' real nvidia.com/gpu, the
    shares) moves pods onto free shares and removes the nodes that emptied, consolidateAfter later."""
    return "WhenEmptyOrUnderutilized" if pool.sharing.time_slicing is not None else "WhenEmpty"


def gpu_karpenter_pool(spec: EksClusterConfig, pool: EksGpuPool, gpu_pool: GpuPool) -> KarpenterPool:
    return KarpenterPool(
        name=pool.name, instance_types=pool.instance_types, capacity_types=list(pool.capacity_types),
        labels=dict(gpu_pool.labels),
        taints=[_taint(t) for t in gpu_pool.taints],
        limits={"nvidia.com/gpu": pool.max_nodes * pool.shape.gpus},
        disruption={"consolidationPolicy": consolidation_policy(pool), "consolidateAfter": pool.consolidate_after},
        # One GPU node at a time, whatever the reason (drift from an AMI bump, consolidation): the default
        # budget, 10% of the nodes, lets a small pool's every node go at once, with every job on them.
        disruption_budgets=({"nodes": "1"},),
        # Never expired: expiry is forceful and no budget limits it (Karpenter v1.14, "Disruption"), so a
        # training job would be killed at a node's 30th day; the AMI is pinned, so an expired node would only
        # come back the same. New AMIs arrive by drift, under the budget above.
        expire_after="Never",
        # With instance store striped, images and scratch data live there: the root volume holds the OS only.
        disk_size_gib=SYSTEM_DISK_GIB if pool.instance_store else pool.disk_size_gib,
        instance_store=pool.instance_store,
        capacity_reservation_ids=tuple(pool.capacity_reservation_ids),
        # An EFA pool's nodes reserve huge pages too. A new userData (as when this reservation first came, or a
        # pool's count changes) drifts the pool's nodes: Karpenter replaces them, one at a time by the budget
        # above, as it does for a new AMI.
        user_data=gpu_node_user_data(pool.huge_pages),
        placement_group=pool.efa,
        zone=pool.efa_zone(spec.availability_zones) if pool.efa else None,
        subnet_id=pool.subnet_id,
        extra_capacity=tuple(pool.huge_page_request().items()))


def system_overflow_pool(spec: EksClusterConfig) -> KarpenterPool | None:
    """The system pool above minNodes: the managed node group keeps minNodes, Karpenter adds nodes of the same
    type up to maxNodes while system pods are pending, and removes them when they are no longer needed."""
    system = spec.system_pool
    if system.max_nodes == system.min_nodes:
        return None
    return KarpenterPool(
        name=SYSTEM_POOL, instance_types=[system.instance_type], capacity_types=["on-demand"],
        labels={POOL_LABEL: SYSTEM_POOL}, taints=[_taint(SYSTEM_TAINT)],
        limits={"nodes": system.max_nodes - system.min_nodes},
        disruption={"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5m"},
        disk_size_gib=SYSTEM_DISK_GIB,
        # The managed node group's AMI release, so that one pool runs one AMI.
        ami_alias=f"al2023@v{EKS_SYSTEM_AMI_RELEASES[spec.kubernetes_version].rsplit('-', 1)[1]}")


def cpu_pool(spec: EksClusterConfig) -> KarpenterPool:
    """Teams' CPU work: untainted general-purpose nodes from zero, removed when empty or underused."""
    cpu = spec.cpu_pool
    return KarpenterPool(
        name=CPU_POOL, instance_types=list(cpu.instance_types), capacity_types=list(cpu.capacity_types),
        labels={POOL_LABEL: CPU_POOL}, taints=[], limits={"nodes": cpu.max_nodes},
        disruption={"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "5m"},
        disk_size_gib=SYSTEM_DISK_GIB,
        ami_alias=f"al2023@v{EKS_SYSTEM_AMI_RELEASES[spec.kubernetes_version].rsplit('-', 1)[1]}")


def _taint(taint: Taint) -> dict[str, str]:
    return {"key": taint.key, "value": taint.value, "effect": taint.effect}


def node_class(spec: EksClusterConfig, pool: KarpenterPool, *, node_role: pulumi.Input[str],
               subnet_terms: list[dict[str, object]],
               placement_group: pulumi.Input[str] | None = None) -> dict[str, Any]:
    return {
        "role": node_role,
        "amiSelectorTerms": [{"alias": pool.ami_alias}],
        # A pool's own subnet holds it to that subnet's zone: Karpenter offers an instance type only in the zones
        # of the EC2NodeClass's resolved subnets (aws/karpenter-provider-aws v1.14.1,
        # pkg/providers/instancetype/types.go, computeRequirements: "the set intersection between zones where the
        # instance type is available, and zones which are available via the provided EC2NodeClass", the zones of
        # its status.subnets, pkg/apis/v1/ec2nodeclass_status.go ZoneInfo), and launches into those subnets only
        # (pkg/providers/subnet/subnet.go, ZonalSubnetsForLaunch picks among status.subnets).
        "subnetSelectorTerms": [{"id": pool.subnet_id}] if pool.subnet_id else subnet_terms,
        "securityGroupSelectorTerms": [{"tags": {DISCOVERY_TAG: spec.name}}],
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
            "volumeSize": f"{pool.disk_size_gib}Gi", "volumeType": "gp3", "encrypted": True,
            "deleteOnTermination": True}}],
        # NVMe instance store, striped, holds images and pods' ephemeral storage (Karpenter's
        # instanceStorePolicy): faster than EBS and already paid for.
        **({"instanceStorePolicy": "RAID0"} if pool.instance_store else {}),
        # IMDSv2 only, one hop: pods get AWS credentials from Pod Identity, never from the node's role.
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
        "tags": cost_tags(spec, pool.name),
        **({"capacityReservationSelectorTerms": [{"id": cr} for cr in pool.capacity_reservation_ids]}
           if pool.capacity_reservation_ids else {}),
        **({"userData": pool.user_data} if pool.user_data else {}),
        # By name (or ID): Karpenter v1.14's placementGroupSelector.
        **({"placementGroupSelector": {"name": placement_group}} if placement_group is not None else {}),
    }


def node_overlay(pool: KarpenterPool) -> dict[str, Any]:
    """The capacity a pool's nodes have beyond EC2's description, on the pool's own instance types only (the
    same type in another pool reserves nothing)."""
    return {
        "requirements": [{"key": "karpenter.sh/nodepool", "operator": "In", "values": [pool.name]},
                         {"key": "node.kubernetes.io/instance-type", "operator": "In",
                          "values": list(pool.instance_types)}],
        "capacity": dict(pool.extra_capacity),
    }


def node_pool(pool: KarpenterPool) -> dict[str, Any]:
    return {
        "template": {
            "metadata": {"labels": pool.labels},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": pool.name},
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": pool.instance_types},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": pool.capacity_types},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                    # A cluster placement group is in one zone; Karpenter v1.14 leaves EC2 to enforce that and
                    # retries launches aimed at other zones as capacity errors, so the pool names the zone
                    # (aws/karpenter-provider-aws v1.14.1, designs/placement-groups-support.md, "Note on
                    # cluster PG launches": "avoid these transient failures by pinning the AZ"). A pool with its own
                    # subnet (node_class) is pinned by that subnet instead, whose zone the stack cannot know.
                    *([{"key": "topology.kubernetes.io/zone", "operator": "In", "values": [pool.zone]}]
                      if pool.zone else []),
                ],
                "taints": pool.taints,
                "expireAfter": pool.expire_after,
            },
        },
        "limits": pool.limits,
        "disruption": pool.disruption | ({"budgets": list(pool.disruption_budgets)} if pool.disruption_budgets else {}),
    }


class Karpenter(pulumi.ComponentResource):
    def __init__(self, name: str, spec: EksClusterConfig, *, cluster: aws.eks.Cluster, network: AwsNetwork,
                 security_group_tag: aws.ec2.Tag, gpu_pools: tuple[GpuPool, ...], k8s_provider: k8s.Provider,
                 partition: str, cluster_arn: str, node_role_name: str,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Everything Karpenter needs to end its instances; each NodePool and EC2NodeClass depends on all of it.
        # The network's egress too: with its NAT or routes gone, Karpenter cannot reach EC2 to end its instances.
        rights: list[pulumi.Resource] = [*network.private_subnets, *network.egress, security_group_tag]

        # Its nodes' own role (as Karpenter's guide gives it), with its own access entry: the system node group's
        # role and the entry EKS makes for it are never shared, so neither side can delete the other's.
        node_role = aws.iam.Role(f"{name}-node", name=node_role_name, assume_role_policy=ec2_trust(),
                                 opts=child)
        rights += [aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=node_role.name,
                                                policy_arn=managed_policy(partition, policy), opts=child)
                   for policy in NODE_POLICIES]
        rights.append(aws.eks.AccessEntry(f"{name}-node", cluster_name=cluster.name, principal_arn=node_role.arn,
                                          type="EC2_LINUX", opts=child))

        queue = aws.sqs.Queue(f"{name}-interruptions", name=f"{spec.name}-karpenter", message_retention_seconds=300,
                              sqs_managed_sse_enabled=True, opts=child)
        rights.append(aws.sqs.QueuePolicy(f"{name}-interruptions", queue_url=queue.url,
                                          policy=queue.arn.apply(queue_policy), opts=child))
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(f"{name}-{event}", event_pattern=json.dumps(pattern),
                                            description=f"{event} events for Karpenter of {spec.name}", opts=child)
            rights.append(aws.cloudwatch.EventTarget(f"{name}-{event}", rule=rule.name, arn=queue.arn, opts=child))

        role = aws.iam.Role(f"{name}-controller", assume_role_policy=pod_identity_trust(
            cluster_arn, NAMESPACE, SERVICE_ACCOUNT), opts=child)
        rights.append(aws.iam.RolePolicy(f"{name}-controller", role=role.id,
                                         policy=pulumi.Output.all(cluster.arn, node_role.arn, queue.arn).apply(
                                             lambda arns: controller_policy(*arns)),
                                         opts=child))
        identity = aws.eks.PodIdentityAssociation(f"{name}-controller", cluster_name=cluster.name,
                                                  namespace=NAMESPACE, service_account=SERVICE_ACCOUNT,
                                                  role_arn=role.arn, opts=child)
        rights.append(identity)
        if (spec.spot_service_linked_role and any("spot" in pool.capacity_types for pool in spec.gpu_pools)
                and spot_role_missing(pulumi.InvokeOptions(parent=self))):
            # Once per account, and other stacks' spot instances rely on it: never deleted with this stack
            # (which, finding it on its next run, forgets it without deleting it).
            rights.append(aws.iam.ServiceLinkedRole(f"{name}-spot", aws_service_name="spot.amazonaws.com",
                                                    opts=pulumi.ResourceOptions(parent=self,
                                                                                retain_on_delete=True)))
        security_group = cluster.vpc_config.cluster_security_group_id
        if any(pool.efa for pool in spec.gpu_pools):
            # EFA's OS-bypass traffic passes only a security group that allows all traffic to and from itself
            # (EC2 User Guide, "Prepare an EFA-enabled security group"); the cluster group allows it in, not out.
            rights.append(aws.vpc.SecurityGroupEgressRule(
                f"{name}-efa-egress", security_group_id=security_group,
                referenced_security_group_id=security_group, ip_protocol="-1",
                description="EFA between nodes of the cluster", opts=child))

        pools = [gpu_karpenter_pool(spec, pool, gpu_pool)
                 for pool, gpu_pool in zip(spec.gpu_pools, gpu_pools, strict=True)]
        on_cluster = pulumi.ResourceOptions(parent=self, provider=k8s_provider)
        crds = helm_release(f"{name}-crds", chart=KARPENTER_CRD, namespace=NAMESPACE, release_name="karpenter-crd",
                            values={}, opts=on_cluster)
        release = helm_release(
            f"{name}-controller", chart=KARPENTER, namespace=NAMESPACE,
            release_name="karpenter", skip_crds=True,
            values={
                # Node repair (alpha, off in the chart): a node NotReady for 30 minutes, or with a condition a
                # node health agent sets (AcceleratedHardwareReady=False for 10: a GPU's XID faults), is
                # replaced instead of holding its pods and its price (Karpenter v1.14, "Node Auto Repair").
                # NodeOverlays (alpha, off in the chart) where an EFA pool's huge pages need one (node_overlay).
                "settings": {"clusterName": spec.name, "interruptionQueue": queue.name,
                             "featureGates": {"nodeRepair": True,
                                              **({"nodeOverlay": True} if any(p.extra_capacity for p in pools)
                                                 else {})}},
                "serviceAccount": {"name": SERVICE_ACCOUNT},
                # On the system pool's node group: the chart's default affinity (karpenter.sh/nodepool
                # DoesNotExist, kept) keeps it off the system nodes it adds itself.
                "nodeSelector": {"kubernetes.io/os": "linux", POOL_LABEL: SYSTEM_POOL},
                "controller": {"resources": sizing.KARPENTER_CONTROLLER.resources()},
            },
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[crds, *rights])),
        )
        karpenter_up = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
            depends_on=[crds, release, *rights]))
        overflow = system_overflow_pool(spec)
        for pool in [*pools, *([overflow] if overflow else []), cpu_pool(spec)]:
            placement_group = None
            if pool.placement_group:
                # EFA's OS-bypass traffic is fastest, and NCCL's all-reduce steadiest, between instances on one
                # network spine: a cluster placement group per EFA pool (EC2 User Guide, "Placement strategies";
                # Karpenter's nodeclasses doc names it for EFA). Deleted after the pool's EC2NodeClass, whose
                # nodes must be gone first: EC2 refuses to delete a group with instances in it.
                # Named (names are per account and region, as the cluster's is), so the selector is known at
                # preview and reads as what it is.
                placement_group = aws.ec2.PlacementGroup(
                    f"{name}-{pool.name}-placement", name=f"{spec.name}-{pool.name}", strategy="cluster",
                    tags=cost_tags(spec, pool.name), opts=child).name
            ec2_class = k8s.apiextensions.CustomResource(
                f"{name}-{pool.name}-node-class", api_version="karpenter.k8s.aws/v1", kind="EC2NodeClass",
                metadata=ObjectMetaArgs(name=pool.name),
                spec=node_class(spec, pool, node_role=node_role.name, subnet_terms=network.karpenter_subnet_terms,
                                placement_group=placement_group),
                opts=karpenter_up)
            k8s.apiextensions.CustomResource(
                f"{name}-{pool.name}-node-pool", api_version="karpenter.sh/v1", kind="NodePool",
                metadata=ObjectMetaArgs(name=pool.name), spec=node_pool(pool),
                opts=pulumi.ResourceOptions.merge(karpenter_up, pulumi.ResourceOptions(depends_on=[ec2_class])))
            if pool.extra_capacity:
                k8s.apiextensions.CustomResource(
                    f"{name}-{pool.name}-node-overlay", api_version=NODE_OVERLAY_API, kind="NodeOverlay",
                    metadata=ObjectMetaArgs(name=pool.name), spec=node_overlay(pool), opts=karpenter_up)
        if any(pool.efa for pool in spec.gpu_pools):
            # Karpenter attaches EFA interfaces to an instance it launches for a pod that requests
            # vpc.amazonaws.com/efa (EKS User Guide, "Manage EFA devices"); this plugin advertises them.
            helm_release(f"{name}-efa-device-plugin", chart=EFA_DEVICE_PLUGIN, namespace=NAMESPACE,
                         release_name="aws-efa-k8s-device-plugin",
                         # The chart's required affinity lists EFA instance types by name; our EFA pools' nodes
                         # carry EFA_LABEL, so select on it instead (the chart ANDs its own NotIn auto-mode).
                         values={"image": {"repository": efa_plugin_repository(spec.region)},
                                 "nodeSelector": {EFA_LABEL: "true"},
                                 "supportedInstanceLabels": {"keys": [EFA_LABEL], "values": ["true"]},
                                 "resources": sizing.EFA_DEVICE_PLUGIN.resources(),
                                 "tolerations": [{"key": GPU_TAINT.key, "operator": "Exists",
                                                  "effect": GPU_TAINT.effect}]},
                         opts=on_cluster)
        self.register_outputs({"interruptionQueue": queue.name, "nodeRole": node_role.name})
