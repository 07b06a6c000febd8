"""A GKE cluster: VPC-native, private nodes behind Cloud NAT, Workload Identity, shielded nodes, a system node
pool and GPU node pools that scale from zero with GKE-installed drivers.

GKE installs NVIDIA's drivers and its own device plugin, and taints GPU nodes itself; the handle says so, and
our pools declare the same taint so that the handle stays true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs
from pulumi.output import UNKNOWN, Unknown

import pulumi_random as random
from pulumi_command import local

from core.provider import exec_kubeconfig, explicit_provider
from core.handle import Capabilities, ClusterHandle, GpuPool, platform_gpu_pool
from core.vocabulary import CPU_POOL, POOL_LABEL, SYSTEM_POOL, SYSTEM_TAINT, Taint
from verify.released import KUBECONFIG_ENV
from clouds.gke.topology import GKE_TOPOLOGY_LEVELS
from clouds.gke.config import DEFAULT_POOL, GkeClusterConfig, GkeGpuPool, GkeMaintenance, node_settings
from clouds.gke.fabric import (Nic, fabric_objects, fabric_pod, gpu_networks, nccl_env, pod_annotations,
                               pool_nics)
from core.webhooks import webhook_ports

# GKE's role for node accounts (logs, metrics, autoscaler metrics), as the terraform module grants it (sa.tf),
# the metrics and metadata writers it also grants, and reading images from Artifact Registry.
NODE_ROLES = ("roles/container.defaultNodeServiceAccount", "roles/monitoring.metricWriter",
              "roles/stackdriver.resourceMetadata.writer", "roles/artifactregistry.reader")
# Where GKE puts NVIDIA's driver on a GPU node, for agents (the DCGM exporter) that read the GPUs directly.
GKE_DRIVER_PATH = "/home/kubernetes/bin/nvidia"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GPU_POOL_UPGRADES = gcp.container.NodePoolUpgradeSettingsArgs(strategy="SURGE", max_surge=0, max_unavailable=1)
RESERVATION_KEY = "compute.googleapis.com/reservation-name"
IAM_PROPAGATION_SECONDS = 180
# The interpreter the Pulumi CLI runs this program with (Pulumi.yaml: virtualenv .venv), from the project folder
# where the CLI runs commands.
PROGRAM_PYTHON = ".venv/bin/python"
# Rotated every 90 days; old versions stay to decrypt what they encrypted.
KMS_ROTATION = "7776000s"


def kubeconfig(name: str, endpoint: str, certificate_authority: str | None) -> str:
    # Application default credentials: the same identity the Pulumi providers use (a CI job's workload
    # identity, or `gcloud auth application-default login`), not whichever account gcloud is logged in as.
    return exec_kubeconfig(name, f"https://{endpoint}", certificate_authority, {
        "command": "gke-gcloud-auth-plugin", "args": ["--use_application_default_credentials"],
        "provideClusterInfo": True, "interactiveMode": "Never",
        "installHint": "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin"})


def _dns_endpoint(endpoints: Mapping[str, Any] | None) -> str | Unknown:
    # The host name exists once GKE has made the endpoint: until then (a preview) it is unknown, and so is
    # the kubeconfig built from it.
    dns = (endpoints or {}).get("dns_endpoint_config") or {}
    return dns.get("endpoint") or UNKNOWN


def api_kubeconfig(spec: GkeClusterConfig, cluster: gcp.container.Cluster) -> pulumi.Output[str]:
    """The kubeconfig `pulumi up` and `kubectl` use: through the DNS endpoint when it is on.

    The DNS endpoint serves a certificate of a public CA, so the kubeconfig carries no CA of its own there
    (as `gcloud container clusters get-credentials --dns-endpoint` writes it).
    """
    if spec.dns_endpoint:
        endpoint = cluster.control_plane_endpoints_config.apply(_dns_endpoint)
        return pulumi.Output.all(cluster.name, endpoint).apply(lambda values: kubeconfig(values[0], values[1], None))
    return pulumi.Output.all(cluster.name, cluster.endpoint, cluster.master_auth.cluster_ca_certificate).apply(
        lambda values: kubeconfig(*values))


# The ClusterRole of readServiceAccounts: every object, Secrets and custom resources included, read only, as
# EKS's AmazonEKSAdminViewPolicy (Kubernetes' own `view` leaves out Secrets and most custom resources).
READ_ALL = "mlplatform:read-all"


def read_access(name: str, spec: GkeClusterConfig, provider: k8s.Provider,
                parent: pulumi.Resource) -> list[pulumi.Resource]:
    """The RBAC that lets CI's preview and read service accounts look at the cluster and change nothing. GKE
    names a Google service account to RBAC as a User, by its email (GKE docs, "Role-based access control")."""
    opts = pulumi.ResourceOptions(parent=parent, provider=provider)

    def binding(suffix: str, role: str, accounts: list[str]) -> k8s.rbac.v1.ClusterRoleBinding:
        return k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-{suffix}", metadata=ObjectMetaArgs(name=f"mlplatform:{suffix}"),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[k8s.rbac.v1.SubjectArgs(api_group="rbac.authorization.k8s.io", kind="User", name=account)
                      for account in accounts],
            opts=opts)

    access: list[pulumi.Resource] = []
    if spec.view_service_accounts:
        access.append(binding("view", "view", spec.view_service_accounts))
    if spec.read_service_accounts:
        access.append(k8s.rbac.v1.ClusterRole(
            f"{name}-read-all", metadata=ObjectMetaArgs(name=READ_ALL),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=["*"], resources=["*"], verbs=["get", "list", "watch"])],
            opts=opts))
        access.append(binding("read", READ_ALL, spec.read_service_accounts))
    return access


def maintenance_policy(maintenance: GkeMaintenance, now: datetime) -> gcp.container.ClusterMaintenancePolicyArgs:
    """The window, and the exclusions that have not ended by `now`."""
    window = maintenance.window
    return gcp.container.ClusterMaintenancePolicyArgs(
        recurring_window=gcp.container.ClusterMaintenancePolicyRecurringWindowArgs(
            start_time=window.start, end_time=window.end, recurrence=window.recurrence),
        maintenance_exclusions=[gcp.container.ClusterMaintenancePolicyMaintenanceExclusionArgs(
            exclusion_name=exclusion.name, start_time=exclusion.start, end_time=exclusion.end,
            exclusion_options=gcp.container.ClusterMaintenancePolicyMaintenanceExclusionExclusionOptionsArgs(
                scope=exclusion.scope)) for exclusion in maintenance.in_force(now)],
    )


def guest_accelerator(pool: GkeGpuPool) -> gcp.container.NodePoolNodeConfigGuestAcceleratorArgs:
    """The pool's GPUs, with GKE's own driver installation and its GPU sharing or MIG partitioning."""
    slicing = pool.sharing.time_slicing
    return gcp.container.NodePoolNodeConfigGuestAcceleratorArgs(
        type=pool.accelerator_type,
        count=pool.gpus,
        # The default driver of the node's GKE version: pinned with the version, never "LATEST".
        gpu_driver_installation_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
            gpu_driver_version="DEFAULT"),
        gpu_sharing_config=gcp.container.NodePoolNodeConfigGuestAcceleratorGpuSharingConfigArgs(
            gpu_sharing_strategy="TIME_SHARING", max_shared_clients_per_gpu=slicing.replicas) if slicing else None,
        gpu_partition_size=pool.mig_partition_size,
    )


def node_taint(taint: Taint) -> gcp.container.NodePoolNodeConfigTaintArgs:
    return gcp.container.NodePoolNodeConfigTaintArgs(key=taint.key, value=taint.value, effect=taint.cloud_effect)


def node_config(account: pulumi.Input[str], *, machine_type: str, labels: dict[str, str],
                guest_accelerators: list[gcp.container.NodePoolNodeConfigGuestAcceleratorArgs] | None = None,
                spot: bool | None = None, disk_size_gb: int | None = None, disk_type: str | None = None,
                gvnic: gcp.container.NodePoolNodeConfigGvnicArgs | None = None,
                ephemeral_storage_local_ssd_config:
                gcp.container.NodePoolNodeConfigEphemeralStorageLocalSsdConfigArgs | None = None,
                taints: list[gcp.container.NodePoolNodeConfigTaintArgs] | None = None,
                reservation: str | None = None,
                ) -> gcp.container.NodePoolNodeConfigArgs:
    """A node pool's nodes: the platform's node account, shielded, with Workload Identity's metadata server."""
    return gcp.container.NodePoolNodeConfigArgs(
        machine_type=machine_type, labels=labels, guest_accelerators=guest_accelerators, spot=spot,
        disk_size_gb=disk_size_gb, disk_type=disk_type, gvnic=gvnic,
        ephemeral_storage_local_ssd_config=ephemeral_storage_local_ssd_config, taints=taints,
        # A specific reservation by name, as cluster-toolkit's gke-node-pool names it (reservation_definitions.tf:
        # the compute.googleapis.com/reservation-name key).
        reservation_affinity=gcp.container.NodePoolNodeConfigReservationAffinityArgs(
            consume_reservation_type="SPECIFIC_RESERVATION", key=RESERVATION_KEY, values=[reservation])
        if reservation else None,
        service_account=account, oauth_scopes=[CLOUD_PLATFORM_SCOPE],
        shielded_instance_config=gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
            enable_secure_boot=True, enable_integrity_monitoring=True),
        # Pods get Google credentials from Workload Identity, never from the node's account.
        workload_metadata_config=gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
    )


