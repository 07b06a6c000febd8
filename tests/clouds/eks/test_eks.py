"""EKS: hardened control plane, managed add-ons, a system node group and Karpenter GPU pools from zero."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from clouds.eks.network import subnet_cidrs
from clouds.eks.cluster import kubeconfig
from versions import (EKS_ADDON_VERSIONS, EKS_AMI_ALIAS, EKS_KUBERNETES_VERSION, EKS_SYSTEM_AMI_RELEASES, KARPENTER,
                      SUPPORTED_KUBERNETES)
from config.errors import ConfigError
from synth import PROJECT_DIR, engine, synthesize
from synth.engine import RecordingMonitor, Resource, Synthesis, aws_session_context, run_program
from synth.applied import check_schemas
from synth.render import render_stack
from synth.stackfile import read_stack_config
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import aws_cluster, synth_with


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
    assert cluster.inputs["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
    assert cluster.inputs["accessConfig"]["authenticationMode"] == "API"
    assert cluster.inputs["version"] == EKS_KUBERNETES_VERSION
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
    account = "arn:aws:iam::111122223333:role"
    assert {e.inputs["principalArn"] for e in entries if e.inputs["type"] == "STANDARD"} == {
        f"{account}/ml-platform-admins", f"{account}/mlplatform-deploy", f"{account}/mlplatform-read"}
    assert [e.inputs["type"] for e in entries].count("EC2_LINUX") == 1  # Karpenter's nodes
    policies = {a.inputs["principalArn"]: a.inputs["policyArn"].rsplit("/", 1)[1]
                for a in prod.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    # The read role of drift checks reads everything and changes nothing.
    assert policies == {f"{account}/ml-platform-admins": "AmazonEKSClusterAdminPolicy",
                        f"{account}/mlplatform-deploy": "AmazonEKSClusterAdminPolicy",
                        f"{account}/mlplatform-read": "AmazonEKSAdminViewPolicy"}
    for association in prod.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation"):
        assert association.inputs["accessScope"] == {"type": "cluster"}


def test_the_creator_gets_no_implicit_entry_so_listing_the_ci_role_cannot_collide(prod):
    # terraform-aws-eks hard-codes bootstrap_cluster_creator_admin_permissions = false: with it true, the CI role
    # in adminRoleArns makes CreateAccessEntry fail with 409 ResourceInUseException on every run.
    access = one(prod, "aws:eks/cluster:Cluster").inputs["accessConfig"]
    assert access == {"authenticationMode": "API", "bootstrapClusterCreatorAdminPermissions": False}
    # The stack reaches the API only through its admin entries, so nothing is installed before they exist.
    (provider,) = prod.of_type("pulumi:providers:kubernetes")
    associations = {a.urn for a in prod.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
                    if a.inputs["policyArn"].endswith("/AmazonEKSClusterAdminPolicy")}
    assert len(associations) == 2 and associations <= set(provider.depends_on)


def admins(synthesis: Synthesis) -> dict[str, str]:
    return {a.name: a.inputs["principalArn"]
            for a in synthesis.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
            if a.inputs["policyArn"].endswith(":cluster-access-policy/AmazonEKSClusterAdminPolicy")}


def test_the_role_running_up_is_made_cluster_admin_so_the_first_up_can_install_anything():
    # The synth runs as a CI session of the deploy role (synth.engine.AWS_CALLER_ARN); this cluster lists another
    # role only. As terraform-aws-eks's enable_cluster_creator_admin_permissions: the caller's session, turned
    # into its role by iam.getSessionContext, gets an access entry with the cluster admin policy.
    synthesis = synth_with(cluster=aws_cluster())
    assert admins(synthesis) == {"ml-admin-0": "arn:aws:iam::111122223333:role/deployer",
                                 "ml-deployer": "arn:aws:iam::111122223333:role/mlplatform-deploy"}
    (entry,) = [e for e in synthesis.of_type("aws:eks/accessEntry:AccessEntry") if e.name == "ml-deployer"]
    assert entry.inputs["type"] == "STANDARD"
    (provider,) = synthesis.of_type("pulumi:providers:kubernetes")
    deployer = next(a for a in synthesis.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
                    if a.name == "ml-deployer")
    assert deployer.inputs["accessScope"] == {"type": "cluster"} and deployer.urn in provider.depends_on


@pytest.mark.parametrize("listed", ["arn:aws:iam::111122223333:role/mlplatform-deploy",
                                    "arn:aws:iam::111122223333:role/ci/mlplatform-deploy"])
def test_a_listed_deploying_role_keeps_its_one_entry_and_gets_no_second(listed):
    # Two entries for one principal would fail with 409; a role's path does not make it another role.
    synthesis = synth_with(cluster=aws_cluster(adminRoleArns=[listed]))
    assert admins(synthesis) == {"ml-admin-0": listed}


def access(synthesis: Synthesis) -> dict[str, tuple[str, str]]:
    return {a.name: (a.inputs["principalArn"], a.inputs["policyArn"].rsplit("/", 1)[1])
            for a in synthesis.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}


def test_the_example_stacks_list_the_ci_roles_the_same_way(dev, prod):
    # CI deploys as one role, previews pull requests (dev only: prod is previewed by code on main) as a
    # role that sees no Secrets, and checks drift as one that reads everything and changes nothing.
    account = "arn:aws:iam::111122223333:role"
    people_and_deploy = {(f"{account}/ml-platform-admins", "AmazonEKSClusterAdminPolicy"),
                         (f"{account}/mlplatform-deploy", "AmazonEKSClusterAdminPolicy"),
                         (f"{account}/mlplatform-read", "AmazonEKSAdminViewPolicy")}
    assert set(access(dev).values()) == people_and_deploy | {(f"{account}/mlplatform-preview", "AmazonEKSViewPolicy")}
    assert set(access(prod).values()) == people_and_deploy


# Prod is never previewed by the pull-request role.
@pytest.mark.parametrize(("stack", "role"), [("dev", "mlplatform-preview"), ("dev", "mlplatform-read"),
                                             ("prod", "mlplatform-read")])
def test_a_preview_by_a_read_only_role_plans_the_same_access_entries_as_the_deploy(stack, role, monkeypatch, request):
    # Drift checks preview with --expect-no-changes as the read role, pull requests as the preview role: were
    # either unlisted, every preview would plan a deployer entry of its own and report drift.
    deployed = access(request.getfixturevalue(stack))
    monkeypatch.setattr(engine, "AWS_CALLER_ARN", f"arn:aws:sts::111122223333:assumed-role/{role}/ci")
    assert access(synthesize(stack)) == deployed


def test_session_context_turns_a_session_into_its_role_and_passes_other_principals_through():
    session = aws_session_context("arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_Admin_0a1b/jane@example.com")
    assert session["issuerArn"] == "arn:aws:iam::111122223333:role/AWSReservedSSO_Admin_0a1b"
    assert session["sessionName"] == "jane@example.com"
    user = "arn:aws:iam::111122223333:user/jane"
    assert aws_session_context(user)["issuerArn"] == user


def test_managed_policy_arns_are_in_the_partition_of_the_credentials(monkeypatch):
    monkeypatch.setattr(engine, "AWS_CALLER_ARN", "arn:aws-us-gov:sts::111122223333:assumed-role/deploy/ci")
    synthesis = synth_with(cluster=aws_cluster(region="us-gov-west-1",
                                               availabilityZones=["us-gov-west-1a", "us-gov-west-1b"],
                                               adminRoleArns=["arn:aws-us-gov:iam::111122223333:role/admins"]))
    arns = [a.inputs["policyArn"] for a in synthesis.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")]
    arns += [a.inputs["policyArn"]
             for a in synthesis.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")]
    assert arns and all(arn.startswith("arn:aws-us-gov:") for arn in arns), arns


def test_a_cluster_made_with_the_creator_flag_or_self_managed_addons_is_kept_not_replaced(dev, prod):
    # EKS reads both at creation only and the provider replaces the cluster when either changes: a stack made
    # before they were set would lose its cluster on the next up (terraform-aws-eks ignores them the same way).
    for synthesis in (dev, prod):
        cluster = one(synthesis, "aws:eks/cluster:Cluster")
        assert set(cluster.ignore_changes) == {"accessConfig.bootstrapClusterCreatorAdminPermissions",
                                               "bootstrapSelfManagedAddons"}


def test_a_deployer_inside_the_network_keeps_its_way_to_the_api_until_everything_on_the_cluster_is_gone(prod):
    # prod deploys through its private endpoint, admitted by an HTTPS rule on the cluster security group: the
    # provider waits for the rule, so nothing is installed before it exists and a destroy deletes it last.
    rules = {r.urn for r in prod.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if "-api-from-" in r.name}
    (provider,) = prod.of_type("pulumi:providers:kubernetes")
    assert rules and rules <= set(provider.depends_on)


def test_an_eks_stack_must_name_the_role_that_deploys_it():
    with pytest.raises(ConfigError, match="adminRoleArns: required key is missing"):
        synth_with(cluster={k: v for k, v in aws_cluster().items() if k != "adminRoleArns"})


def test_prod_protects_control_plane_and_key_and_dev_does_not(dev, prod):
    for type_ in ("aws:eks/cluster:Cluster", "aws:kms/key:Key", "aws:cloudwatch/logGroup:LogGroup"):
        assert one(prod, type_).protect and not one(dev, type_).protect
    # EKS's own guard too: a prod cluster cannot be deleted until deletion protection is turned off.
    assert one(prod, "aws:eks/cluster:Cluster").inputs["deletionProtection"] is True
    assert one(dev, "aws:eks/cluster:Cluster").inputs["deletionProtection"] is False


def test_clusters_stay_on_standard_support_unless_asked(dev, eks_options):
    assert one(dev, "aws:eks/cluster:Cluster").inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    assert one(eks_options, "aws:eks/cluster:Cluster").inputs["upgradePolicy"] == {"supportType": "EXTENDED"}


def test_control_plane_logs_go_to_our_log_group_with_a_retention(dev, prod):
    group = one(dev, "aws:cloudwatch/logGroup:LogGroup")
    assert group.inputs["name"] == "/aws/eks/ml-dev/cluster"  # the name EKS writes to
    assert group.inputs["retentionInDays"] == 90
    assert group.urn in one(dev, "aws:eks/cluster:Cluster").depends_on  # ours exists before EKS logs a line
    assert one(prod, "aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 365
    # Nor can EKS make it again behind a destroy (terraform-aws-eks issue #920).
    (deny,) = [p for p in dev.of_type("aws:iam/rolePolicy:RolePolicy") if p.name.endswith("-no-log-group")]
    assert json.loads(deny.inputs["policy"])["Statement"] == [
        {"Effect": "Deny", "Action": "logs:CreateLogGroup", "Resource": "*"}]
    assert deny.urn in one(dev, "aws:eks/cluster:Cluster").depends_on


def test_the_voluminous_control_plane_logs_are_sent_only_when_asked():
    # CloudWatch bills every GB ingested; controllerManager and scheduler logs are for debugging EKS itself.
    every = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    synthesis = synth_with(cluster=aws_cluster(controlPlaneLogs=every))
    assert one(synthesis, "aws:eks/cluster:Cluster").inputs["enabledClusterLogTypes"] == every
    with pytest.raises(ConfigError, match="controlPlaneLogs"):
        synth_with(cluster=aws_cluster(controlPlaneLogs=["kubelet"]))


def test_the_secrets_key_lets_the_cluster_role_use_it_and_has_an_alias(dev):
    from clouds.eks.cluster import secrets_key_policy
    role = "arn:aws:iam::111122223333:role/ml-dev-cluster-1234"
    by_sid = {s["Sid"]: s for s in json.loads(secrets_key_policy(role))["Statement"]}
    assert by_sid["AccountAdministers"]["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert by_sid["ClusterEncryptsSecrets"]["Principal"] == {"AWS": role}
    assert {"kms:Encrypt", "kms:Decrypt"} <= set(by_sid["ClusterEncryptsSecrets"]["Action"])
    key, cluster_role = one(dev, "aws:kms/key:Key"), next(
        r for r in dev.of_type("aws:iam/role:Role") if r.name == "ml-dev-cluster")
    assert cluster_role.urn in key.depends_on  # the policy names the cluster role's real ARN
    alias = one(dev, "aws:kms/alias:Alias")
    assert alias.inputs["name"] == "alias/eks/ml-dev" and key.urn in alias.depends_on


def test_everything_on_aws_goes_through_one_provider_in_the_configured_region(dev):
    (provider,) = dev.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    for resource in dev.resources:
        if resource.custom and resource.type.startswith("aws:"):
            assert resource.provider == provider.urn, resource.urn


# ---- add-ons and nodes ----------------------------------------------------------------------------------------

def test_managed_addons_are_pinned_and_the_cni_enforces_network_policies(dev):
    addons = {a.inputs["addonName"]: a.inputs for a in dev.of_type("aws:eks/addon:Addon")}
    assert {name: a["addonVersion"] for name, a in addons.items()} == EKS_ADDON_VERSIONS[EKS_KUBERNETES_VERSION]
    assert json.loads(addons["vpc-cni"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    (association,) = addons["aws-ebs-csi-driver"]["podIdentityAssociations"]
    assert association["serviceAccount"] == "ebs-csi-controller-sa"


def test_new_clusters_get_the_newest_minor_pinned_and_1_35_and_1_36_have_pins():
    # 1.34 left EKS standard support on 2 Dec 2026, and EKS then upgrades a cluster itself: the stack must be able
    # to name the minor EKS moved it to, and the one after.
    pinned = sorted(set(EKS_ADDON_VERSIONS) & set(EKS_SYSTEM_AMI_RELEASES), key=lambda v: tuple(map(int, v.split("."))))
    assert {"1.35", "1.36"} <= set(pinned) and EKS_KUBERNETES_VERSION == pinned[-1]
    low, high = (tuple(map(int, v.split("."))) for v in SUPPORTED_KUBERNETES)
    for minor in pinned:
        assert low <= tuple(map(int, minor.split("."))) <= high
        # A system AMI and a kube-proxy built for that minor (amazon-eks-ami's CHANGELOG; the EKS User Guide).
        assert EKS_SYSTEM_AMI_RELEASES[minor].startswith(f"{minor}.")
        assert EKS_ADDON_VERSIONS[minor]["kube-proxy"].startswith(f"v{minor}.")


@pytest.mark.parametrize("minor", ["1.35", "1.36"])
def test_a_cluster_on_each_new_minor_gets_its_pins_and_everything_applied_passes_that_minor_s_schemas(minor, upstream):
    synthesis = synth_with(cluster=aws_cluster(kubernetesVersion=minor))
    assert one(synthesis, "aws:eks/cluster:Cluster").inputs["version"] == minor
    assert one(synthesis, "aws:eks/nodeGroup:NodeGroup").inputs["releaseVersion"] == EKS_SYSTEM_AMI_RELEASES[minor]
    addons = {a.inputs["addonName"]: a.inputs["addonVersion"] for a in synthesis.of_type("aws:eks/addon:Addon")}
    assert addons == EKS_ADDON_VERSIONS[minor]
    # Every chart renders for it (Helm enforces the charts' kubeVersion ranges), and every object applied, ours
    # and the charts', passes that minor's strict schemas.
    rendering = render_stack(synthesis)
    assert rendering.kubernetes_version == f"v{minor}.0" and not rendering.unavailable
    report = check_schemas(synthesis, rendering)
    assert report.errors == [] and report.unchecked == [], report.errors + report.unchecked


def test_gp3_is_the_default_storage_class(dev):
    (storage,) = custom(dev, "StorageClass").values()
    assert storage["provisioner"] == "ebs.csi.aws.com" and storage["parameters"]["type"] == "gp3"
    assert storage["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"


def test_volumes_of_claims_carry_the_cost_tags_instances_do(dev):
    # Prometheus's and the teams' volumes are made by the EBS CSI driver, which no default tag of the provider
    # reaches: the StorageClass has it tag them.
    (storage,) = custom(dev, "StorageClass").values()
    tags = dict(value.split("=", 1) for key, value in storage["parameters"].items()
                if key.startswith("tagSpecification_"))
    assert tags == {"mlplatform.io/cluster": "ml-dev", "mlplatform.io/environment": "dev"}


def test_system_node_group_is_small_on_demand_and_labelled(dev):
    group = one(dev, "aws:eks/nodeGroup:NodeGroup").inputs
    assert group["capacityType"] == "ON_DEMAND" and group["amiType"] == "AL2023_x86_64_STANDARD"
    assert group["scalingConfig"] == {"minSize": 2, "desiredSize": 2, "maxSize": 2}  # Karpenter adds the rest
    assert group["labels"] == {"mlplatform.io/pool": "system"}
    # Tainted for the platform's controllers and EKS's add-ons, which tolerate CriticalAddonsOnly (issue 24).
    assert group["taints"] == [{"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}]
    # Its AMI release is pinned (amazon-eks-ami's release version), as the GPU pools' alias is.
    assert group["releaseVersion"] == EKS_SYSTEM_AMI_RELEASES[EKS_KUBERNETES_VERSION]


class OptionsMonitor(RecordingMonitor):
    """The synth's monitor, also keeping the resource options the Synthesis leaves out."""

    def __init__(self) -> None:
        super().__init__()
        self.options: dict[str, tuple[list[str], bool]] = {}

    def RegisterResource(self, request):  # noqa: N802 (the engine's gRPC method name)
        response = super().RegisterResource(request)
        self.options[response.urn] = (list(request.ignoreChanges), bool(request.deleteBeforeReplace))
        return response


