"""The IAM documents of Karpenter's controller and interruption queue, scoped as Karpenter's own
CloudFormation for v1.14 scopes them (website/content/en/v1.14/getting-started/getting-started-with-karpenter/
cloudformation.yaml in aws/karpenter-provider-aws): it may create, tag and end only what carries this cluster's
`kubernetes.io/cluster/<name>: owned` and a `karpenter.sh/nodepool` tag, in this region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Statement = dict[str, Any]


@dataclass(frozen=True)
class ClusterArn:
    """What a policy needs to know of the cluster, read from its ARN (arn:<partition>:eks:<region>:<account>:
    cluster/<name>), so that no provider call is needed to learn the account or partition."""

    partition: str
    region: str
    account: str
    name: str

    @classmethod
    def parse(cls, arn: str) -> ClusterArn:
        _, partition, service, region, account, resource = arn.split(":", 5)
        kind, _, name = resource.partition("/")
        if service != "eks" or kind != "cluster" or not name:
            raise ValueError(f"{arn!r} is not the ARN of an EKS cluster")
        return cls(partition, region, account, name)

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:eks:{self.region}:{self.account}:cluster/{self.name}"

    def ec2(self, resource: str, *, account: str = "*") -> str:
        return f"arn:{self.partition}:ec2:{self.region}:{account}:{resource}/*"

    @property
    def instance_profiles(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:instance-profile/*"


# What Karpenter launches, tagged at creation; the tag conditions below are what make it "this cluster's".
LAUNCHED = ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")


def _owned(cluster: ClusterArn, tag: str = "aws:ResourceTag") -> dict[str, str]:
    return {f"{tag}/kubernetes.io/cluster/{cluster.name}": "owned"}


def _created_by_karpenter(cluster: ClusterArn) -> dict[str, dict[str, Any]]:
    return {"StringEquals": _owned(cluster, "aws:RequestTag") | {"aws:RequestTag/eks:eks-cluster-name": cluster.name},
            "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}


def _node_lifecycle(cluster: ClusterArn) -> list[Statement]:
    launched = [cluster.ec2(kind) for kind in LAUNCHED]
    created = _created_by_karpenter(cluster)
    karpenters = {"StringEquals": _owned(cluster), "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}
    return [
        {"Sid": "AllowScopedEC2InstanceAccessActions", "Effect": "Allow", "Action": ["ec2:RunInstances",
                                                                                   "ec2:CreateFleet"],
         "Resource": [f"arn:{cluster.partition}:ec2:{cluster.region}::image/*",
                      f"arn:{cluster.partition}:ec2:{cluster.region}::snapshot/*",
                      cluster.ec2("security-group"), cluster.ec2("subnet"), cluster.ec2("capacity-reservation"),
                      cluster.ec2("placement-group")]},
        {"Sid": "AllowScopedEC2LaunchTemplateAccessActions", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet"], "Resource": cluster.ec2("launch-template"),
         "Condition": karpenters},
        {"Sid": "AllowScopedEC2InstanceActionsWithTags", "Effect": "Allow",
         "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"], "Resource": launched,
         "Condition": created},
        # Tags only in the call that creates the resource (ec2:CreateAction), never on anything else.
        {"Sid": "AllowScopedResourceCreationTagging", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": launched,
         "Condition": {"StringEquals": created["StringEquals"] | {
             "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
             "StringLike": created["StringLike"]}},
        # Afterwards, only the Name and NodeClaim tags on its own instances.
        {"Sid": "AllowScopedResourceTagging", "Effect": "Allow", "Action": "ec2:CreateTags",
         "Resource": cluster.ec2("instance"),
         "Condition": karpenters | {
             "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster.name},
             "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim",
                                                           "Name"]}}},
        {"Sid": "AllowScopedDeletion", "Effect": "Allow",
         "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
         "Resource": [cluster.ec2("instance"), cluster.ec2("launch-template")], "Condition": karpenters},
    ]


def _iam_integration(cluster: ClusterArn, node_role_arn: str) -> list[Statement]:
    region_tag = {"aws:RequestTag/topology.kubernetes.io/region": cluster.region}
    requested = {"aws:RequestTag/kubernetes.io/cluster/" + cluster.name: "owned",
                 "aws:RequestTag/eks:eks-cluster-name": cluster.name} | region_tag
    existing = _owned(cluster) | {"aws:ResourceTag/topology.kubernetes.io/region": cluster.region}
    return [
        {"Sid": "AllowPassingInstanceRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": node_role_arn,
         "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}}},
        {"Sid": "AllowScopedInstanceProfileCreationActions", "Effect": "Allow",
         "Action": ["iam:CreateInstanceProfile"], "Resource": cluster.instance_profiles,
         "Condition": {"StringEquals": requested,
                       "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "AllowScopedInstanceProfileTagActions", "Effect": "Allow", "Action": ["iam:TagInstanceProfile"],
         "Resource": cluster.instance_profiles,
         "Condition": {"StringEquals": existing | requested,
                       "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                                      "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
        {"Sid": "AllowScopedInstanceProfileActions", "Effect": "Allow",
         "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile"],
         "Resource": cluster.instance_profiles,
         "Condition": {"StringEquals": existing,
                       "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}}},
    ]


def _discovery(cluster: ClusterArn) -> list[Statement]:
    return [
        # DescribeInstanceStatus: without it Karpenter's instance health checks (node repair) are off.
        {"Sid": "AllowRegionalReadActions", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates", "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
         "Condition": {"StringEquals": {"aws:RequestedRegion": cluster.region}}},
        # The AMI alias resolves through AWS's public SSM parameters, and only those.
        {"Sid": "AllowSSMReadActions", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": f"arn:{cluster.partition}:ssm:{cluster.region}::parameter/aws/service/*"},
        {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Resource": "*", "Action": "pricing:GetProducts"},
        {"Sid": "AllowUnscopedInstanceProfileListAction", "Effect": "Allow", "Resource": "*",
         "Action": "iam:ListInstanceProfiles"},
        {"Sid": "AllowInstanceProfileReadActions", "Effect": "Allow", "Action": "iam:GetInstanceProfile",
         "Resource": cluster.instance_profiles},
        {"Sid": "AllowAPIServerEndpointDiscovery", "Effect": "Allow", "Action": "eks:DescribeCluster",
         "Resource": cluster.arn},
        {"Sid": "AllowZonalShiftStatusReadOnly", "Effect": "Allow", "Resource": "*",
         "Action": ["arc-zonal-shift:GetManagedResource"],
         "Condition": {"StringEquals": {"arc-zonal-shift:ResourceIdentifier": cluster.arn}}},
    ]


def controller_policy(cluster_arn: str, node_role_arn: str, queue_arn: str) -> str:
    """Everything Karpenter's controller may do, in one inline policy (the CloudFormation's six managed ones)."""
    cluster = ClusterArn.parse(cluster_arn)
    interruptions: Statement = {"Sid": "AllowInterruptionQueueActions", "Effect": "Allow", "Resource": queue_arn,
                                "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]}
    return json.dumps({"Version": "2012-10-17", "Statement": [
        *_node_lifecycle(cluster), *_iam_integration(cluster, node_role_arn), *_discovery(cluster),
        interruptions]})


def queue_policy(queue_arn: str) -> str:
    """EventBridge (and SQS) may send to the queue; nothing may use it without TLS."""
    return json.dumps({"Version": "2012-10-17", "Id": "EC2InterruptionPolicy", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
         "Action": "sqs:SendMessage", "Resource": queue_arn},
        {"Sid": "DenyHTTP", "Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Resource": queue_arn,
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]})
