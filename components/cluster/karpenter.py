"""Karpenter for an EKS cluster: GPU nodes from zero when a GPU pod is pending, gone again when idle.

Its controller (AWS's chart, pinned) with Pod Identity, the SQS queue and EventBridge rules that tell it of
spot interruptions and instance health events ahead of time, and per GPU pool an EC2NodeClass and NodePool.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components import sizing
from components.cluster.aws_network import DISCOVERY_TAG
from components.handle import POOL_LABEL, SYSTEM_POOL, GpuPool
from components.kube import helm_release
from versions import EKS_AMI_ALIAS, KARPENTER
from config.eks import EksClusterConfig, EksGpuPool

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"

# The events Karpenter acts on before AWS takes a node away: it cordons and drains in time.
INTERRUPTION_EVENTS = {
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
}


def pod_identity_trust() -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"]}]})


def controller_policy(cluster_arn: str, node_role_arn: str, queue_arn: str) -> str:
    """What Karpenter's controller may do: launch and end instances for this cluster, manage the instance
    profiles of its node role, and read its interruption queue."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Provision", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateLaunchTemplate", "ec2:CreateTags",
                    "ec2:DeleteLaunchTemplate", "ec2:TerminateInstances"]},
        {"Sid": "Discover", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeAvailabilityZones", "ec2:DescribeImages", "ec2:DescribeInstances",
                    "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets",
                    "ec2:DescribeCapacityReservations", "pricing:GetProducts", "ssm:GetParameter"]},
        {"Sid": "PassNodeRole", "Effect": "Allow", "Resource": node_role_arn, "Action": "iam:PassRole",
         "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com"]}}},
        {"Sid": "InstanceProfiles", "Effect": "Allow", "Resource": "*",
         "Action": ["iam:CreateInstanceProfile", "iam:TagInstanceProfile", "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile", "iam:GetInstanceProfile",
                    "iam:ListInstanceProfiles"]},
        {"Sid": "Cluster", "Effect": "Allow", "Resource": cluster_arn, "Action": "eks:DescribeCluster"},
        {"Sid": "Interruptions", "Effect": "Allow", "Resource": queue_arn,
         "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]},
    ]})


def queue_policy(queue_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
        "Action": "sqs:SendMessage", "Resource": queue_arn}]})


def node_class(pool: EksGpuPool, cluster_name: str, node_role: pulumi.Input[str]) -> dict[str, Any]:
    discovery = [{"tags": {DISCOVERY_TAG: cluster_name}}]
    return {
        "role": node_role,
        "amiSelectorTerms": [{"alias": EKS_AMI_ALIAS}],
        "subnetSelectorTerms": discovery,
        "securityGroupSelectorTerms": discovery,
        "blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {
            "volumeSize": f"{pool.disk_size_gib}Gi", "volumeType": "gp3", "encrypted": True,
            "deleteOnTermination": True}}],
        # IMDSv2 only, one hop: pods get AWS credentials from Pod Identity, never from the node's role.
        "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
        "tags": {POOL_LABEL: pool.name},
    }


def node_pool(pool: EksGpuPool, gpu_pool: GpuPool) -> dict[str, Any]:
    return {
        "template": {
            "metadata": {"labels": dict(gpu_pool.labels)},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": pool.name},
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": pool.instance_types},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": pool.capacity_types},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                ],
                "taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in gpu_pool.taints],
                # Nodes are replaced within a month, so AMI and security fixes reach long-lived pools.
                "expireAfter": "720h",
            },
        },
        # The pool's size cap, in what it is bought for.
        "limits": {"nvidia.com/gpu": pool.max_nodes * pool.shape.gpus},
        "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": pool.consolidate_after},
    }


class Karpenter(pulumi.ComponentResource):
    def __init__(self, name: str, spec: EksClusterConfig, *, cluster: aws.eks.Cluster, node_role: aws.iam.Role,
                 gpu_pools: tuple[GpuPool, ...], k8s_provider: k8s.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        queue = aws.sqs.Queue(f"{name}-interruptions", name=f"{spec.name}-karpenter", message_retention_seconds=300,
                              sqs_managed_sse_enabled=True, opts=child)
        aws.sqs.QueuePolicy(f"{name}-interruptions", queue_url=queue.url, policy=queue.arn.apply(queue_policy),
                            opts=child)
        for event, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(f"{name}-{event}", event_pattern=json.dumps(pattern),
                                            description=f"{event} events for Karpenter of {spec.name}", opts=child)
            aws.cloudwatch.EventTarget(f"{name}-{event}", rule=rule.name, arn=queue.arn, opts=child)

        role = aws.iam.Role(f"{name}-controller", assume_role_policy=pod_identity_trust(), opts=child)
        aws.iam.RolePolicy(f"{name}-controller", role=role.id,
                           policy=pulumi.Output.all(cluster.arn, node_role.arn, queue.arn).apply(
                               lambda arns: controller_policy(*arns)),
                           opts=child)
        identity = aws.eks.PodIdentityAssociation(f"{name}-controller", cluster_name=cluster.name,
                                                  namespace=NAMESPACE, service_account=SERVICE_ACCOUNT,
                                                  role_arn=role.arn, opts=child)

        on_cluster = pulumi.ResourceOptions(parent=self, provider=k8s_provider)
        release = helm_release(
            f"{name}-controller", chart=KARPENTER, namespace=NAMESPACE,
            release_name="karpenter",
            values={
                "settings": {"clusterName": spec.name, "interruptionQueue": queue.name},
                "serviceAccount": {"name": SERVICE_ACCOUNT},
                # Karpenter must not run on nodes it manages: on the system pool, which it does not.
                "nodeSelector": {"kubernetes.io/os": "linux", POOL_LABEL: SYSTEM_POOL},
                "controller": {"resources": sizing.KARPENTER_CONTROLLER.resources()},
            },
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[identity])),
        )
        # NodePools and EC2NodeClasses are custom resources: their CRDs come with the chart.
        after_crds = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[release]))
        for pool, gpu_pool in zip(spec.gpu_pools, gpu_pools, strict=True):
            ec2_class = k8s.apiextensions.CustomResource(
                f"{name}-{pool.name}-node-class", api_version="karpenter.k8s.aws/v1", kind="EC2NodeClass",
                metadata=ObjectMetaArgs(name=pool.name), spec=node_class(pool, spec.name, node_role.name),
                opts=after_crds)
            k8s.apiextensions.CustomResource(
                f"{name}-{pool.name}-node-pool", api_version="karpenter.sh/v1", kind="NodePool",
                metadata=ObjectMetaArgs(name=pool.name), spec=node_pool(pool, gpu_pool),
                opts=pulumi.ResourceOptions.merge(after_crds, pulumi.ResourceOptions(depends_on=[ec2_class])))
        self.register_outputs({"interruptionQueue": queue.name})