def test_replace_only_changes_of_the_system_group_can_happen_and_raising_min_nodes_works():
    config, secrets = read_stack_config(PROJECT_DIR, "prod")
    monitor = OptionsMonitor()
    from stacks import main
    prod = run_program(main, project="mlplatform", stack="prod", config=config, secret_keys=secrets,
                       monitor=monitor)
    group = one(prod, "aws:eks/nodeGroup:NodeGroup")
    # A name prefix, not a fixed name: a replacement is created beside the old group ("NodeGroup already
    # exists" otherwise), and nothing protects the old one from the delete that follows.
    assert group.inputs["nodeGroupNamePrefix"] == "ml-prod-system-" and "nodeGroupName" not in group.inputs
    assert not group.protect and monitor.options[group.urn] == ([], False)  # create before delete; no ignores
    # Instance type, IMDS and disk in a launch template: changing them rolls nodes in place.
    template = one(prod, "aws:ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["instanceType"] == "m7i.xlarge" and "instanceTypes" not in group.inputs
    assert template.inputs["metadataOptions"]["httpTokens"] == "required"
    assert template.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    assert template.urn in group.depends_on
    # The stack owns the desired size (nothing else moves it), so raising minNodes adds nodes instead of
    # failing with "desired size below minimum".
    assert group.inputs["scalingConfig"]["desiredSize"] == group.inputs["scalingConfig"]["minSize"] == 3


def test_kubernetes_is_installed_only_once_nodes_and_network_are_up(dev):
    (provider,) = dev.of_type("pulumi:providers:kubernetes")
    node_group = one(dev, "aws:eks/nodeGroup:NodeGroup")
    addons = {a.inputs["addonName"]: a.urn for a in dev.of_type("aws:eks/addon:Addon")}
    assert {node_group.urn, addons["coredns"], addons["vpc-cni"]} <= set(provider.depends_on)
    # And on destroy, volumes (Prometheus's) are deleted while the EBS CSI driver and its rights still exist.
    ebs_policy = next(a.urn for a in dev.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                      if a.name.endswith("-ebs-csi"))
    assert addons["aws-ebs-csi-driver"] in provider.depends_on
    assert ebs_policy in dev.by_urn(addons["aws-ebs-csi-driver"]).depends_on


def test_kubeconfig_authenticates_with_aws_eks_get_token():
    config = yaml.safe_load(kubeconfig("ml-dev", "us-east-1", "https://example.eks.amazonaws.com", "Q0E="))
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "aws"
    assert user["user"]["exec"]["args"][:4] == ["eks", "get-token", "--cluster-name", "ml-dev"]
    assert "--region" in user["user"]["exec"]["args"]
    assert config["clusters"][0]["cluster"]["server"] == "https://example.eks.amazonaws.com"


# ---- Karpenter GPU pools -----------------------------------------------------------------------------------------

def test_the_system_pool_is_tainted_and_teams_cpu_work_has_an_untainted_pool_of_its_own(dev):
    # Issue 24: the system pool had no taint, so teams' CPU pods landed beside the platform's controllers.
    pools = custom(dev, "NodePool")
    system, cpu = pools["system"]["spec"], pools["cpu"]["spec"]
    assert system["template"]["spec"]["taints"] == [
        {"key": "CriticalAddonsOnly", "value": "true", "effect": "NoSchedule"}]
    assert "taints" not in cpu["template"]["spec"] or cpu["template"]["spec"]["taints"] == []
    assert cpu["template"]["metadata"]["labels"]["mlplatform.io/pool"] == "cpu"
    assert cpu["limits"] == {"nodes": 4}
    assert cpu["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    requirements = {r["key"]: r["values"] for r in cpu["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["m7i.xlarge", "m7i.2xlarge", "m7i.4xlarge"]
    # Karpenter itself tolerates CriticalAddonsOnly by its chart's default, which the stack leaves in place.
    karpenter = next(r for r in dev.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "karpenter")
    assert "tolerations" not in karpenter.inputs["values"]


def test_each_gpu_pool_is_a_tainted_labelled_capped_node_pool_that_scales_down(dev):
    pools = custom(dev, "NodePool")
    assert set(pools) == {"l4", "a10g-x4", "a100-efa", "system", "cpu"}
    spec = pools["a10g-x4"]["spec"]
    template = spec["template"]["spec"]
    requirements = {r["key"]: r["values"] for r in template["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["g5.12xlarge"]
    assert requirements["karpenter.sh/capacity-type"] == ["spot", "on-demand"]
    assert template["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    assert spec["template"]["metadata"]["labels"]["mlplatform.io/accelerator"] == "nvidia-a10g"
    assert spec["template"]["metadata"]["labels"]["mlplatform.io/pool"] == "a10g-x4"
    assert spec["limits"] == {"nvidia.com/gpu": 8}  # 2 nodes of 4 GPUs
    assert spec["disruption"] == {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "5m",
                                  "budgets": [{"nodes": "1"}]}
    assert template["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "a10g-x4"}


def test_a_time_sliced_pool_s_burst_nodes_are_repacked_and_removed_and_whole_gpu_pods_are_never_moved(dev):
    # dev's l4 pool shares each GPU between 2 pods. Karpenter plans share pods as whole GPUs (g6 advertises one
    # nvidia.com/gpu), so 4 pending share pods start 4 nodes, and the scheduler spreads them one per node: only
    # consolidation of underutilized nodes, which sees the nodes' real shares, brings that back to 2 nodes.
    pools = custom(dev, "NodePool")
    assert pools["l4"]["spec"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    # Nor can more nodes start than the pool's physical GPUs allow (the limit is in GPUs, not shares).
    assert pools["l4"]["spec"]["limits"] == {"nvidia.com/gpu": 4}
    assert pools["a10g-x4"]["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"


def test_gpu_nodes_never_expire_under_a_job_and_go_one_at_a_time(dev, prod):
    # Expiry is forceful and no budget limits it (Karpenter v1.14, concepts/disruption.md): a GPU node at its
    # 30th day would take its training job down. The default budget (10% of nodes) lets a small pool's nodes
    # all drift away at once after an AMI bump.
    for synthesis in (dev, prod):
        pools = custom(synthesis, "NodePool")
        for name, pool in pools.items():
            if name in ("system", "cpu"):  # stateless controllers, CPU work: replaced monthly, as Karpenter defaults
                assert pool["spec"]["template"]["spec"]["expireAfter"] == "720h"
                continue
            assert pool["spec"]["template"]["spec"]["expireAfter"] == "Never", name
            assert pool["spec"]["disruption"]["budgets"] == [{"nodes": "1"}], name


def test_node_classes_use_the_pinned_accelerated_ami_and_imdsv2(prod):
    node_class = custom(prod, "EC2NodeClass")["h100"]["spec"]
    assert node_class["amiSelectorTerms"] == [{"alias": EKS_AMI_ALIAS}]
    assert node_class["role"] == "ml-prod-us-east-1-karpenter"
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
    assert len(dev.of_type("aws:cloudwatch/eventTarget:EventTarget")) == len(patterns) == 5
    identities = {i.inputs["serviceAccount"]: i.inputs for i in
                  dev.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")}
    assert identities["karpenter"]["namespace"] == "kube-system"
    nodeclass_urns = {r.urn for r in dev.resources if r.inputs.get("kind") in ("NodePool", "EC2NodeClass")}
    assert all(release.urn in dev.by_urn(urn).depends_on for urn in nodeclass_urns)


def test_karpenter_values_exist_in_its_chart(dev, upstream):
    (release,) = [r for r in dev.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "karpenter"]
    assert unknown_keys(release.inputs["values"], chart_values(upstream, "karpenter"),
                        free_form={"nodeSelector", "controller.resources"}) == []


def test_the_device_plugin_is_installed_because_the_ami_has_drivers_but_no_plugin(dev):
    charts = {r.inputs["chart"] for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    assert {"nvidia-device-plugin", "dcgm-exporter"} <= charts and not any("fake" in c for c in charts)


def test_gpu_nodes_hand_out_gpus_by_mounts_only_so_no_environment_variable_reaches_another_gpu(dev):
    # The device plugin's volume-mounts strategy and the toolkit set to match on every GPU node: a container
    # that sets (or inherits from its CUDA image) NVIDIA_VISIBLE_DEVICES=all gets no GPU it did not request.
    (plugin,) = [r for r in dev.releases() if r.inputs["chart"] == "nvidia-device-plugin"]
    assert plugin.inputs["values"]["deviceListStrategy"] == "volume-mounts"
    classes = custom(dev, "EC2NodeClass")
    gpu_pools = {name for name, pool in custom(dev, "NodePool").items()
                 if any(t["key"] == "nvidia.com/gpu" for t in pool["spec"]["template"]["spec"]["taints"])}
    assert gpu_pools and set(classes) >= gpu_pools
    for name, node_class in classes.items():
        script = node_class["spec"].get("userData", "")
        if name in gpu_pools:
            assert "nvidia-ctk config --in-place" in script
            assert "--set accept-nvidia-visible-devices-as-volume-mounts=true" in script
            assert "--set accept-nvidia-visible-devices-envvar-when-unprivileged=false" in script
            assert script.startswith("MIME-Version: 1.0") and 'Content-Type: text/x-shellscript' in script
        else:
            assert script == ""  # the system pool's overflow has no GPUs


# ---- network ---------------------------------------------------------------------------------------------------

def test_subnets_per_zone_with_the_tags_load_balancers_need(dev):
    subnets = [s.inputs for s in dev.of_type("aws:ec2/subnet:Subnet")]
    private = [s for s in subnets if s["tags"].get("kubernetes.io/role/internal-elb") == "1"]
    public = [s for s in subnets if s["tags"].get("kubernetes.io/role/elb") == "1"]
    assert len(private) == len(public) == 3
    assert {s["availabilityZone"] for s in private} == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1


def test_s3_is_reached_through_a_free_gateway_endpoint_and_ecr_and_sts_optionally_too(dev, eks_options):
    (s3,) = dev.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert s3.inputs["serviceName"] == "com.amazonaws.us-east-1.s3" and s3.inputs["vpcEndpointType"] == "Gateway"
    private_routes = {r.urn for r in dev.of_type("aws:ec2/routeTable:RouteTable") if "private" in r.name}
    assert len(private_routes) == 3 and private_routes <= set(s3.depends_on)
    with_interfaces = eks_options
    interfaces = {e.inputs["serviceName"]: e.inputs for e in with_interfaces.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
                  if e.inputs["vpcEndpointType"] == "Interface"}
    assert set(interfaces) == {f"com.amazonaws.eu-west-1.{s}" for s in ("ecr.api", "ecr.dkr", "eks-auth", "sts")}
    assert all(e["privateDnsEnabled"] is True for e in interfaces.values())
    (group,) = with_interfaces.of_type("aws:ec2/securityGroup:SecurityGroup")
    assert group.inputs["ingress"][0]["fromPort"] == 443 and group.inputs["ingress"][0]["cidrBlocks"] == ["10.0.0.0/16"]


def test_prod_has_a_nat_gateway_per_zone(prod):
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == 3


def test_subnet_cidrs_do_not_overlap():
    private, public = subnet_cidrs("10.0.0.0/16", 3)
    assert private == ["10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19"]
    assert public == ["10.0.224.0/21", "10.0.232.0/21", "10.0.240.0/21"]


def test_existing_subnets_are_tagged_for_load_balancers_and_taken_by_id_not_by_another_clusters_tag():
    private, public = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"], ["subnet-0123456789abcdef2"]
    synthesis = synth_with(cluster=aws_cluster(network={"privateSubnetIds": private, "publicSubnetIds": public}))
    assert synthesis.of_type("aws:ec2/vpc:Vpc") == [] and synthesis.of_type("aws:ec2/subnet:Subnet") == []
    tags = {(t.inputs["resourceId"], t.inputs["key"]): t.inputs["value"] for t in synthesis.of_type("aws:ec2/tag:Tag")
            if t.inputs.get("resourceId", "").startswith("subnet-")}
    assert {s for (s, key) in tags if key == "kubernetes.io/role/internal-elb"} == set(private)
    assert {s for (s, key) in tags if key == "kubernetes.io/role/elb"} == set(public)
    assert {s for (s, key) in tags if key == "kubernetes.io/cluster/ml"} == set(private + public)
    # Karpenter's discovery tag may belong to another cluster in this VPC: never written, subnets go by ID.
    assert not any(key == "karpenter.sh/discovery" for (_, key) in tags)
    node_class = custom(synthesis, "EC2NodeClass")["l4"]
    assert node_class["spec"]["subnetSelectorTerms"] == [{"id": subnet} for subnet in private]


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
    ({"kubernetesVersion": "1.33"}, "mlplatform:cluster.kubernetesVersion: Kubernetes 1.33 has no pinned EKS add-on "
                                    "versions and system AMI release in versions.py (EKS_ADDON_VERSIONS, "
                                    "EKS_SYSTEM_AMI_RELEASES); on EKS give one of 1.34, 1.35, 1.36"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 1,
                    "sharing": {"migStrategy": "mixed"}}]},
     "mlplatform:cluster.gpuPools[0]: sharing.migStrategy 'mixed': MIG is not available on EKS pools"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g5.xlarge"], "maxNodes": 1, "efa": True}]},
     "mlplatform:cluster.gpuPools[0]: efa: g5.xlarge have no Elastic Fabric Adapter; EFA-capable nvidia-a10g types: "
     "g5.16xlarge, g5.8xlarge"),
    # p5e and p5en both carry 8 H200s, but 32 and 16 EFA interfaces: a whole-node pod could ask for only one.
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5e.48xlarge", "p5en.48xlarge"], "maxNodes": 2, "efa": True}]},
     "mlplatform:cluster.gpuPools[0]: efa: p5e.48xlarge, p5en.48xlarge have 16 or 32 EFA interfaces; an EFA pool "
     "has one count"),
    # g5.12xlarge and g5.24xlarge both carry 4 A10Gs and one EFA interface, but 48 and 96 vCPUs: their nodes
    # reserve different huge pages, and a whole-node pod asks for one count.
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g5.12xlarge", "g5.24xlarge"], "maxNodes": 2, "efa": True}]},
     "mlplatform:cluster.gpuPools[0]: efa: g5.12xlarge, g5.24xlarge have 48 or 96 vCPUs, so their nodes reserve "
     "5280 or 10560 huge pages for EFA; an EFA pool has one count"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 1, "capacityTypes": ["reserved"]}]},
     "mlplatform:cluster.gpuPools[0]: capacityTypes 'reserved' and capacityReservationIds go together"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 1, "capacityReservationIds": ["r1"]}]},
     "mlplatform:cluster.gpuPools[0].capacityReservationIds[0]: 'r1' is not a capacity reservation ID"),
    # Karpenter can launch no node for nvidia.com/gpu.shared: what the pool would advertise, no instance type has.
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g6.xlarge"], "maxNodes": 1,
                    "sharing": {"timeSlicing": {"replicas": 4, "renameByDefault": True}}}]},
     "mlplatform:cluster.gpuPools[0]: sharing.timeSlicing.renameByDefault: Karpenter launches EKS GPU nodes only "
     "for nvidia.com/gpu"),
    # The endpoints are made in a VPC of ours only: with existing subnets the option would do nothing.
    ({"network": {"privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                  "interfaceEndpoints": True}},
     "mlplatform:cluster.network: interfaceEndpoints shape a new VPC, and privateSubnetIds use an existing one"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 1, "diskSizeGib": 1000}]},
     "mlplatform:cluster.gpuPools[0]: diskSizeGib: p5.48xlarge have NVMe instance store"),
    ({"logRetentionDays": 100}, "mlplatform:cluster.logRetentionDays: 100 is not a retention CloudWatch Logs accepts"),
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
    # An EFA pool's one zone (its cluster placement group's) must be one the cluster has subnets in.
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True,
                    "zone": "eu-west-1c"}]},
     "mlplatform:cluster: Value error, gpuPools[0].zone: 'eu-west-1c' is not one of availabilityZones "
     "(eu-west-1a, eu-west-1b)"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["g6.xlarge"], "maxNodes": 1, "zone": "eu-west-1b"}]},
     "mlplatform:cluster.gpuPools[0]: zone: only EFA pools are held to one zone"),
    # On existing subnets an EFA pool names its subnet: the stack cannot learn their zones, and Karpenter launches
    # only in the zones of a node class's subnets; on a new VPC, and for pools without EFA, zone rules instead.
    ({"network": {"privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]},
      "gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True}]},
     "mlplatform:cluster: Value error, gpuPools[0].subnetId: an EFA pool on existing subnets names the one its nodes "
     "go in (its placement group is one zone's, and the stack cannot look up the zones of network.privateSubnetIds): "
     "give one of subnet-0123456789abcdef0, subnet-0123456789abcdef1"),
    ({"network": {"privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]},
      "gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True,
                    "subnetId": "subnet-0123456789abcdef9"}]},
     "mlplatform:cluster: Value error, gpuPools[0].subnetId: subnet-0123456789abcdef9 is not one of "
     "network.privateSubnetIds (subnet-0123456789abcdef0, subnet-0123456789abcdef1)"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True,
                    "subnetId": "subnet-0123456789abcdef0"}]},
     "mlplatform:cluster: Value error, gpuPools[0].subnetId: the cluster makes its own VPC (no "
     "network.privateSubnetIds), with one private subnet per zone: remove subnetId, and give the pool's zone"),
    ({"network": {"privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]},
      "gpuPools": [{"name": "x", "instanceTypes": ["g6.xlarge"], "maxNodes": 1,
                    "subnetId": "subnet-0123456789abcdef0"}]},
     "mlplatform:cluster.gpuPools[0]: subnetId: only EFA pools are held to one subnet"),
    ({"network": {"privateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]},
      "gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True,
                    "zone": "eu-west-1b", "subnetId": "subnet-0123456789abcdef0"}]},
     "mlplatform:cluster.gpuPools[0]: zone and subnetId: the subnet subnet-0123456789abcdef0 decides the pool's "
     "zone, which the stack cannot check against zone: remove zone"),
    ({"gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True,
                    "subnetId": "subnet-x"}]},
     "mlplatform:cluster.gpuPools[0].subnetId: 'subnet-x' is not a subnet ID"),
    # The EFA device plugin's image is pulled from EKS's registry in the stack's region: none known, refused.
    ({"region": "eu-west-9", "availabilityZones": ["eu-west-9a", "eu-west-9b"],
      "gpuPools": [{"name": "x", "instanceTypes": ["p5.48xlarge"], "maxNodes": 2, "efa": True}]},
     "mlplatform:cluster: Value error, gpuPools: EFA pools need the EFA device plugin's image from EKS's registry "
     "in eu-west-9, whose account versions.py does not know (EKS_ECR_ACCOUNTS)"),
])
def test_bad_eks_config(overrides, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=aws_cluster(**overrides))
    assert message.replace("Value error, ", "") in str(caught.value), str(caught.value)


