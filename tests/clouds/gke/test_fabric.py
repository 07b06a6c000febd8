"""GKE's GPU networks: the NICs a multi-node pool's machine type has, their VPCs and subnets, multi-networking,
GKE's Network objects, Google's NCCL plugin installers, and what a team's pod takes to use them."""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import pytest
import yaml

import versions
from clouds.gke.config import GPU_FABRICS, GPU_MACHINES, NODE_SETTINGS
from config.errors import ConfigError
from core.vocabulary import GPU_TAINT, POOL_LABEL
from synth import PROJECT_DIR
from synth.applied import applied_objects, check_applied, check_cel, check_schemas, cluster_crds, crds_of
from synth.checks import check
from synth.engine import Synthesis
from synth.gomodule import ModuleUnavailable, module_dir
from synth.render import render_stack
from synth.schema import check_manifests, schemas_of
from tests.clouds.gke.test_gke import cluster_inputs, gke_cluster, node_pools
from tests.conftest import cli_config, synth_with, team

MEGA = {"name": "h100", "machineType": "a3-megagpu-8g", "zones": ["europe-west4-b"], "maxNodes": 4,
        "multiNode": True, "spot": True}
HIGH = {"name": "h100x", "machineType": "a3-highgpu-8g", "zones": ["europe-west4-c"], "maxNodes": 2,
        "multiNode": True, "spot": True}
ULTRA = {"name": "h200", "machineType": "a3-ultragpu-8g", "zones": ["europe-west4-a"], "maxNodes": 2,
         "multiNode": True, "spot": True}
NETWORKING = "networking.gke.io/v1"


@pytest.fixture(scope="module")
def fabrics() -> Synthesis:
    return synth_with(cluster=gke_cluster(gpuPools=[MEGA, HIGH, ULTRA], multiNetworking=True),
                      teams=[team("research", 16, queue={"gpus": {"h100": 16}})],
                      capacity={"allowOvercommit": True})


def of(synthesis: Synthesis, type_: str) -> dict[str, dict[str, Any]]:
    return {r.inputs["name"]: r.inputs for r in synthesis.of_type(type_)}


def objects(synthesis: Synthesis, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in synthesis.manifests() if m["kind"] == kind}


# ---- What each machine type's GPUs have -------------------------------------------------------------------

def test_each_multi_node_machine_type_has_its_gpu_network():
    # Compute Engine's "Networking and GPU machines" and GKE's GPUDirect pages (clouds/gke/config.py).
    assert {machine: (f.kind, f.gpu_nics, f.host_nics) for machine, f in GPU_FABRICS.items()} == {
        "a3-highgpu-8g": ("tcpx", 4, 0), "a3-megagpu-8g": ("tcpxo", 8, 0), "a3-ultragpu-8g": ("rdma", 8, 1),
        "a4-highgpu-8g": ("rdma", 8, 1)}
    assert {f.device_mode for f in GPU_FABRICS.values()} == {"NetDevice", "RDMA"}
    # Each is an eight-GPU machine of the table, with gVNIC (the GPU NICs are gVNICs, or need it beside them).
    for machine in GPU_FABRICS:
        assert GPU_MACHINES[machine].counts == (8,) and NODE_SETTINGS[machine].gvnic


@pytest.mark.parametrize("machine", ["a2-ultragpu-8g", "a2-megagpu-16g", "g2-standard-96", "a3-highgpu-4g"])
def test_a_machine_type_without_gpu_nics_takes_no_multi_node_pool(machine):
    pool = {"name": "x", "machineType": machine, "zones": ["us-central1-a"], "maxNodes": 2, "multiNode": True,
            "spot": True}
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=gke_cluster(region="us-central1", zones=["us-central1-a"], gpuPools=[pool]))
    message = str(caught.value)
    assert f"mlplatform:cluster.gpuPools[0]" in message and "no GPUDirect-TCPX, -TCPXO or RDMA NICs" in message
    assert "multi-node machine types: a3-highgpu-8g, a3-megagpu-8g, a3-ultragpu-8g, a4-highgpu-8g" in message


