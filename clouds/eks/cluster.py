"""An EKS cluster: a small on-demand system node group and Karpenter GPU pools that scale from zero.

Written with pulumi-aws resources directly, so that every piece can be checked offline. It ends in the same
ClusterHandle as kind: GPU enablement, monitoring and teams run on it unchanged.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from core.provider import exec_kubeconfig, explicit_provider
from clouds.eks.network import DISCOVERY_TAG, AwsNetwork
from clouds.eks.karpenter import (NODE_POLICIES, SYSTEM_DISK_GIB, Karpenter, cluster_tags, cost_tags,
                                   managed_policy, pod_identity_trust)
from core.vocabulary import EFA_LABEL, EFA_RESOURCE, POOL_LABEL, SYSTEM_POOL, SYSTEM_TAINT
from core.handle import Capabilities, ClusterHandle, GpuPool, platform_gpu_pool
from versions import EKS_ADDON_VERSIONS, EKS_SYSTEM_AMI_RELEASES, EKS_SYSTEM_AMI_TYPE
from clouds.eks.config import EksClusterConfig
from clouds.eks.releases import confirm_addon_versions, confirm_ami_releases
from clouds.eks.role_names import decide_role_names
from clouds.eks.topology import EKS_TOPOLOGY_LEVELS

# The EBS CSI driver's controller, as the add-on names it.
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"


def access_policy(partition: str, name: str) -> str:
    """An EKS cluster access policy. AmazonEKSViewPolicy reads the built-in API groups, Secrets and custom
    resources excepted; AmazonEKSAdminViewPolicy reads everything, Secrets included (EKS user guide, "Review
    access policy permissions")."""
    return f"arn:{partition}:eks::aws:cluster-access-policy/{name}"


def same_principal(arn: str) -> str:
    """A principal's ARN without a role's path: a role's name is unique in its account, whatever its path, and
    adminRoleArns may name it with or without one."""
    head, _, resource = arn.partition(":role/")
    return f"{head}:role/{resource.rsplit('/', 1)[-1]}" if resource else arn


def deploying_principal(caller_arn: str, invoke: pulumi.InvokeOptions) -> str:
    """The IAM role (or user) running this `pulumi up` or preview, as terraform-aws-eks finds the cluster creator
    for `enable_cluster_creator_admin_permissions` (main.tf): the caller's ARN, an assumed-role session for CI
    and SSO, turned into the role's own ARN by iam.getSessionContext."""
    return aws.iam.get_session_context(arn=caller_arn, opts=invoke).issuer_arn


def service_trust(service: str, *, tag_session: bool = False) -> str:
    actions = ["sts:AssumeRole", "sts:TagSession"] if tag_session else "sts:AssumeRole"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": actions}]})


def secrets_key_policy(cluster_role_arn: str) -> str:
    """The account administers the key through IAM (KMS's default key policy); the cluster role may use it for
    envelope encryption, with the actions terraform-aws-eks grants it (kms:Encrypt, Decrypt, ListGrants,
    DescribeKey). Account and partition come from the role's ARN."""
    _, partition, _, _, account, _ = cluster_role_arn.split(":", 5)
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "ClusterEncryptsSecrets", "Effect": "Allow", "Principal": {"AWS": cluster_role_arn},
         "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"], "Resource": "*"},
    ]})


def kubeconfig(name: str, region: str, endpoint: str, certificate_authority: str) -> str:
    return exec_kubeconfig(name, endpoint, certificate_authority, {
        "command": "aws", "args": ["eks", "get-token", "--cluster-name", name, "--region", region, "--output", "json"],
        "interactiveMode": "Never"})