# The vpc.amazonaws.com/efa Karpenter v1.14.1 gives each type (website/content/en/docs/reference/instance-types.md),
# and GPUDirect RDMA on p4/p5 only (aws/aws-ofi-nccl doc/efa-env-var.md): a whole-node pod asks for that many.
@pytest.mark.parametrize(("instance_type", "interfaces", "rdma"), [
    ("p4d.24xlarge", 4, True), ("p4de.24xlarge", 4, True), ("p5.48xlarge", 32, True), ("p5e.48xlarge", 32, True),
    ("p5en.48xlarge", 16, True), ("g5.48xlarge", 1, False), ("g6.8xlarge", 1, False), ("g4dn.metal", 1, False),
    ("g6e.24xlarge", 2, False), ("g6e.48xlarge", 4, False), ("g5.4xlarge", 0, False), ("p3.16xlarge", 0, False),
])
def test_each_instance_type_knows_its_efa_interfaces_and_whether_they_carry_gpu_memory(instance_type, interfaces,
                                                                                        rdma):
    from clouds.eks.config import GPU_INSTANCES
    instance = GPU_INSTANCES[instance_type]
    assert (instance.efa_interfaces, instance.efa, instance.gpudirect_rdma) == (interfaces, interfaces > 0, rdma)


# vCPUs as Karpenter v1.14.1 gives each type (website/content/en/docs/reference/instance-types.md,
# karpenter.k8s.aws/instance-cpu; p3 from its v1.0 page), and the 2 MiB huge pages an EFA node reserves: 110 per vCPU.
@pytest.mark.parametrize(("instance_type", "vcpus", "huge_pages"), [
    ("p5.48xlarge", 192, 21120), ("p5e.48xlarge", 192, 21120), ("p5en.48xlarge", 192, 21120),
    ("p4d.24xlarge", 96, 10560), ("p4de.24xlarge", 96, 10560), ("g6e.48xlarge", 192, 21120),
    ("g6e.24xlarge", 96, 10560), ("g5.12xlarge", 48, 5280), ("g6.8xlarge", 32, 3520), ("g4dn.metal", 96, 10560),
    ("g4dn.16xlarge", 64, 7040), ("g5.4xlarge", 16, 0), ("p3.16xlarge", 64, 0), ("p3.2xlarge", 8, 0),
])
def test_each_instance_type_knows_its_vcpus_and_the_huge_pages_efa_reserves_on_it(instance_type, vcpus, huge_pages):
    from clouds.eks.config import GPU_INSTANCES
    instance = GPU_INSTANCES[instance_type]
    assert (instance.vcpus, instance.efa_huge_pages) == (vcpus, huge_pages)