def gke_gpu_pools(spec: GkeClusterConfig) -> tuple[GpuPool, ...]:
    pools = []
    for pool in spec.gpu_pools:
        gpu_pool = platform_gpu_pool(pool.name, pool.accelerator_type, gpus_per_node=pool.gpus, min_nodes=0,
                                     max_nodes=pool.max_nodes, spot=pool.spot, sharing=pool.sharing,
                                     mig_partitions=pool.mig_partitions, multi_node=pool.multi_node)
        # A multi-node pool's GPU NICs: what a whole-node pod sets (NCCL's environment for the fabric) and the
        # annotations that attach it to them, which the pool's description gives teams.
        if pool.fabric is not None:
            nics = pool_nics(spec, pool)
            gpu_pool = replace(gpu_pool, fabric_env=nccl_env(pool.fabric, pool.fabric.gpu_nics),
                               fabric_annotations=pod_annotations(pool, nics), fabric=pool.fabric.kind,
                               fabric_pod=fabric_pod(pool.fabric))
        pools.append(gpu_pool)
    return tuple(pools)


class GkeCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, spec: GkeClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:GkeCluster", name, None, opts)
        prod = spec.environment == "prod"
        now = datetime.now(timezone.utc)
        for warning in spec.maintenance.ended(now):
            pulumi.log.warn(warning)
        gcp_provider = gcp.Provider(f"{name}-gcp", project=spec.project, region=spec.region,
                                    default_labels={"mlplatform-cluster": spec.name,
                                                    "mlplatform-environment": spec.environment},
                                    opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=gcp_provider)
        kept = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=prod))

        network = gcp.compute.Network(f"{name}-network", name=spec.name, auto_create_subnetworks=False, opts=child)
        subnet = gcp.compute.Subnetwork(
            f"{name}-nodes", name=f"{spec.name}-nodes", network=network.id, region=spec.region,
            ip_cidr_range=spec.network.subnet_cidr, private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name="pods", ip_cidr_range=spec.network.pods_cidr),
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name="services",
                                                           ip_cidr_range=spec.network.services_cidr)],
            opts=child)
        # Private nodes have no public addresses: they reach registries and APIs through Cloud NAT.
        router = gcp.compute.Router(f"{name}-router", name=spec.name, network=network.id, region=spec.region,
                                    opts=child)
        nat = gcp.compute.RouterNat(
            f"{name}-nat", name=spec.name, router=router.name, region=spec.region,
            nat_ip_allocate_option="AUTO_ONLY", source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            # GPU nodes pull images of many GB over many connections at once: each node's ports grow on demand
            # (from 1024 up to a whole address) instead of a fixed 64, and NAT adds addresses as needed.
            enable_dynamic_port_allocation=True, enable_endpoint_independent_mapping=False,
            min_ports_per_vm=1024, max_ports_per_vm=65536,
            # Dropped connections (ports or addresses exhausted) are logged; successful ones are not.
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child)

        nodes_account = gcp.serviceaccount.Account(f"{name}-nodes", account_id=f"{spec.name}-nodes",
                                                   display_name=f"Nodes of {spec.name}", opts=child)
        nodes_member = nodes_account.email.apply(lambda email: f"serviceAccount:{email}")
        node_roles = [gcp.projects.IAMMember(f"{name}-nodes-{role.split('/')[1]}", project=spec.project,
                                             role=role, member=nodes_member, opts=child)
                      for role in NODE_ROLES]

        # The control plane calls admission webhooks and aggregated APIs on the pods' own ports (those the
        # charts' renders call, core/webhooks.py); GKE's own rule opens only 443 and 10250 to private nodes
        # (terraform-google-kubernetes-engine's private-cluster module adds the same rule: firewall.tf,
        # master_webhooks).
        webhooks = gcp.compute.Firewall(
            f"{name}-webhooks", name=f"{spec.name}-master-webhooks", network=network.id, direction="INGRESS",
            description="The GKE control plane reaches the platform's admission webhooks and aggregated APIs",
            source_ranges=[spec.network.master_cidr], target_service_accounts=[nodes_account.email],
            allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=webhook_ports())],
            opts=child)

        # Secrets in etcd are encrypted with a key of ours (application-layer secrets encryption), which GKE's
        # service agent may use. Key rings cannot be deleted: a suffix lets a destroyed stack be created again.
        suffix = random.RandomId(f"{name}-keyring-suffix", byte_length=3, opts=pulumi.ResourceOptions(parent=self))
        key_ring = gcp.kms.KeyRing(f"{name}-keyring", name=suffix.hex.apply(lambda hex_: f"{spec.name}-{hex_}"),
                                   location=spec.region, opts=kept)
        secrets_key = gcp.kms.CryptoKey(f"{name}-secrets-key", name="kubernetes-secrets", key_ring=key_ring.id,
                                        purpose="ENCRYPT_DECRYPT", rotation_period=KMS_ROTATION, opts=kept)
        # GKE's service agent (service-<project number>@container-engine-robot), as the Service Usage API names
        # it: never a number typed into the stack file, which a copied stack gets wrong.
        gke_agent = gcp.projects.ServiceIdentity(f"{name}-gke-agent", project=spec.project,
                                                 service="container.googleapis.com", opts=child)
        key_grant = gcp.kms.CryptoKeyIAMMember(
            f"{name}-secrets-key-gke", crypto_key_id=secrets_key.id, role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
            member=gke_agent.member, opts=child)
        # GKE checks that its agent may use the key when the cluster is created, and an IAM grant takes effect
        # across Google Cloud within minutes, not at once (IAM docs, "Access change propagation": typically two
        # minutes, rarely seven or more): the cluster is created three minutes after the grant (once: the wait
        # runs again only for a new grant).
        key_grant_propagated = local.Command(
            f"{name}-secrets-key-gke-propagation", create=f"sleep {IAM_PROPAGATION_SECONDS}",
            triggers=[key_grant.member], opts=pulumi.ResourceOptions(parent=self, depends_on=[key_grant]))

        authorized = spec.master_authorized_networks
        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            name=spec.name,
            location=spec.region,
            node_locations=spec.zones,
            network=network.id,
            subnetwork=subnet.id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=gcp.container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name="pods", services_secondary_range_name="services"),
            # The default pool goes at once; the managed pools below replace it. While it lives it runs as the
            # platform's node account, not the Compute Engine default account, which organisations often
            # disable (terraform-google-kubernetes-engine declares it the same way: cluster.tf, default-pool).
            remove_default_node_pool=True,
            node_pools=[gcp.container.ClusterNodePoolArgs(
                name=DEFAULT_POOL, initial_node_count=1,
                node_config=gcp.container.ClusterNodePoolNodeConfigArgs(
                    service_account=nodes_account.email, oauth_scopes=[CLOUD_PLATFORM_SCOPE],
                    shielded_instance_config=gcp.container.ClusterNodePoolNodeConfigShieldedInstanceConfigArgs(
                        enable_secure_boot=True, enable_integrity_monitoring=True),
                    workload_metadata_config=gcp.container.ClusterNodePoolNodeConfigWorkloadMetadataConfigArgs(
                        mode="GKE_METADATA")))],
            min_master_version=spec.kubernetes_version,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=spec.release_channel),
            maintenance_policy=maintenance_policy(spec.maintenance, now),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{spec.project}.svc.id.goog"),
            enable_shielded_nodes=True,
            database_encryption=gcp.container.ClusterDatabaseEncryptionArgs(state="ENCRYPTED",
                                                                            key_name=secrets_key.id),
            private_cluster_config=gcp.container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True, enable_private_endpoint=False,
                master_ipv4_cidr_block=spec.network.master_cidr),
            # With the DNS endpoint on, authorized networks stay on even when empty: the IP endpoint is then
            # closed to the internet, and the DNS endpoint (IAM only) is the way in.
            master_authorized_networks_config=gcp.container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[gcp.container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                    cidr_block=n.cidr, display_name=n.name) for n in authorized])
            if authorized or spec.dns_endpoint else None,
            control_plane_endpoints_config=gcp.container.ClusterControlPlaneEndpointsConfigArgs(
                dns_endpoint_config=gcp.container.ClusterControlPlaneEndpointsConfigDnsEndpointConfigArgs(
                    allow_external_traffic=True)) if spec.dns_endpoint else None,
            # Dataplane V2 enforces NetworkPolicies: the teams' default-deny depends on it.
            datapath_provider="ADVANCED_DATAPATH",
            # Pods of multi-node pools attach to their GPU NICs through GKE multi-networking (which needs
            # Dataplane V2). It cannot be changed in place (the provider replaces the cluster for it; cluster-
            # toolkit's gke-cluster module calls it immutable too): set only where the stack asks for it, and left
            # out, as before, everywhere else.
            enable_multi_networking=True if spec.multi_networking else None,
            deletion_protection=prod,
            # The default pool exists only at creation (as in the terraform module's lifecycle block); a cluster
            # created before it was declared must not be replaced for it.
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(
                ignore_changes=["nodePools", "initialNodeCount"],
                depends_on=[key_grant, key_grant_propagated, *node_roles])),
        )

        # Pools come after their account's roles: nodes that boot without them cannot write logs or pull images.
        management = gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True)
        system = gcp.container.NodePool(
            f"{name}-system", name="system", cluster=cluster.id, location=spec.region,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(total_min_node_count=spec.system_pool.min_nodes,
                                                              total_max_node_count=spec.system_pool.max_nodes),
            initial_node_count=1, management=management,
            # A taint is changed in place (GKE's node pool update), never a new pool: terraform-provider-google's
            # node_config `taint` is not ForceNew, unlike its siblings (google/services/container/node_config.go).
            node_config=node_config(nodes_account.email, machine_type=spec.system_pool.machine_type,
                                    labels={POOL_LABEL: SYSTEM_POOL}, taints=[node_taint(SYSTEM_TAINT)]),
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(
                ignore_changes=["initialNodeCount"], depends_on=node_roles)))
        # Teams' CPU work, and whatever of GKE's own that does not tolerate the system pool's taint.
        cpu = gcp.container.NodePool(
            f"{name}-{CPU_POOL}", name=CPU_POOL, cluster=cluster.id, location=spec.region,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(total_min_node_count=0,
                                                              total_max_node_count=spec.cpu_pool.max_nodes,
                                                              location_policy="ANY"),
            initial_node_count=0, management=management,
            node_config=node_config(nodes_account.email, machine_type=spec.cpu_pool.machine_type,
                                    labels={POOL_LABEL: CPU_POOL}),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=["initialNodeCount"], depends_on=node_roles)))

        gpu_pools = gke_gpu_pools(spec)
        node_pools: list[pulumi.Resource] = [system, cpu]
        pool_networks: dict[str, list[Nic]] = {}
        for pool, gpu_pool in zip(spec.gpu_pools, gpu_pools, strict=True):
            settings = node_settings(pool.machine_type)
            # A multi-node pool's GPU NICs, each in a VPC subnet of its own beside the cluster's.
            additional = None
            if pool.fabric is not None:
                pool_networks[pool.name] = pool_nics(spec, pool)
                additional = gcp.container.NodePoolNetworkConfigArgs(additional_node_network_configs=gpu_networks(
                    name, spec, pool, pool_networks[pool.name], child))
            node_pools.append(gcp.container.NodePool(
                f"{name}-{pool.name}", name=pool.name, cluster=cluster.id, location=spec.region,
                node_locations=pool.zones or spec.zones,
                autoscaling=gcp.container.NodePoolAutoscalingArgs(total_min_node_count=0,
                                                                  total_max_node_count=pool.max_nodes,
                                                                  location_policy="ANY"),
                initial_node_count=0, management=management,
                # An upgrade replaces one node at a time in place, with no extra GPU VM beside it: the GPU quota
                # is sized at maxNodes x GPUs, and a surge VM above it never comes (cluster-toolkit's
                # gke-node-pool defaults max_surge 0, max_unavailable 1 the same way: main.tf, upgrade_settings).
                upgrade_settings=GPU_POOL_UPGRADES,
                # Multi-node pools' nodes close together on the network (and so labelled with their place in it).
                placement_policy=(gcp.container.NodePoolPlacementPolicyArgs(type="COMPACT") if pool.multi_node
                                  else None),
                network_config=additional,
                node_config=node_config(
                    nodes_account.email,
                    machine_type=pool.machine_type,
                    guest_accelerators=[guest_accelerator(pool)],
                    spot=pool.spot,
                    reservation=pool.reservation,
                    disk_size_gb=pool.disk_size_gb,
                    disk_type=settings.disk_type,
                    gvnic=gcp.container.NodePoolNodeConfigGvnicArgs(enabled=True) if settings.gvnic else None,
                    ephemeral_storage_local_ssd_config=(
                        gcp.container.NodePoolNodeConfigEphemeralStorageLocalSsdConfigArgs(
                            local_ssd_count=settings.local_ssds) if settings.local_ssds else None),
                    labels=dict(gpu_pool.labels),
                    taints=[node_taint(t) for t in gpu_pool.taints]),
                # The autoscaler owns the size: a resize is not drift, and replacing the pool for it would
                # kill running jobs (the terraform module ignores initial_node_count on every pool).
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                    ignore_changes=["initialNodeCount"], depends_on=node_roles))))

        config = pulumi.Output.secret(api_kubeconfig(spec, cluster))
        # On a destroy, once every Kubernetes resource is gone (Prometheus's StatefulSet and the team namespaces
        # with their claims), wait until the CSI driver has deleted the disks of their volumes, before the node
        # pools and the cluster go: the cluster deletes no disk itself, and one left behind bills on, unowned.
        volumes_released = local.Command(
            f"{name}-volumes-released", delete=f"{PROGRAM_PYTHON} -m verify.released",
            environment={KUBECONFIG_ENV: config},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster, *node_pools]))
        # Every Kubernetes resource goes through this provider, so it is created after and deleted before what
        # the provider waits for. Kueue's fail-closed webhook needs the firewall rule (the control plane reaches
        # it) and its image pulls need NAT: a destroy that removed them in its first wave left the webhook
        # unreachable, every finalizer update refused and the ClusterQueues undeletable.
        provider = explicit_provider(self, name, config, ready=[*node_pools, webhooks, nat, volumes_released],
                                     identity=cluster.id)
        # CI's preview and read service accounts look at the cluster through these bindings (their previews
        # and drift refreshes read what the stack owns), as EKS's view and read access entries.
        read_access(name, spec, provider, self)
        # Each multi-node pool's Network objects and NCCL plugin installer, once its nodes can exist.
        for pool, gpu_pool in zip(spec.gpu_pools, gpu_pools, strict=True):
            if pool.name in pool_networks:
                fabric_objects(name, pool, gpu_pool, pool_networks[pool.name],
                               pulumi.ResourceOptions(parent=self, provider=provider))

        self.handle = ClusterHandle(
            identity=cluster.id,
            name=spec.name,
            cloud="gcp",
            kubernetes_version=spec.kubernetes_version,
            provider=provider,
            kubeconfig=config,
            # GKE's device plugin names GPUs by device, and its nodes have no NVIDIA container runtime (Google's
            # DCGM exporter manifest, GoogleCloudPlatform/prometheus-engine examples/nvidia-dcgm, runs
            # privileged with DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE=device-name).
            capabilities=Capabilities(gpu_drivers=True, device_plugin=True, physical_gpus=True,
                                      persistent_volumes=True, driver_host_path=GKE_DRIVER_PATH,
                                      gpu_device_ids="device-name", gpu_agents_privileged=True,
                                      # GKE hides the control plane, Dataplane V2 replaces kube-proxy, and DNS
                                      # is kube-dns (with its metrics sidecar), not CoreDNS.
                                      scrapeable=frozenset({"kube-dns"})),
            gpu_pools=gpu_pools,
            # The autoscaler's total ceiling over the pool's zones (total_max_node_count).
            system_max_nodes=spec.system_pool.max_nodes,
            topology_levels=GKE_TOPOLOGY_LEVELS,
        )
        self.register_outputs({"clusterName": cluster.name, "endpoint": cluster.endpoint})
