"""Karpenter on EKS, checked against Karpenter v1.14's own getting-started CloudFormation (aws/karpenter-provider-aws,
website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml): its IAM scoping, its
queue and rules, its node role; and the teardown order that lets it end its instances on `pulumi destroy`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clouds.eks.config import GPU_INSTANCES
from clouds.eks.karpenter_iam import controller_policy, queue_policy
from synth import engine
from synth.engine import Resource, Synthesis
from synth.render import stack_rendering
from tests.conftest import aws_cluster, synth_with
from versions import EFA_DEVICE_PLUGIN, KARPENTER, KARPENTER_CRD

CLUSTER_ARN = "arn:aws:eks:us-east-1:111122223333:cluster/ml-prod"
NODE_ROLE = "arn:aws:iam::111122223333:role/ml-prod-us-east-1-karpenter"
QUEUE = "arn:aws:sqs:us-east-1:111122223333:ml-prod-karpenter"
OWNED = {"aws:ResourceTag/kubernetes.io/cluster/ml-prod": "owned"}


def statements() -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in json.loads(controller_policy(CLUSTER_ARN, NODE_ROLE, QUEUE))["Statement"]}


def releases(synthesis: Synthesis) -> dict[str, Resource]:
    return {r.inputs["name"]: r for r in synthesis.of_type("kubernetes:helm.sh/v3:Release")}


# ---- the controller's IAM policy ---------------------------------------------------------------------------

def test_no_mutating_ec2_or_iam_action_is_allowed_on_everything_without_a_condition():
    for sid, statement in statements().items():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        mutating = [a for a in actions if not a.split(":")[1].startswith(("Describe", "Get", "List"))]
        if statement["Resource"] == "*" and mutating:
            assert "Condition" in statement, sid


def test_only_instances_tagged_for_this_cluster_and_a_nodepool_can_be_terminated():
    deletion = statements()["AllowScopedDeletion"]
    assert set(deletion["Action"]) == {"ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"}
    assert deletion["Resource"] == ["arn:aws:ec2:us-east-1:*:instance/*", "arn:aws:ec2:us-east-1:*:launch-template/*"]
    assert deletion["Condition"] == {"StringEquals": OWNED,
                                     "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}


def test_tags_are_created_only_with_the_launch_and_then_only_name_and_nodeclaim():
    by_sid = statements()
    creation = by_sid["AllowScopedResourceCreationTagging"]["Condition"]
    assert creation["StringEquals"]["ec2:CreateAction"] == ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]
    assert creation["StringEquals"]["aws:RequestTag/eks:eks-cluster-name"] == "ml-prod"
    later = by_sid["AllowScopedResourceTagging"]
    assert later["Resource"] == "arn:aws:ec2:us-east-1:*:instance/*"
    assert later["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"] == [
        "eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
    launch = by_sid["AllowScopedEC2InstanceActionsWithTags"]["Condition"]
    assert launch["StringEquals"]["aws:RequestTag/kubernetes.io/cluster/ml-prod"] == "owned"


def test_instance_profiles_are_scoped_to_this_cluster_and_region():
    by_sid = statements()
    for sid in ("AllowScopedInstanceProfileActions", "AllowScopedInstanceProfileTagActions"):
        condition = by_sid[sid]["Condition"]["StringEquals"]
        assert condition["aws:ResourceTag/kubernetes.io/cluster/ml-prod"] == "owned", sid
        assert condition["aws:ResourceTag/topology.kubernetes.io/region"] == "us-east-1", sid
        assert by_sid[sid]["Resource"] == "arn:aws:iam::111122223333:instance-profile/*"
    creation = by_sid["AllowScopedInstanceProfileCreationActions"]["Condition"]["StringEquals"]
    assert creation["aws:RequestTag/topology.kubernetes.io/region"] == "us-east-1"


def test_reads_are_regional_ssm_only_public_parameters_and_instance_status_is_readable():
    by_sid = statements()
    reads = by_sid["AllowRegionalReadActions"]
    assert "ec2:DescribeInstanceStatus" in reads["Action"]  # Karpenter's instance health checks need it
    assert reads["Condition"] == {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}
    assert by_sid["AllowSSMReadActions"]["Resource"] == "arn:aws:ssm:us-east-1::parameter/aws/service/*"
    assert by_sid["AllowPassingInstanceRole"]["Resource"] == NODE_ROLE
    assert by_sid["AllowInterruptionQueueActions"]["Resource"] == QUEUE
    assert by_sid["AllowAPIServerEndpointDiscovery"]["Resource"] == CLUSTER_ARN


def test_the_policy_is_built_from_the_real_cluster_arn(prod):
    (policy,) = [p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy") if "karpenter" in p.name]
    cluster = next(r for r in prod.of_type("aws:eks/cluster:Cluster"))
    assert cluster.urn in policy.depends_on  # the ARN (account, partition, region) comes from the cluster
    with pytest.raises(ValueError, match="not the ARN of an EKS cluster"):
        controller_policy("arn:aws:iam::111122223333:role/x", NODE_ROLE, QUEUE)


@pytest.mark.parametrize("role, service_account", [("ml-dev-karpenter-controller", "karpenter"),
                                                   ("ml-dev-ebs-csi", "ebs-csi-controller-sa")])
def test_pod_identity_roles_can_be_assumed_only_by_their_service_account_on_this_cluster(dev, role, service_account):
    # Without a condition any Pod Identity association in the account (another cluster's, another namespace's)
    # could be given Karpenter's EC2 rights or the EBS driver's.
    (trust,) = [json.loads(r.inputs["assumeRolePolicy"]) for r in dev.of_type("aws:iam/role:Role") if r.name == role]
    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {
        "aws:RequestTag/eks-cluster-arn": "arn:aws:eks:us-east-1:111122223333:cluster/ml-dev",
        "aws:RequestTag/kubernetes-namespace": "kube-system",
        "aws:RequestTag/kubernetes-service-account": service_account}}


# ---- interruption queue -----------------------------------------------------------------------------------------

def test_queue_refuses_plain_http_and_the_capacity_reservation_warning_reaches_it(dev):
    deny = next(s for s in json.loads(queue_policy(QUEUE))["Statement"] if s["Effect"] == "Deny")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and deny["Action"] == "sqs:*"
    patterns = {json.loads(r.inputs["eventPattern"])["detail-type"][0]
                for r in dev.of_type("aws:cloudwatch/eventRule:EventRule")}
    assert patterns == {"AWS Health Event", "EC2 Spot Instance Interruption Warning",
                        "EC2 Instance Rebalance Recommendation", "EC2 Instance State-change Notification",
                        "EC2 Capacity Reservation Instance Interruption Warning"}


# ---- nodes: their own role and access entry -----------------------------------------------------------------

def test_karpenter_nodes_have_their_own_role_and_the_only_ec2_linux_entry(prod):
    entries = [e for e in prod.of_type("aws:eks/accessEntry:AccessEntry") if e.inputs["type"] == "EC2_LINUX"]
    (entry,) = entries
    (group,) = prod.of_type("aws:eks/nodeGroup:NodeGroup")
    roles = {r.urn: r for r in prod.of_type("aws:iam/role:Role")}
    karpenter_role = next(r for r in roles.values() if r.inputs.get("name") == "ml-prod-us-east-1-karpenter")
    assert karpenter_role.urn in entry.depends_on
    assert karpenter_role.urn not in group.depends_on  # the system group keeps its own role
    node_class = next(r for r in prod.resources if r.inputs.get("kind") == "EC2NodeClass")
    assert node_class.inputs["spec"]["role"] == "ml-prod-us-east-1-karpenter"


def test_spot_service_linked_role_is_made_once_kept_on_destroy_and_can_be_turned_off(dev, prod, eks_options):
    (role,) = dev.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert role.inputs["awsServiceName"] == "spot.amazonaws.com"
    assert prod.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole") == []  # prod has no spot pool
    assert eks_options.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole") == []


def test_an_account_that_has_the_spot_role_gets_no_second_one(monkeypatch):
    # CreateServiceLinkedRole fails where the role exists, as it does in any account that ever made a spot
    # request; the stack looks it up and makes it only where it is missing.
    monkeypatch.setattr(engine, "AWS_ACCOUNT_ROLES", (
        "arn:aws:iam::111122223333:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",))
    spot_pool = [{"name": "l4", "instanceTypes": ["g6.xlarge"], "maxNodes": 2, "capacityTypes": ["spot"]}]
    assert synth_with(cluster=aws_cluster(gpuPools=spot_pool)).of_type(
        "aws:iam/serviceLinkedRole:ServiceLinkedRole") == []
    monkeypatch.setattr(engine, "AWS_ACCOUNT_ROLES", ())
    (role,) = synth_with(cluster=aws_cluster(gpuPools=spot_pool)).of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert role.inputs["awsServiceName"] == "spot.amazonaws.com"


# ---- CRDs -----------------------------------------------------------------------------------------------------

def test_crds_come_from_the_karpenter_crd_chart_at_the_controllers_version_before_it(dev):
    by_name = releases(dev)
    crds, controller = by_name["karpenter-crd"], by_name["karpenter"]
    assert crds.inputs["chart"] == f"{KARPENTER_CRD.repository}/karpenter-crd"
    assert crds.inputs["version"] == controller.inputs["version"] == KARPENTER.version
    assert controller.inputs["skipCrds"] is True
    assert crds.urn in controller.depends_on


# ---- teardown order -------------------------------------------------------------------------------------------

def karpenters_rights(synthesis: Synthesis) -> set[str]:
    """What Karpenter needs to end its instances: if any of it went first, finalizers would hang and GPU
    instances would keep running outside any group."""
    karpenter = next(r for r in synthesis.resources if r.type == "mlplatform:cluster:Karpenter")
    needed = {"aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
              "aws:eks/accessEntry:AccessEntry", "aws:eks/podIdentityAssociation:PodIdentityAssociation",
              "aws:sqs/queuePolicy:QueuePolicy", "aws:cloudwatch/eventTarget:EventTarget",
              "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"}
    controller = {releases(synthesis)[name].urn for name in ("karpenter", "karpenter-crd")}
    discovery = {t.urn for t in synthesis.of_type("aws:ec2/tag:Tag") if t.inputs["key"] == "karpenter.sh/discovery"}
    assert len(discovery) == 1  # the cluster security group's
    return {r.urn for r in synthesis.children_of(karpenter.urn) if r.type in needed} | controller | discovery


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_destroy_deletes_every_nodepool_and_nodeclass_while_karpenter_still_has_its_rights(stack, request):
    synthesis: Synthesis = request.getfixturevalue(stack)
    rights = karpenters_rights(synthesis)
    assert len([urn for urn in rights if "RolePolicyAttachment" in urn]) == 4
    assert any("accessEntry" in urn for urn in rights) and any("rolePolicy:RolePolicy" in urn for urn in rights)
    node_objects = [r for r in synthesis.resources if r.inputs.get("kind") in ("NodePool", "EC2NodeClass")]
    assert node_objects
    for resource in node_objects:
        # A direct dependency: `pulumi destroy` deletes the dependent (and waits for its finalizers) first.
        assert rights <= set(resource.depends_on), (resource.name, rights - set(resource.depends_on))


EGRESS = ("aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/routeTable:RouteTable",
          "aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip", "aws:ec2/internetGateway:InternetGateway",
          "aws:ec2/vpcEndpoint:VpcEndpoint")


def needs(synthesis: Synthesis, urn: str) -> set[str]:
    """Everything a resource depends on, directly or not (its provider included): what `pulumi destroy` keeps
    until that resource is gone."""
    seen: set[str] = set()
    todo = [urn]
    while todo:
        resource = synthesis.by_urn(todo.pop())
        for dependency in (*resource.depends_on, *([resource.provider] if resource.provider else [])):
            if dependency not in seen:
                seen.add(dependency)
                todo.append(dependency)
    return seen


@pytest.mark.parametrize("stack", ["dev", "prod", "eks_options"])
def test_destroy_keeps_the_network_s_way_out_until_karpenter_s_nodes_and_every_volume_are_gone(stack, request):
    # Karpenter ends its instances, and the EBS CSI driver deletes volumes, through EC2's API, reached by NAT (or
    # endpoints): route tables, their associations, NAT, its address and the internet gateway must outlive every
    # NodePool, EC2NodeClass and everything on the cluster (all of which goes through the Kubernetes provider).
    synthesis: Synthesis = request.getfixturevalue(stack)
    egress = {r.urn for r in synthesis.resources if r.type in EGRESS}
    assert [r for r in synthesis.resources if r.type == "aws:ec2/routeTableAssociation:RouteTableAssociation"]
    (provider,) = synthesis.of_type("pulumi:providers:kubernetes")
    dependents = [provider, *(r for r in synthesis.resources if r.inputs.get("kind") in ("NodePool", "EC2NodeClass"))]
    for resource in dependents:
        assert egress <= needs(synthesis, resource.urn), (resource.name, egress - needs(synthesis, resource.urn))


def test_node_classes_depend_on_the_subnets_and_security_group_tag_they_launch_by(dev):
    subnets = {s.urn for s in dev.of_type("aws:ec2/subnet:Subnet") if "private" in s.name}
    (tag,) = dev.of_type("aws:ec2/tag:Tag")
    assert tag.inputs == {"key": "karpenter.sh/discovery", "value": "ml-dev"} | (
        {"resourceId": tag.inputs["resourceId"]} if "resourceId" in tag.inputs else {})
    assert len(subnets) == 3
    for node_class in (r for r in dev.resources if r.inputs.get("kind") == "EC2NodeClass"):
        assert subnets | {tag.urn} <= set(node_class.depends_on)
        terms = node_class.inputs["spec"]["securityGroupSelectorTerms"]
        assert terms == [{"tags": {"karpenter.sh/discovery": "ml-dev"}}]


# ---- node classes -----------------------------------------------------------------------------------------------

def test_node_classes_tag_what_karpenter_launches_for_cost_reports(prod):
    node_class = next(r for r in prod.resources if r.inputs.get("kind") == "EC2NodeClass"
                      and r.inputs["metadata"]["name"] == "h100")
    assert node_class.inputs["spec"]["tags"] == {"mlplatform.io/cluster": "ml-prod",
                                                 "mlplatform.io/environment": "prod", "mlplatform.io/pool": "h100"}


def test_gpu_instances_with_nvme_instance_store_use_it_as_raid0(prod, eks_options):
    classes = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in prod.resources
               if r.inputs.get("kind") == "EC2NodeClass"}
    assert classes["h100"]["instanceStorePolicy"] == "RAID0" and classes["a10g"]["instanceStorePolicy"] == "RAID0"
    (v100,) = [r.inputs["spec"] for r in eks_options.resources if r.inputs.get("kind") == "EC2NodeClass"
               and r.inputs["metadata"]["name"] not in ("system", "cpu")]
    assert v100["tags"]["mlplatform.io/pool"] == "v100"
    assert "instanceStorePolicy" not in v100  # p3 has EBS only
    # With the NVMe striped for images and scratch data, the root volume holds the OS only: 50 GiB, not the
    # 200 GiB default (or prod's former 1000) a p5 kept for nothing; EBS-only p3 keeps its room for images.
    for spec in (classes["h100"], classes["a10g"]):
        assert spec["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "50Gi"
    assert v100["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "200Gi"


def test_efa_pools_get_the_self_referencing_egress_rule_efa_needs(prod, dev):
    for synthesis in (prod, dev):
        (rule,) = synthesis.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        assert rule.inputs["ipProtocol"] == "-1"
        assert rule.inputs["description"] == "EFA between nodes of the cluster"
    assert synth_with(cluster=aws_cluster()).of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule") == []


def test_efa_pools_run_the_efa_device_plugin_on_their_nodes_only(prod, dev):
    plugin = releases(prod)["aws-efa-k8s-device-plugin"]
    assert plugin.inputs["version"] == EFA_DEVICE_PLUGIN.version
    assert plugin.inputs["values"]["nodeSelector"] == {"mlplatform.io/efa": "true"}
    assert plugin.inputs["values"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                       "effect": "NoSchedule"}]
    pools = {r.inputs["metadata"]["name"]: r.inputs["spec"]["template"]["metadata"]["labels"]
             for r in prod.resources if r.inputs.get("kind") == "NodePool"}
    assert pools["h100"]["mlplatform.io/efa"] == "true" and "mlplatform.io/efa" not in pools["a10g"]
    assert releases(dev)["aws-efa-k8s-device-plugin"].inputs["values"]["nodeSelector"] == {"mlplatform.io/efa": "true"}
    assert "aws-efa-k8s-device-plugin" not in releases(synth_with(cluster=aws_cluster()))


def node_pools_and_classes(synthesis: Synthesis) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each pool's NodePool spec and EC2NodeClass spec, by pool name."""
    def of(kind: str) -> dict[str, Any]:
        return {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in synthesis.resources
                if r.inputs.get("kind") == kind}
    return of("NodePool"), of("EC2NodeClass")