def test_system_nodes_carry_the_cost_tags_the_gpu_pools_do(dev):
    template = one(dev, "aws:ec2/launchTemplate:LaunchTemplate").inputs
    tagged = {spec["resourceType"]: spec["tags"] for spec in template["tagSpecifications"]}
    assert set(tagged) == {"instance", "volume", "network-interface"}
    assert all(tags == {"mlplatform.io/cluster": "ml-dev", "mlplatform.io/environment": "dev",
                        "mlplatform.io/pool": "system"} for tags in tagged.values())


# ---- the pinned AMI releases, confirmed at preview ----------------------------------------------------------------

def test_the_ami_release_paths_are_those_karpenter_resolves_an_alias_by():
    from clouds.eks.releases import ami_release_path
    # aws/karpenter-provider-aws v1.14.1, pkg/providers/amifamily/al2023.go, resolvePath (without /image_id).
    assert ami_release_path("1.36", "nvidia", "v20260903") == (
        "/aws/service/eks/optimized-ami/1.36/amazon-linux-2023/x86_64/nvidia/"
        "amazon-eks-node-al2023-x86_64-nvidia-1.36-v20260903")


@pytest.mark.parametrize("variant, pin", [
    ("nvidia", f"EKS_AMI_ALIAS ({EKS_AMI_ALIAS})"),
    ("standard", f"EKS_SYSTEM_AMI_RELEASES['{EKS_KUBERNETES_VERSION}'] "
                 f"({EKS_SYSTEM_AMI_RELEASES[EKS_KUBERNETES_VERSION]})"),
])
def test_a_preview_stops_naming_the_pin_when_the_region_does_not_publish_that_ami_release(monkeypatch, variant, pin):
    # Unchecked, an unpublished release fails only after the control plane's 15 minutes (the node group), or
    # never loudly (Karpenter's EC2NodeClass stays unready and GPU pods Pending).
    from clouds.eks.releases import ami_release_path
    release = (EKS_AMI_ALIAS.split("@")[1] if variant == "nvidia"
               else "v" + EKS_SYSTEM_AMI_RELEASES[EKS_KUBERNETES_VERSION].rsplit("-", 1)[1])
    path = ami_release_path(EKS_KUBERNETES_VERSION, variant, release)
    monkeypatch.setattr(engine, "AWS_UNPUBLISHED_PATHS", (path,))
    with pytest.raises(Exception) as caught:
        synth_with(cluster=aws_cluster())
    assert (f"versions.py pins AMI releases that eu-west-1 does not publish for Kubernetes "
            f"{EKS_KUBERNETES_VERSION}: {pin}, whose {path}/image_id is not there") in str(caught.value)
    monkeypatch.setattr(engine, "AWS_UNPUBLISHED_PATHS", ())
    assert synth_with(cluster=aws_cluster()).of_type("aws:eks/cluster:Cluster")