# ---- The cloud's side: VPCs, subnets, multi-networking ----------------------------------------------------

def test_each_gpu_nic_of_tcpx_and_tcpxo_has_a_vpc_subnet_and_firewall_rule_of_its_own(fabrics):
    networks, subnets = of(fabrics, "gcp:compute/network:Network"), of(fabrics, "gcp:compute/subnetwork:Subnetwork")
    firewalls = of(fabrics, "gcp:compute/firewall:Firewall")
    for pool, count in (("h100", 8), ("h100x", 4)):
        names = [f"ml-{pool}-gpu-{index}" for index in range(count)]
        assert all(networks[n]["mtu"] == 8244 and networks[n]["autoCreateSubnetworks"] is False for n in names)
        assert not any(f"ml-{pool}-gpu-{count}" in table for table in (networks, subnets))
        for name in names:
            assert subnets[name]["region"] == "europe-west4"
            assert subnets[name]["network"] == f"{name}-vpc-id"
            rule = firewalls[name]
            # Only the pool's nodes on that NIC's subnet reach it.
            assert rule["sourceRanges"] == [subnets[name]["ipCidrRange"]] and rule["direction"] == "INGRESS"
        assert "networkProfile" not in networks[names[0]]


def test_rdma_nics_share_one_roce_vpc_of_the_pools_zone_beside_a_second_gvnic(fabrics):
    networks, subnets = of(fabrics, "gcp:compute/network:Network"), of(fabrics, "gcp:compute/subnetwork:Subnetwork")
    roce = networks["ml-h200-rdma"]
    assert roce["networkProfile"] == "projects/my-project-1/global/networkProfiles/europe-west4-a-vpc-roce"
    assert roce["mtu"] == 8896
    assert [s for s in subnets if s.startswith("ml-h200-rdma-")] == [f"ml-h200-rdma-{i}" for i in range(8)]
    assert {subnets[f"ml-h200-rdma-{i}"]["network"] for i in range(8)} == {"ml-h200-rdma-vpc-id"}
    assert networks["ml-h200-host-1"]["mtu"] == 8896 and "networkProfile" not in networks["ml-h200-host-1"]
    # A RoCE VPC takes no firewall rules (it allows ingress implicitly); the host gVNIC's VPC has its own.
    firewalls = of(fabrics, "gcp:compute/firewall:Firewall")
    assert "ml-h200-host-1" in firewalls and not any(name.startswith("ml-h200-rdma") for name in firewalls)