def api_access_rules(name: str, spec: EksClusterConfig, cluster_security_group_id: pulumi.Input[str],
                     opts: pulumi.ResourceOptions) -> list[aws.vpc.SecurityGroupIngressRule]:
    """HTTPS to the private endpoint from the named security groups and CIDRs.

    The EKS-created cluster security group admits only its own members (the control plane's ENIs and the
    nodes), so a runner elsewhere in the network times out on the private endpoint without these. Named by
    source, not position: reordering the list replaces nothing.
    """
    endpoint = spec.endpoint
    sources: list[tuple[str, str | None, str | None, str | None]] = [
        (group, group, None, None) for group in endpoint.private_access_security_group_ids]
    sources += [(block.replace("/", "-").replace(":", "-"), None, None if ":" in block else block,
                 block if ":" in block else None) for block in endpoint.private_access_cidrs]
    return [aws.vpc.SecurityGroupIngressRule(
        f"{name}-api-from-{label}", security_group_id=cluster_security_group_id, ip_protocol="tcp",
        from_port=443, to_port=443, referenced_security_group_id=group, cidr_ipv4=ipv4, cidr_ipv6=ipv6,
        description=f"Kubernetes API of {spec.name} for deploys from inside the network", opts=opts)
        for label, group, ipv4, ipv6 in sources]


def eks_gpu_pools(spec: EksClusterConfig) -> tuple[GpuPool, ...]:
    pools = []
    for pool in spec.gpu_pools:
        gpu_pool = platform_gpu_pool(pool.name, pool.accelerator, gpus_per_node=pool.shape.gpus, min_nodes=0,
                                     max_nodes=pool.max_nodes, spot="spot" in pool.capacity_types,
                                     sharing=pool.sharing, multi_node=pool.multi_node)
        # EFA pools' nodes carry the label the EFA device plugin selects on: the handle says what nodes carry,
        # and what a whole-node pod asks for and sets to use the fabric.
        pools.append(replace(gpu_pool, labels={**gpu_pool.labels, EFA_LABEL: "true"},
                             fabric_devices={EFA_RESOURCE: pool.shape.efa_interfaces},
                             fabric_env=pool.nccl_env(), huge_pages=pool.huge_page_request())
                      if pool.efa else gpu_pool)
    return tuple(pools)


class EksCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, spec: EksClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:EksCluster", name, None, opts)
        prod = spec.environment == "prod"
        # One explicit AWS provider, in the region and account the stack config names, tagging everything it
        # creates. With credentials of any other account it fails at its configuration, before a read or a
        # create. (Its arguments changing is an update of the provider, which replaces none of its resources;
        # only a new region would.)
        aws_provider = aws.Provider(f"{name}-aws", region=spec.region, allowed_account_ids=[spec.account],
                                    default_tags=aws.ProviderDefaultTagsArgs(tags=cluster_tags(spec)),
                                    opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=aws_provider)
        # Who deploys, in which account and partition: what a preview learns from the credentials alone.
        invoke = pulumi.InvokeOptions(provider=aws_provider)
        partition = aws.get_partition(opts=invoke).partition
        caller = aws.get_caller_identity(opts=invoke)
        cluster_arn = f"arn:{partition}:eks:{spec.region}:{caller.account_id}:cluster/{spec.name}"
        # Before any cloud work: the AMI releases versions.py pins exist in this region for this minor.
        confirm_ami_releases(spec, invoke)
        confirm_addon_versions(spec, invoke)
        roles = decide_role_names(spec, invoke)
        # What a prod stack must not lose to a mistaken `pulumi destroy` or a rename.
        kept = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=prod))

        network = AwsNetwork(f"{name}-network", spec,
                             opts=pulumi.ResourceOptions(parent=self, providers=[aws_provider]))

        cluster_role = aws.iam.Role(f"{name}-cluster", assume_role_policy=service_trust(
            "eks.amazonaws.com", tag_session=True), opts=child)
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cluster", role=cluster_role.name, policy_arn=managed_policy(partition, "AmazonEKSClusterPolicy"),
            opts=child)
        # The system node group's role only; Karpenter's nodes have their own.
        node_role = aws.iam.Role(f"{name}-node", name=roles.nodes, assume_role_policy=service_trust(
            "ec2.amazonaws.com"), opts=child)
        node_policies = [aws.iam.RolePolicyAttachment(f"{name}-node-{policy}", role=node_role.name,
                                                      policy_arn=managed_policy(partition, policy), opts=child)
                         for policy in NODE_POLICIES]
        secrets_key = aws.kms.Key(f"{name}-secrets", description=f"Envelope encryption of {spec.name}'s Secrets",
                                  enable_key_rotation=True, deletion_window_in_days=30,
                                  policy=cluster_role.arn.apply(secrets_key_policy), opts=kept)
        aws.kms.Alias(f"{name}-secrets", name=f"alias/eks/{spec.name}", target_key_id=secrets_key.key_id,
                      opts=child)
        # Made before the cluster, so that EKS logs into ours (with a retention) instead of making one that never
        # expires; and EKS may not make it again while a destroy is under way, after ours is gone (as
        # terraform-aws-eks denies it, issue #920), which would leave a log group behind, billing.
        log_group = aws.cloudwatch.LogGroup(f"{name}-control-plane", name=f"/aws/eks/{spec.name}/cluster",
                                            retention_in_days=spec.log_retention_days, opts=kept)
        no_log_group = aws.iam.RolePolicy(f"{name}-cluster-no-log-group", role=cluster_role.id, policy=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Deny", "Action": "logs:CreateLogGroup", "Resource": "*"}]}), opts=child)

        public_cidrs = spec.endpoint.public_access_cidrs
        cluster = aws.eks.Cluster(
            f"{name}-cluster",
            name=spec.name,
            role_arn=cluster_role.arn,
            version=spec.kubernetes_version,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=network.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=bool(public_cidrs),
                public_access_cidrs=public_cidrs or None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                # Access entries only: no aws-auth ConfigMap to edit by hand. The creator gets no implicit entry
                # (as terraform-aws-eks hard-codes): the deployer's entry below is ours, so listing the deploying
                # role cannot collide (409) with an entry EKS made.
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=False),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
                resources=["secrets"]),
            enabled_cluster_log_types=spec.control_plane_logs,
            # The add-ons below are managed and pinned instead of the unmanaged ones EKS would install.
            bootstrap_self_managed_addons=False,
            # Prod: EKS itself refuses to delete the cluster until this is turned off.
            deletion_protection=prod,
            # Standard support unless asked: at its end EKS upgrades the control plane rather than bill
            # extended support for an old minor unannounced.
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type=spec.support_type.upper()),
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(
                depends_on=[cluster_policy, log_group, no_log_group],
                # Both are read by EKS at creation only, and a change replaces the cluster: a cluster made with
                # other values (before these were set) keeps them, as terraform-aws-eks ignores them (main.tf).
                ignore_changes=["accessConfig.bootstrapClusterCreatorAdminPermissions",
                                "bootstrapSelfManagedAddons"])),
        )
        # EKS's own security group, on every node: how Karpenter's nodes find it (and reach the control plane).
        security_group_tag = aws.ec2.Tag(f"{name}-cluster-sg-discovery",
                                         resource_id=cluster.vpc_config.cluster_security_group_id,
                                         key=DISCOVERY_TAG, value=spec.name, opts=child)
        api_access = api_access_rules(name, spec, cluster.vpc_config.cluster_security_group_id, child)

        # The role running `pulumi up` is admin too, or nothing on the cluster could be installed: as upstream's
        # access entry for the creator, not EKS's one-off bootstrap flag, so that it follows whoever deploys. A
        # listed role keeps its own entry, which a run by another role leaves alone; CI's read-only roles are
        # listed too, so that their previews and drift checks plan no entry of their own.
        listed = [*spec.admin_role_arns, *spec.view_role_arns, *spec.read_role_arns]
        deployer = deploying_principal(caller.arn, invoke)
        entries = [(f"{name}-admin-{index}", arn, "AmazonEKSClusterAdminPolicy")
                   for index, arn in enumerate(spec.admin_role_arns)]
        if same_principal(deployer) not in {same_principal(arn) for arn in listed}:
            entries.append((f"{name}-deployer", deployer, "AmazonEKSClusterAdminPolicy"))
        # CI's roles that read and change nothing: pull-request previews (view), and code on main whose drift
        # refresh reads every object the stack owns, custom resources and Helm's release Secrets included.
        entries += [(f"{name}-view-{index}", arn, "AmazonEKSViewPolicy") for index, arn in enumerate(spec.view_role_arns)]
        entries += [(f"{name}-read-{index}", arn, "AmazonEKSAdminViewPolicy")
                    for index, arn in enumerate(spec.read_role_arns)]
        admin_access: list[pulumi.Resource] = []
        for resource_name, role_arn, policy in entries:
            entry = aws.eks.AccessEntry(resource_name, cluster_name=cluster.name, principal_arn=role_arn,
                                        type="STANDARD", opts=child)
            association = aws.eks.AccessPolicyAssociation(
                resource_name, cluster_name=cluster.name, principal_arn=role_arn,
                policy_arn=access_policy(partition, policy),
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[entry])))
            if policy == "AmazonEKSClusterAdminPolicy":
                admin_access.append(association)

        addon_versions = EKS_ADDON_VERSIONS[spec.kubernetes_version]

        def addon(addon_name: str, after: list[pulumi.Resource] | None = None, **settings) -> aws.eks.Addon:
            return aws.eks.Addon(
                f"{name}-{addon_name}", cluster_name=cluster.name, addon_name=addon_name,
                addon_version=addon_versions[addon_name], resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=after or [])), **settings)

        pod_identity_agent = addon("eks-pod-identity-agent")
        # The VPC CNI enforces NetworkPolicies only when asked: the teams' default-deny depends on it.
        vpc_cni = addon("vpc-cni", configuration_values=json.dumps({"enableNetworkPolicy": "true"}))
        kube_proxy = addon("kube-proxy")

        # The instance type, IMDS and root volume live in a launch template: changing them rolls the nodes
        # through a new template version in place, where the node group's own fields would replace it.
        system_template = aws.ec2.LaunchTemplate(
            f"{name}-system",
            name_prefix=f"{spec.name}-system-",
            instance_type=spec.system_pool.instance_type,
            # IMDSv2 only; one hop, so pods cannot borrow the node role (they use Pod Identity).
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda", ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=SYSTEM_DISK_GIB, volume_type="gp3", encrypted="true", delete_on_termination="true"))],
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type=kind, tags=cost_tags(spec, SYSTEM_POOL))
                for kind in ("instance", "volume", "network-interface")],
            opts=child)
        system_nodes = aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=cluster.name,
            # A prefix, not a fixed name: what EKS can only replace (AMI type, subnets, role) is created anew
            # beside the old group, which is deleted once the new one is up. Not `protect`ed, so that it can.
            node_group_name_prefix=f"{spec.name}-system-",
            node_role_arn=node_role.arn,
            subnet_ids=network.private_subnet_ids,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=system_template.id, version=system_template.latest_version.apply(str)),
            ami_type=EKS_SYSTEM_AMI_TYPE,
            # A dated AMI release, like the GPU pools' alias: a new AMI is a reviewed bump, rolled in place.
            release_version=EKS_SYSTEM_AMI_RELEASES[spec.kubernetes_version],
            capacity_type="ON_DEMAND",
            # A fixed minNodes, owned by the stack (raising it adds nodes; with a desired size left to an
            # autoscaler, EKS refuses a minimum above it). Karpenter adds the nodes up to maxNodes.
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(min_size=spec.system_pool.min_nodes,
                                                              desired_size=spec.system_pool.min_nodes,
                                                              max_size=spec.system_pool.min_nodes),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels={POOL_LABEL: SYSTEM_POOL},
            # Changed in place, never a new group: terraform-provider-aws sends a taint change as
            # UpdateNodegroupConfig (internal/service/eks/node_group.go, resourceNodeGroupUpdate).
            taints=[aws.eks.NodeGroupTaintArgs(key=SYSTEM_TAINT.key, value=SYSTEM_TAINT.value,
                                               effect=SYSTEM_TAINT.cloud_effect)],
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                depends_on=[*node_policies, vpc_cni, kube_proxy, *network.egress])),
        )
        coredns = addon("coredns", after=[system_nodes])
        ebs_role = aws.iam.Role(f"{name}-ebs-csi", assume_role_policy=pod_identity_trust(
            cluster_arn, "kube-system", EBS_CSI_SERVICE_ACCOUNT), opts=child)
        ebs_policy = aws.iam.RolePolicyAttachment(
            f"{name}-ebs-csi", role=ebs_role.name,
            policy_arn=managed_policy(partition, "service-role/AmazonEBSCSIDriverPolicy"), opts=child)
        ebs_csi = addon("aws-ebs-csi-driver", after=[system_nodes, pod_identity_agent, ebs_policy],
                        pod_identity_associations=[aws.eks.AddonPodIdentityAssociationArgs(
                            role_arn=ebs_role.arn, service_account=EBS_CSI_SERVICE_ACCOUNT)])

        config = pulumi.Output.secret(pulumi.Output.all(cluster.name, cluster.endpoint,
                                                        cluster.certificate_authority.data).apply(
            lambda values: kubeconfig(values[0], spec.region, values[1], values[2])))
        # With no creator entry, the stack reaches the API through its admin entries, and a deployer inside
        # the network through the HTTPS rules: wait for both, so a destroy also keeps them to the end. And
        # everything installed depends on the EBS CSI driver and the network's egress, so a destroy deletes
        # volumes while the driver can still reach EC2.
        provider = explicit_provider(self, name, config, ready=[
            system_nodes, coredns, vpc_cni, pod_identity_agent, ebs_csi, *admin_access, *api_access,
            *network.egress],
            identity=cluster.arn)

        k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata=ObjectMetaArgs(name="gp3", annotations={"storageclass.kubernetes.io/is-default-class": "true"}),
            provisioner="ebs.csi.aws.com",
            # The EBS CSI driver tags the volumes it creates with these (its tagSpecification_<n> parameters,
            # docs/tagging.md of aws-ebs-csi-driver): the provider's default tags never reach them.
            parameters={"type": "gp3", "encrypted": "true"} | {
                f"tagSpecification_{index}": f"{key}={value}"
                for index, (key, value) in enumerate(cluster_tags(spec).items(), start=1)},
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=pulumi.ResourceOptions(parent=self, provider=provider, depends_on=[ebs_csi]),
        )

        gpu_pools = eks_gpu_pools(spec)
        Karpenter(f"{name}-karpenter", spec, cluster=cluster, network=network, security_group_tag=security_group_tag,
                  gpu_pools=gpu_pools, k8s_provider=provider, partition=partition, cluster_arn=cluster_arn,
                  node_role_name=roles.karpenter_nodes,
                  opts=pulumi.ResourceOptions(parent=self, providers=[aws_provider]))

        self.handle = ClusterHandle(
            identity=cluster.arn,
            name=spec.name,
            cloud="aws",
            kubernetes_version=spec.kubernetes_version,
            provider=provider,
            kubeconfig=config,
            # The accelerated AL2023 AMI has NVIDIA's drivers; the device plugin is ours to install.
            # EKS runs the scheduler, controller manager and etcd out of reach (EKS User Guide, "Fetch control
            # plane raw metrics"), and its kube-proxy add-on serves metrics on 127.0.0.1:10249 only (the add-on's
            # KubeProxyConfiguration): of the control plane, only CoreDNS (:9153) can be scraped.
            capabilities=Capabilities(gpu_drivers=True, device_plugin=False, physical_gpus=True,
                                      persistent_volumes=True, scrapeable=frozenset({"coredns"}),
                                      # Its GPU nodes' toolkit is set to match (karpenter.gpu_node_user_data).
                                      gpu_device_list_strategy="volume-mounts"),
            gpu_pools=gpu_pools,
            # The managed node group's minNodes, and Karpenter's nodes up to maxNodes (karpenter.py).
            system_max_nodes=max(spec.system_pool.min_nodes, spec.system_pool.max_nodes),
            topology_levels=EKS_TOPOLOGY_LEVELS,
        )
        self.register_outputs({"clusterName": cluster.name, "endpoint": cluster.endpoint})