def test_prod_s_old_protected_node_group_is_replaced_under_its_own_urn_so_no_unprotect_is_needed(prod):
    # Stacks from before the name-prefixed group hold it `protect`ed (prod) under this URN. Pulumi replaces a
    # resource protected in the state once the program no longer protects it, in the same `up` ("we do allow
    # unprotecting and replacing to happen in a single update cycle": pulumi/pulumi,
    # pkg/resource/deploy/step_generator.go, since #8873), but refuses to *delete* one (step.go,
    # deleteProtectedError): a new URN for the group would need `pulumi state unprotect` first.
    group = one(prod, "aws:eks/nodeGroup:NodeGroup")
    assert group.urn == ("urn:pulumi:prod::mlplatform::mlplatform:cluster:EksCluster$aws:eks/nodeGroup:NodeGroup::"
                         "ml-prod-system")
    assert not group.protect


# ---- the pinned add-on versions, confirmed at preview ----------------------------------------------------------

def test_a_preview_stops_naming_the_pin_when_eks_offers_no_such_add_on_version(monkeypatch):
    # Unchecked, a version EKS does not offer for the minor fails the add-on after the control plane's 15 minutes.
    pinned = EKS_ADDON_VERSIONS[EKS_KUBERNETES_VERSION]["kube-proxy"]
    monkeypatch.setattr(engine, "AWS_NEWEST_ADDONS", {("kube-proxy", EKS_KUBERNETES_VERSION): "v1.36.0-eksbuild.2"})
    with pytest.raises(Exception) as caught:
        synth_with(cluster=aws_cluster())
    assert (f"versions.py pins EKS add-on versions that eu-west-1 does not offer for Kubernetes "
            f"{EKS_KUBERNETES_VERSION}: kube-proxy {pinned} (the newest EKS offers is v1.36.0-eksbuild.2)") \
        in str(caught.value)
    # A newer build than the pin is offered: the pin stands (EKS keeps offering older builds).
    monkeypatch.setattr(engine, "AWS_NEWEST_ADDONS", {("kube-proxy", EKS_KUBERNETES_VERSION): "v1.36.9-eksbuild.1"})
    assert synth_with(cluster=aws_cluster()).of_type("aws:eks/addon:Addon")