def zone_requirement(node_pool: dict[str, Any]) -> list[str] | None:
    return next((r["values"] for r in node_pool["template"]["spec"]["requirements"]
                 if r["key"] == "topology.kubernetes.io/zone"), None)


def test_each_efa_pool_gets_a_cluster_placement_group_and_one_zone(prod, dev):
    # Karpenter v1.14.1's EC2NodeClass takes spec.placementGroupSelector (by id or name); a cluster placement group
    # is one zone's, and Karpenter leaves that to EC2, retrying launches aimed at other zones (its
    # designs/placement-groups-support.md): the pool is pinned to the zone too, by default the cluster's first.
    (group,) = prod.of_type("aws:ec2/placementGroup:PlacementGroup")
    assert group.inputs["strategy"] == "cluster"
    assert group.inputs["tags"]["mlplatform.io/pool"] == "h100"
    pools, classes = node_pools_and_classes(prod)
    assert classes["h100"]["placementGroupSelector"] == {"name": "ml-prod-h100"} == {"name": group.inputs["name"]}
    assert zone_requirement(pools["h100"]) == ["us-east-1a"]
    # Pools without EFA keep every zone and no placement group.
    assert "placementGroupSelector" not in classes["a10g"] and zone_requirement(pools["a10g"]) is None
    # dev's p4d pool likewise, and none of its other pools.
    (dev_group,) = dev.of_type("aws:ec2/placementGroup:PlacementGroup")
    dev_pools, dev_classes = node_pools_and_classes(dev)
    assert dev_classes["a100-efa"]["placementGroupSelector"] == {"name": dev_group.inputs["name"]}
    assert zone_requirement(dev_pools["a100-efa"]) == ["us-east-1a"]
    assert [name for name, spec in dev_classes.items() if "placementGroupSelector" in spec] == ["a100-efa"]
    # The placement group goes after the EC2NodeClass on a destroy: EC2 refuses to delete one with instances.
    node_class = next(r for r in prod.resources if r.inputs.get("kind") == "EC2NodeClass"
                      and r.inputs["metadata"]["name"] == "h100")
    assert group.urn in needs(prod, node_class.urn)


