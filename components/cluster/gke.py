"""A GKE cluster: VPC-native, private nodes behind Cloud NAT, Workload Identity, shielded nodes, a system node
pool and GPU node pools that scale from zero with GKE-installed drivers.

GKE installs NVIDIA's drivers and its own device plugin, and taints GPU nodes itself; the handle says so, and
our pools declare the same taint so that the handle stays true.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_gcp as gcp
from pulumi.output import UNKNOWN, Unknown

from components.cluster import exec_kubeconfig, explicit_provider
from components.handle import POOL_LABEL, SYSTEM_POOL, Capabilities, ClusterHandle, GpuPool, platform_gpu_pool
from config.gke import GkeClusterConfig, GkeGpuPool

NODE_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
              "roles/stackdriver.resourceMetadata.writer", "roles/artifactregistry.reader")
# Where GKE puts NVIDIA's driver on a GPU node, for agents (the DCGM exporter) that read the GPUs directly.
GKE_DRIVER_PATH = "/home/kubernetes/bin/nvidia"
CLOUD_TAINT_EFFECT = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE",
                      "NoExecute": "NO_EXECUTE"}


def kubeconfig(name: str, endpoint: str, certificate_authority: str | None) -> str:
    return exec_kubeconfig(name, f"https://{endpoint}", certificate_authority, {
        "command": "gke-gcloud-auth-plugin", "provideClusterInfo": True, "interactiveMode": "Never",
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


def gke_gpu_pools(spec: GkeClusterConfig) -> tuple[GpuPool, ...]:
    return tuple(
        platform_gpu_pool(pool.name, pool.accelerator_type, gpus_per_node=pool.gpus, min_nodes=0,
                          max_nodes=pool.max_nodes, spot=pool.spot, sharing=pool.sharing,
                          mig_partitions=pool.mig_partitions)
        for pool in spec.gpu_pools
    )


class GkeCluster(pulumi.ComponentResource):
    handle: ClusterHandle

    def __init__(self, name: str, spec: GkeClusterConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:GkeCluster", name, None, opts)
        prod = spec.environment == "prod"
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
        gcp.compute.RouterNat(f"{name}-nat", name=spec.name, router=router.name, region=spec.region,
                              nat_ip_allocate_option="AUTO_ONLY",
                              source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES", opts=child)

        nodes_account = gcp.serviceaccount.Account(f"{name}-nodes", account_id=f"{spec.name}-nodes"[:30],
                                                   display_name=f"Nodes of {spec.name}", opts=child)
        for role in NODE_ROLES:
            gcp.projects.IAMMember(f"{name}-nodes-{role.split('/')[1]}", project=spec.project, role=role,
                                   member=nodes_account.email.apply(lambda email: f"serviceAccount:{email}"),
                                   opts=child)

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
            # The default pool goes at once; the managed pools below replace it.
            remove_default_node_pool=True,
            initial_node_count=1,
            min_master_version=spec.kubernetes_version,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=spec.release_channel),
            workload_identity_config=gcp.container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{spec.project}.svc.id.goog"),
            enable_shielded_nodes=True,
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
            deletion_protection=prod,
            opts=kept,
        )

        node_config = {
            "service_account": nodes_account.email,
            "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            "shielded_instance_config": gcp.container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_integrity_monitoring=True),
            # Pods get Google credentials from Workload Identity, never from the node's account.
            "workload_metadata_config": gcp.container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                mode="GKE_METADATA"),
        }
        management = gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True)
        system = gcp.container.NodePool(
            f"{name}-system", name="system", cluster=cluster.id, location=spec.region,
            autoscaling=gcp.container.NodePoolAutoscalingArgs(total_min_node_count=spec.system_pool.min_nodes,
                                                              total_max_node_count=spec.system_pool.max_nodes),
            initial_node_count=1, management=management,
            node_config=gcp.container.NodePoolNodeConfigArgs(machine_type=spec.system_pool.machine_type,
                                                             labels={POOL_LABEL: SYSTEM_POOL}, **node_config),
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(ignore_changes=["initialNodeCount"])))

        gpu_pools = gke_gpu_pools(spec)
        node_pools = [system]
        for pool, gpu_pool in zip(spec.gpu_pools, gpu_pools, strict=True):
            node_pools.append(gcp.container.NodePool(
                f"{name}-{pool.name}", name=pool.name, cluster=cluster.id, location=spec.region,
                node_locations=pool.zones or spec.zones,
                autoscaling=gcp.container.NodePoolAutoscalingArgs(total_min_node_count=0,
                                                                  total_max_node_count=pool.max_nodes,
                                                                  location_policy="ANY"),
                initial_node_count=0, management=management,
                node_config=gcp.container.NodePoolNodeConfigArgs(
                    machine_type=pool.machine_type,
                    guest_accelerators=[guest_accelerator(pool)],
                    spot=pool.spot,
                    disk_size_gb=pool.disk_size_gb,
                    disk_type="pd-balanced",
                    labels=dict(gpu_pool.labels),
                    taints=[gcp.container.NodePoolNodeConfigTaintArgs(key=t.key, value=t.value,
                                                                      effect=CLOUD_TAINT_EFFECT[t.effect])
                            for t in gpu_pool.taints],
                    **node_config),
                opts=child))

        config = pulumi.Output.secret(api_kubeconfig(spec, cluster))
        provider = explicit_provider(self, name, config, ready=node_pools)

        self.handle = ClusterHandle(
            name=spec.name,
            cloud="gcp",
            provider=provider,
            kubeconfig=config,
            capabilities=Capabilities(gpu_drivers=True, device_plugin=True, physical_gpus=True,
                                      persistent_volumes=True, driver_host_path=GKE_DRIVER_PATH),
            gpu_pools=gpu_pools,
        )
        self.register_outputs({"clusterName": cluster.name, "endpoint": cluster.endpoint})
