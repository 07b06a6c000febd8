"""GKE: a private, VPC-native, Workload Identity cluster with GPU pools from zero and GKE's own GPU drivers."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from components.cluster.gke import kubeconfig
from config.errors import ConfigError
from synth import synthesize
from synth.engine import Synthesis
from synth.output import helm_releases
from tests.conftest import synth_with


@pytest.fixture(scope="module")
def gcp_dev() -> Synthesis:
    return synthesize("gcp-dev")


def cluster_inputs(synthesis: Synthesis) -> dict[str, Any]:
    (cluster,) = synthesis.of_type("gcp:container/cluster:Cluster")
    return cluster.inputs


def node_pools(synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    return {p.inputs["name"]: p.inputs for p in synthesis.of_type("gcp:container/nodePool:NodePool")}


def gke_cluster(**overrides: Any) -> dict[str, Any]:
    return {"cloud": "gcp", "name": "ml", "project": "my-project-1", "region": "europe-west4",
            "zones": ["europe-west4-a", "europe-west4-b"],
            "gpuPools": [{"name": "l4", "machineType": "g2-standard-8", "maxNodes": 2}]} | overrides


def test_cluster_is_vpc_native_private_shielded_with_workload_identity(gcp_dev):
    cluster = cluster_inputs(gcp_dev)
    assert cluster["networkingMode"] == "VPC_NATIVE"
    assert cluster["ipAllocationPolicy"] == {"clusterSecondaryRangeName": "pods",
                                             "servicesSecondaryRangeName": "services"}
    assert cluster["workloadIdentityConfig"] == {"workloadPool": "my-ml-platform-dev.svc.id.goog"}
    assert cluster["enableShieldedNodes"] is True
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"  # enforces the teams' NetworkPolicies
    assert cluster["releaseChannel"] == {"channel": "REGULAR"} and cluster["minMasterVersion"] == "1.34"
    assert cluster["masterAuthorizedNetworksConfig"]["cidrBlocks"] == [
        {"cidrBlock": "203.0.113.0/24", "displayName": "office"}]
    assert cluster["deletionProtection"] is False


def test_private_nodes_egress_through_cloud_nat(gcp_dev):
    (nat,) = gcp_dev.of_type("gcp:compute/routerNat:RouterNat")
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    (subnet,) = gcp_dev.of_type("gcp:compute/subnetwork:Subnetwork")
    assert {r["rangeName"] for r in subnet.inputs["secondaryIpRanges"]} == {"pods", "services"}
    assert subnet.inputs["privateIpGoogleAccess"] is True


def test_gpu_pools_have_their_accelerators_drivers_autoscaling_from_zero_and_taint(gcp_dev):
    pools = node_pools(gcp_dev)
    assert set(pools) == {"system", "l4", "a100", "t4"}
    for name in ("l4", "a100", "t4"):
        pool = pools[name]
        (accelerator,) = pool["nodeConfig"]["guestAccelerators"]
        assert accelerator["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "DEFAULT"}
        assert pool["autoscaling"]["totalMinNodeCount"] == 0
        assert pool["nodeConfig"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
        assert pool["nodeConfig"]["labels"]["mlplatform.io/pool"] == name
        assert pool["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    l4 = pools["l4"]["nodeConfig"]
    assert l4["guestAccelerators"][0]["type"] == "nvidia-l4" and l4["spot"] is True
    assert l4["guestAccelerators"][0]["gpuSharingConfig"] == {"gpuSharingStrategy": "TIME_SHARING",
                                                              "maxSharedClientsPerGpu": 4}
    assert pools["a100"]["nodeConfig"]["guestAccelerators"][0]["gpuPartitionSize"] == "1g.5gb"
    assert pools["a100"]["nodeLocations"] == ["us-central1-a", "us-central1-c"]
    assert pools["t4"]["nodeConfig"]["guestAccelerators"][0] | {"gpuDriverInstallationConfig": None} == {
        "type": "nvidia-tesla-t4", "count": 2, "gpuDriverInstallationConfig": None}
    assert pools["system"]["nodeConfig"]["labels"] == {"mlplatform.io/pool": "system"}
    assert "guestAccelerators" not in pools["system"]["nodeConfig"]


def test_capacity_counts_time_shares_and_mig_slices(gcp_dev):
    # l4: 4 nodes x 1 GPU x 4 shares; a100: 2 x 1 x 7 slices of 1g.5gb; t4: 2 x 2.
    assert gcp_dev.outputs["gpuCapacity"] == 16 + 14 + 4


def test_gke_runs_its_own_device_plugin_so_none_is_installed(gcp_dev):
    charts = {r.inputs["chart"]: r.inputs for r in helm_releases(gcp_dev)}
    assert "nvidia-device-plugin" not in charts and not any("fake" in c for c in charts)
    exporter = charts["dcgm-exporter"]["values"]
    assert exporter["extraHostVolumes"] == [{"name": "nvidia-driver", "hostPath": "/home/kubernetes/bin/nvidia"}]


def test_kubeconfig_authenticates_with_the_gke_auth_plugin():
    config = yaml.safe_load(kubeconfig("ml", "10.0.0.2", "Q0E="))
    assert config["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert config["clusters"][0]["cluster"]["server"] == "https://10.0.0.2"


def test_prod_is_protected():
    synthesis = synth_with(cluster=gke_cluster(environment="prod", masterAuthorizedNetworks=[
        {"cidr": "198.51.100.0/24", "name": "vpn"}]))
    (cluster,) = synthesis.of_type("gcp:container/cluster:Cluster")
    assert cluster.protect and cluster.inputs["deletionProtection"] is True


@pytest.mark.parametrize("overrides, message", [
    ({"gpuPools": [{"name": "x", "machineType": "g2-standard-8", "accelerator": "nvidia-tesla-t4", "maxNodes": 1}]},
     "mlplatform:cluster.gpuPools[0]: g2-standard-8 carries nvidia-l4, not nvidia-tesla-t4"),
    ({"gpuPools": [{"name": "x", "machineType": "n1-standard-8", "accelerator": "nvidia-tesla-t4", "gpusPerNode": 3,
                    "maxNodes": 1}]},
     "nvidia-tesla-t4 attaches to N1 machines 1, 2, 4 at a time"),
    ({"gpuPools": [{"name": "x", "machineType": "e2-standard-8", "maxNodes": 1}]},
     "'e2-standard-8' is not a GPU machine type this platform knows"),
    ({"zones": []}, "mlplatform:cluster.zones: no zones given"),
    ({"gpuPools": [{"name": "x", "machineType": "g2-standard-8", "maxNodes": 1, "zones": []}]},
     "mlplatform:cluster.gpuPools[0].zones: an empty zone list places the pool nowhere"),
    ({"environment": "prod"}, "mlplatform:cluster: masterAuthorizedNetworks: a prod cluster needs the networks"),
    ({"gpuPools": [{"name": "x", "machineType": "a2-highgpu-1g", "maxNodes": 1,
                    "sharing": {"migStrategy": "mixed"}}]},
     "GKE cuts every GPU of a node pool into one partition size"),
    ({"gpuPools": [{"name": "x", "machineType": "a2-highgpu-1g", "maxNodes": 1, "migPartitionSize": "1g.10gb",
                    "sharing": {"migStrategy": "single"}}]},
     "needs migPartitionSize, one of nvidia-tesla-a100's MIG profiles: 1g.5gb"),
    ({"gpuPools": [{"name": "x", "machineType": "g2-standard-8", "maxNodes": 1,
                    "sharing": {"timeSlicing": {"replicas": 2, "renameByDefault": True}}}]},
     "GKE time-sharing advertises shares as nvidia.com/gpu"),
    ({"zones": ["us-east1-b"]}, "zone 'us-east1-b' is not a zone of europe-west4"),
    ({"project": "X"}, "mlplatform:cluster.project: 'X' is not a Google Cloud project ID"),
])
def test_bad_gke_config(overrides, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=gke_cluster(**overrides))
    assert message in str(caught.value), str(caught.value)