def test_an_efa_pool_can_name_its_zone_and_each_efa_pool_has_its_own_group():
    efa = {"instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True}
    synthesis = synth_with(cluster=aws_cluster(gpuPools=[{"name": "a", **efa, "zone": "eu-west-1b"},
                                                         {"name": "b", **efa}]))
    pools, _ = node_pools_and_classes(synthesis)
    assert zone_requirement(pools["a"]) == ["eu-west-1b"] and zone_requirement(pools["b"]) == ["eu-west-1a"]
    groups = synthesis.of_type("aws:ec2/placementGroup:PlacementGroup")
    assert sorted(g.inputs["tags"]["mlplatform.io/pool"] for g in groups) == ["a", "b"]


PRIVATE = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]


def test_an_efa_pool_on_existing_subnets_goes_in_its_own_subnet_with_its_placement_group():
    # The stack cannot look up which zone an existing subnet is in (the synth calls no AWS API), so a zone named
    # for the pool might be none of theirs, and Karpenter would launch nothing. The pool names its subnet
    # instead: Karpenter v1.14.1 offers instance types only in the zones of the EC2NodeClass's subnets
    # (pkg/providers/instancetype/types.go, computeRequirements), so one subnet is one zone, the placement
    # group's, with no zone requirement that could contradict it.
    synthesis = synth_with(cluster=aws_cluster(network={"privateSubnetIds": PRIVATE}, gpuPools=[
        {"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True, "subnetId": PRIVATE[1]},
        {"name": "l4", "instanceTypes": ["g6.xlarge"], "maxNodes": 2}]))
    pools, classes = node_pools_and_classes(synthesis)
    assert classes["h100"]["subnetSelectorTerms"] == [{"id": PRIVATE[1]}]
    assert zone_requirement(pools["h100"]) is None
    (group,) = synthesis.of_type("aws:ec2/placementGroup:PlacementGroup")
    assert group.inputs["strategy"] == "cluster" and group.inputs["tags"]["mlplatform.io/pool"] == "h100"
    assert classes["h100"]["placementGroupSelector"] == {"name": group.inputs["name"]}
    # Every other pool keeps every private subnet, and no zone.
    assert classes["l4"]["subnetSelectorTerms"] == [{"id": subnet} for subnet in PRIVATE]
    assert zone_requirement(pools["l4"]) is None and "placementGroupSelector" not in classes["l4"]


def test_each_efa_pool_tells_teams_its_interface_count_and_gives_every_team_namespace_its_nccl_settings(prod):
    # aws/aws-ofi-nccl v1.21.1 doc/efa-env-var.md, "Sample Presets": FI_PROVIDER=efa and NCCL_PROTO=simple on
    # every EFA GPU instance, FI_EFA_USE_DEVICE_RDMA=1 on p4/p5 (GPUDirect RDMA) only.
    pools = [{"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True},
             {"name": "l40s", "instanceTypes": ["g6e.48xlarge"], "maxNodes": 2, "efa": True},
             {"name": "l4", "instanceTypes": ["g6.xlarge"], "maxNodes": 2}]
    synthesis = synth_with(cluster=aws_cluster(gpuPools=pools), teams=[
        {"name": "vision", "quota": {"requests": {"cpu": "8", "memory": "32Gi"}, "gpus": 8}}],
        capacity={"allowOvercommit": True})
    maps = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r.inputs["data"]
            for r in synthesis.resources if r.inputs.get("kind") == "ConfigMap"
            and r.inputs["metadata"]["name"].startswith("nccl-")}
    assert maps == {("vision", "nccl-h100"): {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple",
                                              "FI_EFA_USE_DEVICE_RDMA": "1"},
                    ("vision", "nccl-l40s"): {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple"}}
    described = {p["name"]: p for p in synthesis.outputs["gpuPools"]}
    assert described["h100"]["fabricDevices"] == {"vpc.amazonaws.com/efa": 32}
    assert described["l40s"]["fabricDevices"] == {"vpc.amazonaws.com/efa": 4}
    assert described["l4"]["fabricDevices"] == {} and "ncclConfigMap" not in described["l4"]
    assert described["h100"]["ncclConfigMap"] == "nccl-h100"
    # The prod example's EFA pool too, in each of its platform-managed team namespaces.
    assert {r.inputs["metadata"]["name"] for r in prod.resources if r.inputs.get("kind") == "ConfigMap"
            and r.inputs["metadata"]["name"].startswith("nccl-")} == {"nccl-h100"}


@pytest.mark.parametrize("region, repository", [
    ("us-east-1", "602401143452.dkr.ecr.us-east-1.amazonaws.com/eks/aws-efa-k8s-device-plugin"),
    ("af-south-1", "877085696533.dkr.ecr.af-south-1.amazonaws.com/eks/aws-efa-k8s-device-plugin"),
    ("cn-north-1", "918309763551.dkr.ecr.cn-north-1.amazonaws.com.cn/eks/aws-efa-k8s-device-plugin"),
])
def test_the_efa_device_plugin_is_pulled_from_eks_s_registry_in_the_stack_s_own_region(region, repository):
    # The chart's default is us-west-2's registry (aws-efa-k8s-device-plugin v0.5.30, values.yaml): pulled across
    # regions through NAT from elsewhere, and refused from opt-in regions and other partitions.
    synthesis = synth_with(cluster=aws_cluster(
        region=region, availabilityZones=[f"{region}a", f"{region}b"],
        gpuPools=[{"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True}]))
    image = releases(synthesis)["aws-efa-k8s-device-plugin"].inputs["values"]["image"]
    assert image == {"repository": repository}  # the tag stays the chart's


def test_capacity_reservations_and_blocks_are_selected_by_id_and_filled_as_reserved_capacity():
    from tests.conftest import aws_cluster, synth_with
    pool = {"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "capacityTypes": ["reserved"],
            "capacityReservationIds": ["cr-0123456789abcdef0"]}
    synthesis = synth_with(cluster=aws_cluster(gpuPools=[pool]))
    kinds = {r.inputs["kind"]: r.inputs["spec"] for r in synthesis.resources
             if r.inputs.get("kind") in ("NodePool", "EC2NodeClass") and r.inputs["metadata"]["name"] == "h100"}
    assert kinds["EC2NodeClass"]["capacityReservationSelectorTerms"] == [{"id": "cr-0123456789abcdef0"}]
    requirements = {r["key"]: r["values"] for r in kinds["NodePool"]["template"]["spec"]["requirements"]}
    assert requirements["karpenter.sh/capacity-type"] == ["reserved"]


def test_the_controller_policy_fits_an_inline_role_policy():
    # IAM counts an inline policy's characters without whitespace, up to 10,240 per role.
    long = controller_policy(CLUSTER_ARN.replace("ml-prod", "x" * 40), NODE_ROLE, QUEUE)
    assert len("".join(long.split())) < 10_240


def test_the_system_pool_grows_from_min_nodes_to_max_nodes_through_karpenter(dev):
    # systemPool: m7i.large, minNodes 2, maxNodes 3: the node group keeps 2, Karpenter may add 1 more.
    objects = {(r.inputs["kind"], r.inputs["metadata"]["name"]): r.inputs["spec"] for r in dev.resources
               if r.inputs.get("kind") in ("NodePool", "EC2NodeClass")}
    pool = objects[("NodePool", "system")]
    assert pool["limits"] == {"nodes": 1}
    assert pool["template"]["metadata"]["labels"] == {"mlplatform.io/pool": "system"}
    assert pool["template"]["spec"]["taints"] == [{"key": "CriticalAddonsOnly", "value": "true",
                                                  "effect": "NoSchedule"}]
    requirements = {r["key"]: r["values"] for r in pool["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["m7i.large"]
    assert requirements["karpenter.sh/capacity-type"] == ["on-demand"]
    assert pool["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert "instanceStorePolicy" not in objects[("EC2NodeClass", "system")]
    # Karpenter never runs on a node it made: the chart's default affinity keeps it off them, and we keep it.
    assert "affinity" not in releases(dev)["karpenter"].inputs["values"]


def test_karpenter_replaces_broken_nodes(upstream):
    # Node repair is an alpha gate the chart turns off: without it a GPU node NotReady (or, with a node health
    # agent, with failing GPUs) keeps its pods and its price forever.
    karpenter = stack_rendering("dev").releases["karpenter"]
    (deployment,) = [o for o in karpenter.objects if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for c in deployment["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    assert "NodeRepair=true" in env["FEATURE_GATES"].split(","), env["FEATURE_GATES"]


def test_the_system_pool_s_karpenter_nodes_run_the_node_group_s_ami_release(dev):
    # One pool, one AMI: the nodes Karpenter adds above minNodes boot the release the managed group runs
    # (amazon-eks-ami's release date), not the GPU pools' newer one.
    (group,) = dev.of_type("aws:eks/nodeGroup:NodeGroup")
    release_date = group.inputs["releaseVersion"].rsplit("-", 1)[1]
    node_class = next(r.inputs["spec"] for r in dev.resources
                      if r.inputs.get("kind") == "EC2NodeClass" and r.inputs["metadata"]["name"] == "system")
    assert node_class["amiSelectorTerms"] == [{"alias": f"al2023@v{release_date}"}]


def test_a_system_pool_of_fixed_size_has_no_karpenter_overflow(eks_options):
    assert not any(r.inputs.get("kind") == "NodePool" and r.inputs["metadata"]["name"] == "system"
                   for r in eks_options.resources)


# ---- huge pages on EFA nodes ------------------------------------------------------------------------------------

def efa_pool(instance_type: str) -> tuple[Any, Any]:
    """An EFA pool of one instance type: its handle (what it exports) and its Karpenter pool (what its nodes run)."""
    from clouds.eks.cluster import eks_gpu_pools
    from clouds.eks.config import EksClusterConfig
    from clouds.eks.karpenter import gpu_karpenter_pool
    spec = EksClusterConfig.model_validate(aws_cluster(gpuPools=[
        {"name": "fabric", "instanceTypes": [instance_type], "maxNodes": 2, "efa": True}]))
    (gpu_pool,) = eks_gpu_pools(spec)
    return gpu_pool, gpu_karpenter_pool(spec, spec.gpu_pools[0], gpu_pool)


def boot(user_data: str, tmp_path: Any, nr_hugepages: int) -> tuple[int, str]:
    """Runs the shell part of a node's userData as cloud-init would, against a fake sysctl whose vm.nr_hugepages
    starts at `nr_hugepages` (what the AMI reserved): the reservation it ends with, and what it keeps for a reboot."""
    import subprocess
    script = user_data.split('Content-Type: text/x-shellscript; charset="us-ascii"\n\n', 1)[1]
    script = script.split("\n--MLPLATFORM--", 1)[0].replace("/etc/sysctl.d/", f"{tmp_path}/")
    state, kept = tmp_path / "nr_hugepages", tmp_path / "90-mlplatform-efa-hugepages.conf"
    state.write_text(str(nr_hugepages))
    kept.unlink(missing_ok=True)
    fakes = (f'sysctl() {{ if [ "$1" = -n ]; then cat {state}; else echo "${{2#*=}}" > {state}; fi; }}\n'
             "nvidia-ctk() { :; }\n")
    subprocess.run(["bash", "-c", fakes + script.removeprefix("#!/bin/bash\n")], check=True, capture_output=True)
    return int(state.read_text()), kept.read_text() if kept.exists() else ""


EFA_TYPES = sorted(name for name, instance in GPU_INSTANCES.items() if instance.efa)


@pytest.mark.parametrize("instance_type", EFA_TYPES)
def test_efa_nodes_reserve_the_tables_huge_pages_and_whole_node_pods_ask_for_all_of_them(instance_type, tmp_path):
    # 110 pages of 2 MiB per vCPU (AWS's EFA installer, efa-config: 110 MB per libfabric endpoint, two per core),
    # the vCPUs from the instance table, reserved at boot before nodeadm starts the kubelet, never fewer than the
    # AMI already did; the pool exports them for a whole-node pod and tells Karpenter its nodes have them.
    from clouds.eks.karpenter import node_overlay
    pages = GPU_INSTANCES[instance_type].vcpus * 110
    gpu_pool, pool = efa_pool(instance_type)
    assert boot(pool.user_data, tmp_path, 0) == (pages, f"vm.nr_hugepages = {pages}\n")
    assert boot(pool.user_data, tmp_path, pages + 1) == (pages + 1, "")  # the EFA installer's count, kept
    assert "nvidia-ctk config --in-place" in pool.user_data
    assert gpu_pool.describe()["hugePages"] == {"hugepages-2Mi": f"{pages * 2}Mi"}
    assert node_overlay(pool) == {
        "requirements": [{"key": "karpenter.sh/nodepool", "operator": "In", "values": ["fabric"]},
                         {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type]}],
        "capacity": {"hugepages-2Mi": f"{pages * 2}Mi"}}


def test_pools_without_efa_reserve_no_huge_pages_and_their_nodes_are_not_drifted(dev, prod):
    # The userData of pools without EFA is what it was before huge pages (a changed one would replace their nodes).
    before = ('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="MLPLATFORM"\n\n--MLPLATFORM\n'
              'Content-Type: text/x-shellscript; charset="us-ascii"\n\n#!/bin/bash\nset -euo pipefail\n'
              "nvidia-ctk config --in-place \\\n  --set accept-nvidia-visible-devices-as-volume-mounts=true \\\n"
              "  --set accept-nvidia-visible-devices-envvar-when-unprivileged=false\n\n--MLPLATFORM--\n")
    _, classes = node_pools_and_classes(prod)
    assert classes["a10g"]["userData"] == before and "nr_hugepages" in classes["h100"]["userData"]
    for synthesis, efa_pool in ((dev, "a100-efa"), (prod, "h100")):
        described = {p["name"]: p for p in synthesis.outputs["gpuPools"]}
        assert described[efa_pool]["hugePages"]
        assert all(p["hugePages"] == {} for name, p in described.items() if name != efa_pool)
    # A stack without EFA pools gets no NodeOverlay, and Karpenter's alpha gate stays off.
    plain = synth_with(cluster=aws_cluster())
    assert not any(r.inputs.get("kind") == "NodeOverlay" for r in plain.resources)
    assert "nodeOverlay" not in releases(plain)["karpenter"].inputs["values"]["settings"]["featureGates"]


def test_karpenter_launches_efa_nodes_for_pods_that_ask_for_their_huge_pages(prod):
    # EC2 advertises no huge pages, and Karpenter launches a node only for what an instance type advertises
    # (aws/karpenter-provider-aws issue #3315): a NodeOverlay per EFA pool adds them, under its alpha gate.
    (overlay,) = [r for r in prod.resources if r.inputs.get("kind") == "NodeOverlay"]
    assert overlay.inputs["apiVersion"] == "karpenter.sh/v1alpha1" and overlay.inputs["metadata"]["name"] == "h100"
    assert overlay.inputs["spec"]["capacity"] == {"hugepages-2Mi": "42240Mi"}  # p5.48xlarge: 192 vCPUs x 110 x 2 MiB
    assert releases(prod)["karpenter"].inputs["values"]["settings"]["featureGates"] == {"nodeRepair": True,
                                                                                          "nodeOverlay": True}
    # Made once Karpenter and its CRDs are, as the NodePools are.
    node_pool = next(r for r in prod.resources if r.inputs.get("kind") == "NodePool"
                     and r.inputs["metadata"]["name"] == "h100")
    assert set(node_pool.depends_on) - {node_class.urn for node_class in prod.resources
                                        if node_class.inputs.get("kind") == "EC2NodeClass"} <= set(overlay.depends_on)


def test_karpenter_turns_node_overlays_on_in_its_1_14_1_chart():
    from synth import render
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    karpenter = stack_rendering("prod").releases["karpenter"]
    (deployment,) = [o for o in karpenter.objects if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for c in deployment["spec"]["template"]["spec"]["containers"] for e in c["env"]}
    assert {"NodeRepair=true", "NodeOverlay=true"} <= set(env["FEATURE_GATES"].split(",")), env["FEATURE_GATES"]