def test_add_on_versions_compare_as_eks_builds_not_as_text():
    from clouds.eks.releases import addon_version_key
    assert addon_version_key("v1.36.0-eksbuild.14") > addon_version_key("v1.36.0-eksbuild.2")
    assert addon_version_key("v1.10.0-eksbuild.1") > addon_version_key("v1.9.9-eksbuild.9")
    assert all(addon_version_key(v) for pins in EKS_ADDON_VERSIONS.values() for v in pins.values())


# ---- IAM role names, unique per account across regions --------------------------------------------------------

def _role_names(synthesis: Synthesis) -> set[str]:
    return {r.inputs["name"] for r in synthesis.of_type("aws:iam/role:Role") if "name" in r.inputs}


def test_one_cluster_name_in_two_regions_of_an_account_gets_roles_of_different_names():
    # IAM names are account-wide: with names from the cluster name alone, the second region's `up` failed at
    # creating them (EntityAlreadyExists).
    west = _role_names(synth_with(cluster=aws_cluster()))
    east = _role_names(synth_with(cluster=aws_cluster(region="us-east-1", availabilityZones=["us-east-1a",
                                                                                              "us-east-1b"])))
    assert west == {"ml-eu-west-1-node", "ml-eu-west-1-karpenter"}
    assert west.isdisjoint(east)


def test_a_stack_made_before_regional_names_is_stopped_before_its_roles_are_replaced(monkeypatch):
    # A new role name replaces the role, and the system node group with it: a preview that finds roles of the
    # older names in the account stops and asks, rather than guess whether they are this stack's.
    monkeypatch.setattr(engine, "AWS_ACCOUNT_ROLES", ("arn:aws:iam::111122223333:role/ml-node",
                                                      "arn:aws:iam::111122223333:role/ml-karpenter"))
    with pytest.raises(Exception) as caught:
        synth_with(cluster=aws_cluster())
    message = str(caught.value)
    assert "The account already has the IAM roles ml-karpenter, ml-node" in message
    assert "set iamRoleNames: cluster under mlplatform:cluster in Pulumi.test.yaml to keep them" in message
    # Told which, the preview goes on: the older names kept, or the regional ones beside them.
    assert _role_names(synth_with(cluster=aws_cluster(iamRoleNames="cluster"))) == {"ml-node",
                                                                                    "ml-karpenter"}
    assert _role_names(synth_with(cluster=aws_cluster(iamRoleNames="regional"))) == {
        "ml-eu-west-1-node", "ml-eu-west-1-karpenter"}
