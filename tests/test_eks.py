"""EKS: hardened control plane, managed add-ons, a system node group and Karpenter GPU pools from zero."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from components.cluster.aws_network import subnet_cidrs
from components.cluster.eks import kubeconfig
from versions import EKS_ADDON_VERSIONS, EKS_AMI_ALIAS, KARPENTER
from config.errors import ConfigError
from synth import synthesize
from synth.engine import Resource, Synthesis
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import synth_with


@pytest.fixture(scope="module")
def dev() -> Synthesis:
    return synthesize("dev")


@pytest.fixture(scope="module")
def prod() -> Synthesis:
    return synthesize("prod")


def one(synthesis: Synthesis, type_: str) -> Resource:
    (found,) = synthesis.of_type(type_)
    return found


def custom(synthesis: Synthesis, kind: str) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in synthesis.resources if r.inputs.get("kind") == kind}


# ---- control plane ------------------------------------------------------------------------------------------

def test_control_plane_encrypts_secrets_logs_and_uses_access_entries(dev):
    cluster = one(dev, "aws:eks/cluster:Cluster")
    key = one(dev, "aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    assert cluster.inputs["encryptionConfig"]["resources"] == ["secrets"]
    assert key.urn in cluster.depends_on  # its keyArn is the KMS key's, known once the key exists
    assert set(cluster.inputs["enabledClusterLogTypes"]) >= {"api", "audit", "authenticator"}
    assert cluster.inputs["accessConfig"]["authenticationMode"] == "API"
    assert cluster.inputs["version"] == "1.34"
    assert cluster.inputs["name"] == "ml-dev"


def test_dev_endpoint_is_public_only_to_listed_networks_and_prod_is_private(dev, prod):
    assert one(dev, "aws:eks/cluster:Cluster").inputs["vpcConfig"]["endpointPublicAccess"] is True
    assert one(dev, "aws:eks/cluster:Cluster").inputs["vpcConfig"]["publicAccessCidrs"] == ["203.0.113.0/24",
                                                                                       "198.51.100.16/28"]
    prod_vpc = one(prod, "aws:eks/cluster:Cluster").inputs["vpcConfig"]
    assert prod_vpc["endpointPublicAccess"] is False and prod_vpc["endpointPrivateAccess"] is True


def test_prod_admits_its_ci_runners_security_group_to_the_private_endpoint(prod):
    (rule,) = prod.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert rule.inputs["referencedSecurityGroupId"] == "sg-0123456789abcdef0"
    assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (443, 443)
    assert rule.parent.endswith("mlplatform:cluster:EksCluster::ml-prod")


def test_admin_roles_get_cluster_admin_through_access_entries(prod):
    entries = prod.of_type("aws:eks/accessEntry:AccessEntry")
    admins = {e.inputs["principalArn"] for e in entries if e.inputs["type"] == "STANDARD"}
    account = "arn:aws:iam::111122223333:role"
    assert admins == {f"{account}/ml-platform-admins", f"{account}/ml-platform-ci"}
    assert [e.inputs["type"] for e in entries].count("EC2_LINUX") == 1  # Karpenter's nodes
    for association in prod.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation"):
        assert association.inputs["policyArn"].endswith("/AmazonEKSClusterAdminPolicy")
        assert association.inputs["accessScope"] == {"type": "cluster"}


def test_prod_protects_control_plane_system_nodes_and_key_and_dev_does_not(dev, prod):
    for type_ in ("aws:eks/cluster:Cluster", "aws:eks/nodeGroup:NodeGroup", "aws:kms/key:Key"):
        assert one(prod, type_).protect and not one(dev, type_).protect


def test_everything_on_aws_goes_through_one_provider_in_the_configured_region(dev):
    (provider,) = dev.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    for resource in dev.resources:
        if resource.custom and resource.type.startswith("aws:"):
            assert resource.provider == provider.urn, resource.urn


# ---- add-ons and nodes ----------------------------------------------------------------------------------------

def test_managed_addons_are_pinned_and_the_cni_enforces_network_policies(dev):
    addons = {a.inputs["addonName"]: a.inputs for a in dev.of_type("aws:eks/addon:Addon")}
    assert {name: a["addonVersion"] for name, a in addons.items()} == EKS_ADDON_VERSIONS
    assert json.loads(addons["vpc-cni"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    (association,) = addons["aws-ebs-csi-driver"]["podIdentityAssociations"]
    assert association["serviceAccount"] == "ebs-csi-controller-sa"


def test_gp3_is_the_default_storage_class(dev):
    (storage,) = custom(dev, "StorageClass").values()
    assert storage["provisioner"] == "ebs.csi.aws.com" and storage["parameters"]["type"] == "gp3"
    assert storage["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_system_node_group_is_small_on_demand_and_labelled(dev):
    group = one(dev, "aws:eks/nodeGroup:NodeGroup").inputs
    assert group["capacityType"] == "ON_DEMAND" and group["amiType"] == "AL2023_x86_64_STANDARD"
    assert group["instanceTypes"] == ["m7i.large"]
    assert group["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 3}
    assert group["labels"] == {"mlplatform.io/pool": "system"}
    assert "taints" not in group


def test_kubernetes_is_installed_only_once_nodes_and_network_are_up(dev):
    (provider,) = dev.of_type("pulumi:providers:kubernetes")
    node_group = one(dev, "aws:eks/nodeGroup:NodeGroup")
    addons = {a.inputs["addonName"]: a.urn for a in dev.of_type("aws:eks/addon:Addon")}
    assert {node_group.urn, addons["coredns"], addons["vpc-cni"]} <= set(provider.depends_on)


def test_kubeconfig_authenticates_with_aws_eks_get_token():
    config = yaml.safe_load(kubeconfig("ml-dev", "us-east-1", "https://example.eks.amazonaws.com", "Q0E="))
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "aws"
    assert user["user"]["exec"]["args"][:4] == ["eks", "get-token", "--cluster-name", "ml-dev"]
    assert "--region" in user["user"]["exec"]["args"]
    assert config["clusters"][0]["cluster"]["server"] == "https://example.eks.amazonaws.com"


# ---- Karpenter GPU pools -----------------------------------------------------------------------------------------

def test_each_gpu_pool_is_a_tainted_labelled_capped_node_pool_that_scales_down(dev):
    pools = custom(dev, "NodePool")
    assert set(pools) == {"l4", "a10g-x4"}
    spec = pools["a10g-x4"]["spec"]
    template = spec["template"]["spec"]
    requirements = {r["key"]: r["values"] for r in template["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["g5.12xlarge"]
    assert requirements["karpenter.sh/capacity-type"] == ["spot", "on-demand"]
    assert template["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert spec["template"]["metadata"]["labels"]["mlplatform.io/accelerator"] == "nvidia-a10g"
    assert spec["template"]["metadata"]["labels"]["mlplatform.io/pool"] == "a10g-x4"
    assert spec["limits"] == {"nvidia.com/gpu": 4}  # 1 node of 4 GPUs
    assert spec["disruption"] == {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m"}
    assert template["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "a10g-x4"}


def test_node_classes_use_the_pinned_accelerated_ami_a_big_disk_and_imdsv2(prod):
    node_class = custom(prod, "EC2NodeClass")["h100"]["spec"]
    assert node_class["amiSelectorTerms"] == [{"alias": EKS_AMI_ALIAS}]
    assert node_class["role"] == "ml-prod-node"
    assert node_class["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "1000Gi"
    assert node_class["metadataOptions"]["httpTokens"] == "required"
    assert node_class["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "ml-prod"}}]


def test_karpenter_runs_on_system_nodes_with_pod_identity_and_an_interruption_queue(dev):
    (release,) = [r for r in dev.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "karpenter"]
    assert release.inputs["version"] == KARPENTER.version and release.inputs["namespace"] == "kube-system"
    assert release.inputs["values"]["nodeSelector"]["mlplatform.io/pool"] == "system"
    (queue,) = dev.of_type("aws:sqs/queue:Queue")
    assert queue.inputs["name"] == "ml-dev-karpenter" and queue.inputs["sqsManagedSseEnabled"] is True
    patterns = [json.loads(r.inputs["eventPattern"])["detail-type"][0]
                for r in dev.of_type("aws:cloudwatch/eventRule:EventRule")]
    assert "EC2 Spot Instance Interruption Warning" in patterns and "AWS Health Event" in patterns
    assert len(dev.of_type("aws:cloudwatch/eventTarget:EventTarget")) == len(patterns)
    identities = {i.inputs["serviceAccount"]: i.inputs for i in
                  dev.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")}
    assert identities["karpenter"]["namespace"] == "kube-system"
    nodeclass_urns = {r.urn for r in dev.resources if r.inputs.get("kind") in ("NodePool", "EC2NodeClass")}
    assert all(release.urn in dev.by_urn(urn).depends_on for urn in nodeclass_urns)


def test_karpenter_controller_may_read_only_its_own_queue_and_pass_only_the_node_role():
    from components.cluster.karpenter import controller_policy
    statements = {s["Sid"]: s for s in json.loads(controller_policy("arn:c", "arn:node", "arn:q"))["Statement"]}
    assert statements["Interruptions"]["Resource"] == "arn:q"
    assert statements["PassNodeRole"]["Resource"] == "arn:node"


def test_karpenter_values_exist_in_its_chart(dev, upstream):
    (release,) = [r for r in dev.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "karpenter"]
    assert unknown_keys(release.inputs["values"], chart_values(upstream, "karpenter"),
                        free_form={"nodeSelector", "controller.resources"}) == []


def test_the_device_plugin_is_installed_because_the_ami_has_drivers_but_no_plugin(dev):
    charts = {r.inputs["chart"] for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    assert {"nvidia-device-plugin", "dcgm-exporter"} <= charts and not any("fake" in c for c in charts)


# ---- network ---------------------------------------------------------------------------------------------------

def test_subnets_per_zone_with_the_tags_load_balancers_and_karpenter_need(dev):
    subnets = [s.inputs for s in dev.of_type("aws:ec2/subnet:Subnet")]
    private = [s for s in subnets if s["tags"].get("kubernetes.io/role/internal-elb") == "1"]
    public = [s for s in subnets if s["tags"].get("kubernetes.io/role/elb") == "1"]
    assert len(private) == len(public) == 3
    assert all(s["tags"]["karpenter.sh/discovery"] == "ml-dev" for s in private)
    assert {s["availabilityZone"] for s in private} == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1


def test_prod_has_a_nat_gateway_per_zone(prod):
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == 3


def test_subnet_cidrs_do_not_overlap():
    private, public = subnet_cidrs("10.0.0.0/16", 3)
    assert private == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    assert public == ["10.0.224.0/21", "10.0.232.0/21", "10.0.240.0/21"]


def aws_cluster(**overrides: Any) -> dict[str, Any]:
    return {"cloud": "aws", "name": "ml", "region": "eu-west-1", "availabilityZones": ["eu-west-1a", "eu-west-1b"],
            "gpuPools": [{"name": "l4", "instanceTypes": ["g6.xlarge"], "maxNodes": 2}]} | overrides


def test_existing_subnets_are_tagged_not_created():
    synthesis = synth_with(cluster=aws_cluster(network={
        "privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]}))
    assert synthesis.of_type("aws:ec2/vpc:Vpc") == [] and synthesis.of_type("aws:ec2/subnet:Subnet") == []
    tags = [t.inputs for t in synthesis.of_type("aws:ec2/tag:Tag") if t.inputs["key"] == "karpenter.sh/discovery"]
    assert {t.get("resourceId") for t in tags} >= {"subnet-0123456789abcdef0", "subnet-0123456789abcdef1"}


# ---- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"gpuPools": [{"name": "x", "instanceTypes": ["m7i.large"], "maxNodes": 1}]},
     "mlplatform:cluster.gpuPools[0].instanceTypes: 'm7i.large' is not a GPU instance type this platform knows"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g5.xlarge", "g6.xlarge"], "maxNodes": 1}]},
     "mlplatform:cluster.gpuPools[0].instanceTypes: g5.xlarge, g6.xlarge differ in GPU model or count"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g5.xlarge"], "maxNodes": 1, "sharing": {"migStrategy": "single"}}]},
     "mlplatform:cluster.gpuPools[0]: sharing.migStrategy 'single' needs a MIG-capable GPU, and nvidia-a10g has no"),
    ({"kubernetesVersion": "1.29"}, "mlplatform:cluster.kubernetesVersion: Kubernetes '1.29' is outside the "
                                    "supported window"),
    ({"availabilityZones": ["eu-west-1a"]}, "mlplatform:cluster.availabilityZones: 1 availability zone(s) given"),
    ({"availabilityZones": ["eu-west-1a", "us-east-1b"]}, "'us-east-1b' is not a zone of eu-west-1"),
    ({"network": {"vpcCidr": "10.0.0.0/33"}}, "mlplatform:cluster.network.vpcCidr: '10.0.0.0/33' is not a valid CIDR"),
    ({"endpoint": {"publicAccessCidrs": ["10.1.2.3/8"]}},
     "mlplatform:cluster.endpoint.publicAccessCidrs[0]: '10.1.2.3/8' is not a valid CIDR"),
    ({"environment": "prod", "endpoint": {"publicAccessCidrs": ["0.0.0.0/0"]}},
     "mlplatform:cluster: Value error, endpoint.publicAccessCidrs: a prod cluster's API endpoint may not be open"),
    ({"region": "Ireland"}, "mlplatform:cluster.region: 'Ireland' is not an AWS region"),
    ({"adminRoleArns": ["admins"]}, "mlplatform:cluster.adminRoleArns[0]: 'admins' is not an IAM role ARN"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g5.xlarge"], "maxNodes": 1, "consolidateAfter": "ten"}]},
     "mlplatform:cluster.gpuPools[0].consolidateAfter: 'ten' is not a Karpenter duration"),
])
def test_bad_eks_config(overrides, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=aws_cluster(**overrides))
    assert message.replace("Value error, ", "") in str(caught.value), str(caught.value)