def test_gpu_nic_subnets_overlap_nothing_and_fit_every_node(fabrics):
    subnets = of(fabrics, "gcp:compute/subnetwork:Subnetwork")
    ranges = [ipaddress.ip_network(s["ipCidrRange"]) for s in subnets.values()]
    ranges += [ipaddress.ip_network(r["ipCidrRange"]) for s in subnets.values() for r in s.get("secondaryIpRanges", [])]
    assert all(not a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    gpu = [ipaddress.ip_network(s["ipCidrRange"]) for name, s in subnets.items() if name != "ml-nodes"]
    assert len(gpu) == 8 + 4 + 9
    assert all(net.subnet_of(ipaddress.ip_network("192.168.0.0/16")) and net.num_addresses - 4 >= 1000
               for net in gpu)


def test_multi_node_pools_get_their_nics_and_the_cluster_multi_networking(fabrics):
    cluster = cluster_inputs(fabrics)
    assert cluster["enableMultiNetworking"] is True and cluster["datapathProvider"] == "ADVANCED_DATAPATH"
    pools = node_pools(fabrics)
    mega = pools["h100"]["networkConfig"]["additionalNodeNetworkConfigs"]
    assert mega == [{"network": f"ml-h100-gpu-{i}", "subnetwork": f"ml-h100-gpu-{i}"} for i in range(8)]
    ultra = pools["h200"]["networkConfig"]["additionalNodeNetworkConfigs"]
    assert ultra == [{"network": "ml-h200-host-1", "subnetwork": "ml-h200-host-1"},
                     *({"network": "ml-h200-rdma", "subnetwork": f"ml-h200-rdma-{i}"} for i in range(8))]
    assert all(pools[p]["nodeConfig"]["gvnic"] == {"enabled": True} for p in ("h100", "h100x", "h200"))


def test_a_cluster_without_multi_node_pools_is_left_as_it_was(gcp_dev_multi_node):
    # Multi-networking cannot be turned on in place (the cluster would be replaced): only stacks that ask for it
    # (multiNetworking, which a multi-node pool needs) get it; one without has neither it nor GPU NICs.
    plain = synth_with(cluster=gke_cluster())
    assert "enableMultiNetworking" not in cluster_inputs(plain)
    assert not any("networkConfig" in pool for pool in node_pools(plain).values())
    assert len(plain.of_type("gcp:compute/network:Network")) == 1
    assert not [m for m in plain.manifests() if m["apiVersion"] == NETWORKING]
    assert cluster_inputs(gcp_dev_multi_node)["enableMultiNetworking"] is True


def test_multi_networking_is_the_stacks_choice_and_stays_when_the_pools_go():
    # Removing the last multi-node pool leaves the cluster as it is: only multiNetworking changes it.
    synthesis = synth_with(cluster=gke_cluster(multiNetworking=True))
    assert cluster_inputs(synthesis)["enableMultiNetworking"] is True
    assert len(synthesis.of_type("gcp:compute/network:Network")) == 1
    assert not [m for m in synthesis.manifests() if m["apiVersion"] == NETWORKING]


# ---- The cluster's side: GKE's Network objects ------------------------------------------------------------

@pytest.fixture(scope="module")
def networking_crds() -> list[dict[str, Any]]:
    """GKE's multi-networking CRDs at versions.GKE_NETWORKING_API, from Go's module proxy (cached outside the
    repo); GKE installs them, so no chart of ours carries them."""
    module, version = versions.GKE_NETWORKING_API
    try:
        module_dir(module, version)
    except ModuleUnavailable as exc:
        pytest.skip(f"GKE's networking CRDs unavailable, so the Network objects go unchecked: {exc}")
    crds = cluster_crds([{"apiVersion": NETWORKING}])
    assert {crd["spec"]["names"]["kind"] for crd in crds} >= {"Network", "GKENetworkParamSet"}
    return crds


def test_each_nic_has_a_gke_network_and_param_set_naming_its_own_subnet(fabrics):
    param_sets, networks = objects(fabrics, "GKENetworkParamSet"), objects(fabrics, "Network")
    subnets = of(fabrics, "gcp:compute/subnetwork:Subnetwork")
    assert sorted(param_sets) == sorted(networks) and len(networks) == 8 + 4 + 9
    for name, params in param_sets.items():
        spec = params["spec"]
        # It names the subnet the cloud has, in that subnet's VPC.
        assert subnets[spec["vpcSubnet"]]["network"] == f"{spec['vpc']}-vpc-id"
        assert spec["deviceMode"] == ("RDMA" if "-rdma-" in name else "NetDevice")
        assert networks[name]["spec"] == {"type": "Device", "parametersRef": {
            "group": "networking.gke.io", "kind": "GKENetworkParamSet", "name": name}}


def test_the_network_objects_pass_gkes_own_crds(fabrics, networking_crds):
    networking = [m for m in fabrics.manifests() if m["apiVersion"] == NETWORKING]
    report = check_manifests(networking, custom=schemas_of(networking_crds))
    assert report.errors == [] and report.unchecked == [] and len(report.checked) == len(networking) == 42
    assert check_cel(networking, networking_crds).failures == []
    # Both are cluster-scoped: a namespace on them would be refused.
    scopes = {crd["spec"]["names"]["kind"]: crd["spec"]["scope"] for crd in networking_crds}
    assert scopes["Network"] == scopes["GKENetworkParamSet"] == "Cluster"
    assert not any("namespace" in m["metadata"] for m in networking)


def test_a_network_object_gke_would_refuse_fails_the_check(fabrics, networking_crds):
    # The check has teeth: a device mode GKE's enum lacks, and a field its schema does not declare.
    (param_set, *_) = objects(fabrics, "GKENetworkParamSet").values()
    bad_mode = copy.deepcopy(param_set) | {"spec": {**param_set["spec"], "deviceMode": "SRIOV"}}
    stray = copy.deepcopy(param_set) | {"spec": {**param_set["spec"], "subnet": "x"}}
    report = check_manifests([bad_mode, stray], custom=schemas_of(networking_crds))
    assert len(report.errors) == 2 and "deviceMode" in report.errors[0] and "subnet" in report.errors[1]


def test_the_pod_annotations_name_the_pools_networks_in_the_nodes_order(fabrics):
    pools = {p["name"]: p for p in fabrics.outputs["gpuPools"]}
    networks = objects(fabrics, "Network")

    def interfaces(pool: str) -> list[dict[str, str]]:
        annotations = pools[pool]["podAnnotations"]
        assert annotations["networking.gke.io/default-interface"] == "eth0"
        return json.loads(annotations["networking.gke.io/interfaces"])

    assert interfaces("h100") == [{"interfaceName": "eth0", "network": "default"},
                                  *({"interfaceName": f"eth{i + 1}", "network": f"h100-gpu-{i}"} for i in range(8))]
    # A3 Ultra's eth1 is the node's second gVNIC, not the pod's: the RDMA NICs are eth2 to eth9.
    assert interfaces("h200") == [{"interfaceName": "eth0", "network": "default"},
                                  *({"interfaceName": f"eth{i + 2}", "network": f"h200-rdma-{i}"} for i in range(8))]
    assert all(i["network"] in networks for pool in ("h100", "h100x", "h200") for i in interfaces(pool)[1:])


# ---- Google's NCCL plugin installers ----------------------------------------------------------------------

def test_each_pool_gets_its_fabrics_installer_on_its_own_nodes_only(fabrics):
    daemon_sets = objects(fabrics, "DaemonSet")
    expected = {"nccl-tcpxo-installer-h100": versions.GPUDIRECT_TCPXO_INSTALLER_IMAGE,
                "nccl-tcpx-installer-h100x": versions.GPUDIRECT_TCPX_INSTALLER_IMAGE,
                "nccl-rdma-installer-h200": versions.GPUDIRECT_RDMA_INSTALLER_IMAGE}
    for name, image in expected.items():
        pod = daemon_sets[name]["spec"]["template"]["spec"]
        assert daemon_sets[name]["metadata"]["namespace"] == "kube-system"
        assert pod["initContainers"][-1]["image"] == image
        assert [c["image"] for c in pod["containers"]] == [versions.GKE_PAUSE_IMAGE]
        pool = name.rsplit("-", 1)[1]
        (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"]
        assert term == {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": [pool]}]}
        # Exactly the GPU taint, not every taint (Google's manifests tolerate all).
        assert pod["tolerations"] == [GPU_TAINT.toleration()]
        assert pod["priorityClassName"] == "system-node-critical"
    # TCPX's and TCPXO's daemons get the GPUs by the NRI device injector (their nccl-test-latest.yaml run them
    # unprivileged, named in the pod's devices.gke.io annotation): on those pools, not on RDMA's.
    for pool in ("h100", "h100x"):
        injector = daemon_sets[f"nri-device-injector-{pool}"]["spec"]["template"]["spec"]
        assert injector["containers"][0]["image"] == versions.NRI_DEVICE_INJECTOR_IMAGE
    assert not any(name.endswith("h200") and "nri" in name for name in daemon_sets)
    tcpxo = daemon_sets["nccl-tcpxo-installer-h100"]["spec"]["template"]["spec"]
    assert tcpxo["initContainers"][0]["image"] == versions.GPUDIRECT_TCPXO_PREINSTALL_IMAGE


def test_every_image_the_fabric_runs_is_pinned():
    images = [versions.GPUDIRECT_TCPX_INSTALLER_IMAGE, versions.GPUDIRECT_TCPX_DAEMON_IMAGE,
              versions.GPUDIRECT_TCPXO_INSTALLER_IMAGE, versions.GPUDIRECT_TCPXO_DAEMON_IMAGE,
              versions.GPUDIRECT_RDMA_INSTALLER_IMAGE, versions.NRI_DEVICE_INJECTOR_IMAGE, versions.GKE_PAUSE_IMAGE,
              versions.GPUDIRECT_TCPXO_PREINSTALL_IMAGE, versions.GPUDIRECT_RDMA_TEST_IMAGE]
    for image in images:
        reference = image.rsplit("/", 1)[-1]
        assert "@sha256:" in reference or (":" in reference and not reference.endswith(":latest")), image


def test_the_fabric_objects_pass_the_schemas_and_keep_the_rules(fabrics, charts):
    # The DaemonSets against Kubernetes' strict schemas; everything else with a CRD against it, CEL included.
    report = check_manifests([m for m in fabrics.manifests() if m["kind"] == "DaemonSet"])
    assert report.errors == [] and report.unchecked == [] and len(report.checked) == 5
    rendering = render_stack(fabrics)
    # The JobSet controller, Topology, flavors and queues against their CRDs; only GKE's own network objects
    # have no CRD here (checked by their fields above).
    schemas = check_schemas(fabrics, rendering)
    assert schemas.errors == []
    try:
        module_dir(*versions.GKE_NETWORKING_API)
        assert schemas.unchecked == []
    except ModuleUnavailable as exc:
        # Without Go's module proxy, GKE's own network objects go unchecked, each named with the reason.
        assert {name.split()[1] for name in schemas.unchecked} == {"GKENetworkParamSet", "Network"}
        assert all(str(exc) in name for name in schemas.unchecked)
    cel = check_cel(applied_objects(fabrics, rendering), crds_of(rendering, fabrics.manifests()))
    assert cel.failures == [] and cel.unevaluated == []
    assert [str(v) for v in check(fabrics)] == []


# ---- What a team's pod takes ------------------------------------------------------------------------------

def test_every_team_namespace_gets_each_fabrics_nccl_settings(fabrics):
    maps = {m["metadata"]["name"]: m["data"] for m in fabrics.manifests()
            if m["kind"] == "ConfigMap" and m["metadata"].get("namespace") == "research"}
    assert maps["nccl-h100"]["NCCL_FASTRAK_IFNAME"] == "eth1,eth2,eth3,eth4,eth5,eth6,eth7,eth8"
    assert maps["nccl-h100"]["NCCL_FASTRAK_LLCM_DEVICE_DIRECTORY"] == "/dev/aperture_devices"
    assert maps["nccl-h100x"]["NCCL_GPUDIRECTTCPX_SOCKET_IFNAME"] == "eth1,eth2,eth3,eth4"
    assert maps["nccl-h200"] == {"LD_LIBRARY_PATH": "/usr/local/nvidia/lib64"}
    pools = {p["name"]: p for p in fabrics.outputs["gpuPools"]}
    assert pools["h100"]["ncclConfigMap"] == "nccl-h100" and pools["h100"]["ncclEnv"] == maps["nccl-h100"]


# ---- Config refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    # Multi-networking is asked for, never turned on (and the cluster replaced) by adding a pool.
    ({"multiNetworking": False, "gpuPools": [MEGA]},
     "mlplatform:cluster: gpuPools: h100 attach pods to their GPU NICs through GKE multi-networking: set "
     "cluster.multiNetworking: true"),
    ({"network": {"gpuNicsCidr": "10.10.0.0/16"}, "gpuPools": [MEGA]},
     "mlplatform:cluster: network: subnetCidr 10.10.0.0/20 overlaps gpuNicsCidr 10.10.0.0/16"),
    ({"network": {"gpuNicsCidr": "192.168.0.0/20"}},
     "192.168.0.0/20 is smaller than the /18 each multi-node pool's GPU NIC subnets take"),
    ({"network": {"gpuNicsCidr": "192.168.0.0/18"}, "gpuPools": [MEGA, ULTRA]},
     "network.gpuNicsCidr 192.168.0.0/18 holds the GPU NIC subnets of 1 multi-node pools (a /18 each); 2 are "
     "declared: give a larger range"),
    ({"name": "a-cluster-of-twenty-four", "gpuPools": [MEGA | {"name": "h100-for-the-research-teams-runs"}]},
     "gpuPools[0] (h100-for-the-research-teams-runs): its GPU NICs' networks are named "
     "a-cluster-of-twenty-four-h100-for-the-research-teams-runs-rdma-7 and the like, 64 characters"),
])
def test_config_refuses_gpu_nics_it_cannot_place(overrides, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=gke_cluster(**{"multiNetworking": True} | overrides), teams=[team("research", 16)],
                   capacity={"allowOvercommit": True})
    assert message in str(caught.value), str(caught.value)
    assert "Pulumi.test.yaml" in str(caught.value)


# ---- gcp-dev's A3 pool: a multi-node job is expressible there ---------------------------------------------

@pytest.fixture(scope="module")
def gcp_dev_multi_node() -> Synthesis:
    """gcp-dev's own stack file: an A3 Mega pool of two nodes, dedicated to research and guaranteed to it whole."""
    from synth import synthesize
    return synthesize("gcp-dev")


def test_gcp_dev_with_an_a3_pool_admits_a_two_node_gang_on_its_fabric(gcp_dev_multi_node):
    config = yaml.safe_load((PROJECT_DIR / "Pulumi.gcp-dev.yaml").read_text())["config"]
    assert config["mlplatform:cluster"]["multiNetworking"] is True
    flavors = {m["metadata"]["name"]: m for m in gcp_dev_multi_node.manifests() if m["kind"] == "ResourceFlavor"}
    assert flavors["h100"]["spec"]["topologyName"]
    assert flavors["h100"]["spec"]["nodeLabels"][POOL_LABEL] == "h100"
    pool = node_pools(gcp_dev_multi_node)["h100"]
    assert pool["placementPolicy"] == {"type": "COMPACT"} and len(
        pool["networkConfig"]["additionalNodeNetworkConfigs"]) == 8
    assert "nccl-h100" in {m["metadata"]["name"] for m in gcp_dev_multi_node.manifests()
                           if m["kind"] == "ConfigMap" and m["metadata"].get("namespace") == "research"}
    # Research's queue holds both nodes' GPUs, so its 2x8 gang is admitted whole; inference cannot use the pool.
    queues = {m["metadata"]["name"]: m["spec"] for m in gcp_dev_multi_node.manifests() if m["kind"] == "ClusterQueue"}

    def h100_quota(queue: str) -> list[dict[str, Any]]:
        return [r for group in queues[queue]["resourceGroups"] for flavor in group["flavors"]
                if flavor["name"] == "h100" for r in flavor["resources"] if r["name"] == "nvidia.com/gpu"]
    assert [r["nominalQuota"] for r in h100_quota("research")] == ["16"] and h100_quota("inference") == []


def test_the_docs_name_the_sidecar_images_of_the_installed_plugins():
    # A team copies the daemon sidecar's image from docs/multi-node.md: it must be the pinned release's.
    page = (PROJECT_DIR / "docs" / "multi-node.md").read_text()
    assert versions.GPUDIRECT_TCPX_DAEMON_IMAGE in page and versions.GPUDIRECT_TCPXO_DAEMON_IMAGE in page


def test_the_fabric_agents_run_on_their_own_pool_and_mount_every_volume_they_declare(fabrics, charts):
    # Each installer and injector is a per-node agent of one pool, not a platform workload the system pool
    # should hold; and Google's manifests' unused volume of the plugin's folder is not carried over.
    report = check_applied(fabrics, render_stack(fabrics))
    agents = [p for p in report.placement.problems if "installer" in p or "injector" in p]
    assert agents == [] and report.mounts == []


def test_a_fabric_agent_that_cannot_reach_its_pool_is_named():
    gcp_dev = synth_with(cluster=gke_cluster(gpuPools=[MEGA], multiNetworking=True),
                         teams=[team("research", 16, queue={"gpus": {"h100": 16}})])
    daemon_set = objects(gcp_dev, "DaemonSet")["nccl-tcpxo-installer-h100"]
    daemon_set["spec"]["template"]["spec"]["tolerations"] = []
    report = check_applied(gcp_dev, render_stack(gcp_dev))
    assert [p for p in report.placement.problems if "nccl-tcpxo-installer-h100" in p] == [
        "stack: DaemonSet kube-system/nccl-tcpxo-installer-h100 is the GPU network agent of pool h100 but cannot "
        "run there: it does not tolerate the h100 taint nvidia.com/gpu=present:NoSchedule, so the pool's pods find "
        "no NCCL plugin. To change: clouds/gke/fabric.py"]


# ---- A4: A3 Ultra's fabric, on B200s ----------------------------------------------------------------------

A4 = {"name": "b200", "machineType": "a4-highgpu-8g", "zones": ["europe-west4-b"], "maxNodes": 2,
      "multiNode": True, "reservation": "b200-block"}


@pytest.fixture(scope="module")
def a4() -> Synthesis:
    return synth_with(cluster=gke_cluster(gpuPools=[A4], multiNetworking=True),
                      teams=[team("research", 16, queue={"gpus": {"b200": 16}})])


def test_an_a4_multi_node_pool_is_placed_compactly_with_its_b200s_nics_and_disks(a4):
    # Config refused it by name before; now it is A3 Ultra's arrangement (clouds/gke/config.py names the sources).
    pool = node_pools(a4)["b200"]
    assert pool["placementPolicy"] == {"type": "COMPACT"} and pool["nodeLocations"] == ["europe-west4-b"]
    node = pool["nodeConfig"]
    assert node["machineType"] == "a4-highgpu-8g"
    assert node["guestAccelerators"][0]["type"] == "nvidia-b200" and node["guestAccelerators"][0]["count"] == 8
    assert node["gvnic"] == {"enabled": True} and node["ephemeralStorageLocalSsdConfig"] == {"localSsdCount": 32}
    assert node["diskType"] == "hyperdisk-balanced"
    assert node["reservationAffinity"]["values"] == ["b200-block"]
    # The second gVNIC's network, then the eight RDMA subnets of one RoCE VPC.
    assert [n["subnetwork"] for n in pool["networkConfig"]["additionalNodeNetworkConfigs"]] == [
        "ml-b200-host-1", *(f"ml-b200-rdma-{i}" for i in range(8))]


def test_an_a4_pools_rdma_nics_share_a_roce_vpc_of_its_zone(a4):
    networks, subnets = of(a4, "gcp:compute/network:Network"), of(a4, "gcp:compute/subnetwork:Subnetwork")
    assert networks["ml-b200-rdma"]["networkProfile"] == (
        "projects/my-project-1/global/networkProfiles/europe-west4-b-vpc-roce")
    assert {subnets[f"ml-b200-rdma-{i}"]["network"] for i in range(8)} == {"ml-b200-rdma-vpc-id"}
    firewalls = of(a4, "gcp:compute/firewall:Firewall")
    assert "ml-b200-host-1" in firewalls and not any(name.startswith("ml-b200-rdma") for name in firewalls)
    param_sets = objects(a4, "GKENetworkParamSet")
    assert sorted(name for name in param_sets if name.startswith("b200-")) == sorted(
        ["b200-host-1", *(f"b200-rdma-{i}" for i in range(8))])
    assert {param_sets[f"b200-rdma-{i}"]["spec"]["deviceMode"] for i in range(8)} == {"RDMA"}


def test_an_a4_pool_gets_the_rdma_installer_and_its_pods_gib(a4):
    # Google's one gIB installer serves both (gpudirect-rdma/nccl-rdma-installer.yaml at the pinned commit
    # selects nvidia-h200-141gb and nvidia-b200; nccl-test-a4.yaml takes nccl-test.yaml's interfaces and image).
    daemon_sets = objects(a4, "DaemonSet")
    installer = daemon_sets["nccl-rdma-installer-b200"]["spec"]["template"]["spec"]
    assert installer["initContainers"][-1]["image"] == versions.GPUDIRECT_RDMA_INSTALLER_IMAGE
    assert not any("nri" in name for name in daemon_sets)
    (output,) = [p for p in a4.outputs["gpuPools"] if p["name"] == "b200"]
    interfaces = json.loads(output["podAnnotations"]["networking.gke.io/interfaces"])
    assert interfaces == [{"interfaceName": "eth0", "network": "default"},
                          *({"interfaceName": f"eth{i + 2}", "network": f"b200-rdma-{i}"} for i in range(8))]
    assert output["ncclEnv"] == {"LD_LIBRARY_PATH": "/usr/local/nvidia/lib64"}
    assert output["fabricPod"]["ncclEnvScript"] == "/usr/local/gib/scripts/set_nccl_env.sh"
    # `make verify` runs Google's RDMA test image on it, judged against A4's floor.
    from core.outputs import PoolOutput
    from verify import nccl
    assert nccl.launcher(PoolOutput.read(output)).image == versions.GPUDIRECT_RDMA_TEST_IMAGE
    assert nccl.FLOORS["a4-highgpu-8g"].floor_gbs == 200
    # research's namespace admits the pool's pods (components/pod_security.py): no refusal to warn of.
    assert not [w for w in a4.warnings if "refused at creation" in w]
    (research,) = [m for m in a4.manifests() if m["kind"] == "Namespace" and m["metadata"]["name"] == "research"]
    assert research["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize(("pool", "message"), [
    # Not sold on demand (AI Hypercomputer's consumption options): Spot or a reservation.
    ({"reservation": None}, "gpuPools[0]: a4-highgpu-8g is not sold on demand (Spot or flex-start VMs, or a "
                            "reservation only): set spot: true, or reservation: <name> of a reservation of them"),
    # B200s in europe-west4-b only (skypilot-catalog's vms.csv), not A3 Ultra's europe-west4-a.
    ({"zones": ["europe-west4-a"]}, "gpuPools[0] (b200): nvidia-b200 is not offered in europe-west4-a: "
                                    "europe-west4 has it only in europe-west4-b"),
    ({"gpusPerNode": 4}, "a4-highgpu-8g carries 8 GPU(s), not 4"),
    ({"accelerator": "nvidia-h200-141gb"}, "a4-highgpu-8g carries nvidia-b200, not nvidia-h200-141gb"),
    # H200's MIG profiles are not B200's (GKE's partition_gpu.go).
    ({"sharing": {"migStrategy": "single"}, "migPartitionSize": "1g.18gb", "multiNode": False},
     "migStrategy single on GKE needs migPartitionSize, one of nvidia-b200's MIG profiles: 1g.23gb, 1g.45gb"),
], ids=["on-demand", "zone-without-b200", "four-gpus", "h200", "h200-mig-profile"])
def test_config_refuses_what_a4_cannot_do(pool, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=gke_cluster(gpuPools=[{k: v for k, v in (A4 | pool).items() if v is not None}],
                                       multiNetworking=True))
    assert message in str(caught.value), str(caught.value)
