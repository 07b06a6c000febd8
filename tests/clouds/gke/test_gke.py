"""GKE: a private, VPC-native, Workload Identity cluster with GPU pools from zero and GKE's own GPU drivers."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml

from clouds.gke.cluster import gke_gpu_pools, kubeconfig, maintenance_policy
from core.handle import Capabilities
from components.monitoring import DCGM_COUNTERS, dcgm_exporter_values
from config.errors import ConfigError
from clouds.gke.config import GkeClusterConfig
from core.gpus import GPU_MODELS
from core.webhooks import WEBHOOK_PORTS_FILE, webhook_ports
from synth.engine import Resource, Synthesis
from synth.render import Rendering, charts_available, stack_rendering, stack_synthesis
from synth.schema import UPSTREAM_DIR
from synth.webhooks import derived_webhook_ports, platform_stacks, webhook_pod_ports
from tests.conftest import stack_config, synth_with


@pytest.fixture(scope="module")
def gcp_dev() -> Synthesis:
    return stack_synthesis("gcp-dev")


def cluster_inputs(synthesis: Synthesis) -> dict[str, Any]:
    (cluster,) = synthesis.of_type("gcp:container/cluster:Cluster")
    return cluster.inputs


def node_pools(synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    return {p.inputs["name"]: p.inputs for p in synthesis.of_type("gcp:container/nodePool:NodePool")}


def gke_cluster(**overrides: Any) -> dict[str, Any]:
    return {"cloud": "gcp", "name": "ml", "project": "my-project-1",
            "region": "europe-west4",
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


def webhook_firewall(synthesis: Synthesis) -> list[Resource]:
    """The control plane's rule to the nodes' webhook ports (the GPU NICs' VPCs have rules of their own)."""
    return [r for r in synthesis.of_type("gcp:compute/firewall:Firewall") if r.name.endswith("-webhooks")]


def test_private_nodes_egress_through_cloud_nat(gcp_dev):
    (nat,) = gcp_dev.of_type("gcp:compute/routerNat:RouterNat")
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    # The nodes' own subnet (the h100 pool's GPU NICs have subnets of their own, in VPCs of their own).
    (subnet,) = [s for s in gcp_dev.of_type("gcp:compute/subnetwork:Subnetwork") if s.name == "ml-gcp-dev-nodes"]
    assert {r["rangeName"] for r in subnet.inputs["secondaryIpRanges"]} == {"pods", "services"}
    assert subnet.inputs["privateIpGoogleAccess"] is True


def test_gpu_pools_have_their_accelerators_drivers_autoscaling_from_zero_and_taint(gcp_dev):
    pools = node_pools(gcp_dev)
    assert set(pools) == {"system", "cpu", "l4", "a100", "t4", "h100"}
    for name in ("l4", "a100", "t4", "h100"):
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
    # l4: 4 nodes x 1 GPU x 4 shares; a100: 2 x 1 x 7 slices of 1g.5gb; t4: 2 x 2; h100: 2 x 8.
    assert gcp_dev.outputs["gpuCapacity"] == 16 + 14 + 4 + 16


def test_gke_runs_its_own_device_plugin_so_none_is_installed(gcp_dev):
    charts = {r.inputs["chart"]: r.inputs for r in gcp_dev.releases()}
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


# ---- A `pulumi up` that succeeds on a private cluster -------------------------------------------------------

def nodes_account_urn(synthesis: Synthesis) -> str:
    (account,) = synthesis.of_type("gcp:serviceaccount/account:Account")
    return account.urn


def test_the_control_plane_reaches_every_webhook_port_on_the_nodes(gcp_dev):
    (rule,) = webhook_firewall(gcp_dev)
    assert rule.inputs["direction"] == "INGRESS"
    assert rule.inputs["sourceRanges"] == ["172.16.0.32/28"]  # the control plane's range, nothing else
    assert nodes_account_urn(gcp_dev) in rule.depends_on and rule.inputs["targetServiceAccounts"]
    (allowed,) = rule.inputs["allows"]
    assert allowed["protocol"] == "tcp"
    assert {int(port) for port in allowed["ports"]} >= {9443, 8082, 10250}


def test_webhook_ports_are_those_the_rendered_charts_call():
    """core/webhook-ports.json is what Helm's render of every platform stack calls: each webhook
    configuration and APIService followed through its Service to the pod port (`make webhook-ports` writes it).
    A chart bumped, or a value that moves a webhook, fails here until the file is written again."""
    for stack in platform_stacks():
        rendered(stack)  # fails, not skips, where ../shared is here and a chart is not
    recorded = json.loads(WEBHOOK_PORTS_FILE.read_text())
    assert recorded == derived_webhook_ports()
    # Kueue's webhook server and its visibility API's APIService, prometheus-operator's admission webhook.
    assert recorded["kueue-0.19.2"] == [8082, 9443] and recorded["kube-prometheus-stack-88.5.3"] == [10250]


def test_a_chart_pin_without_recorded_ports_stops_the_program(monkeypatch, tmp_path):
    ports = tmp_path / "webhook-ports.json"
    ports.write_text(json.dumps({"kueue-0.19.1": [9443]}))
    monkeypatch.setattr("core.webhooks.WEBHOOK_PORTS_FILE", ports)
    with pytest.raises(RuntimeError, match=r"no webhook ports for .*kueue-0.19.2.*run `make webhook-ports`"):
        webhook_ports()


def test_make_webhook_ports_runs_where_a_new_chart_pin_has_no_ports_recorded_yet(monkeypatch, tmp_path):
    # The error above tells the user to run `make webhook-ports`; that command synthesizes gcp-dev, whose firewall
    # reads this file, so it stopped on the same error (hit when JobSet's chart was pinned).
    ports = tmp_path / "webhook-ports.json"
    ports.write_text(json.dumps({"kueue-0.19.2": [8082, 9443]}))
    monkeypatch.setattr("core.webhooks.WEBHOOK_PORTS_FILE", ports)
    monkeypatch.setattr("core.webhooks.RECORDING", True)
    assert webhook_ports() == ["8082", "9443"]


def rendered(stack: str) -> Rendering:
    """Helm's render of every chart a stack installs (shared with the other tests of rendered stacks). Skipped
    only where ../shared/upstream, which holds the charts, is absent: with it, a chart missing fails the test."""
    rendering = stack_rendering(stack) if charts_available() else None
    missing = "no chart folder" if rendering is None else "; ".join(
        f"{release}: {why}" for release, why in sorted(rendering.unavailable.items()))
    if missing:
        if UPSTREAM_DIR.is_dir():
            pytest.fail(f"{UPSTREAM_DIR} is here but charts {stack} installs are not: {missing}")
        pytest.skip(f"needs the charts (../shared/upstream/charts or $MLPLATFORM_CHARTS): {missing}")
    assert rendering is not None
    return rendering


def rendered_release(stack: str, release: str) -> list[dict[str, Any]]:
    return rendered(stack).releases[release].objects


def test_every_webhook_port_in_the_rendered_charts_of_gcp_dev_is_open(gcp_dev):
    """Helm's own render of every chart gcp-dev installs (synth/render.py): each webhook's and aggregated API's
    Service, followed to the pod port behind it, is open from the control plane."""
    rendering = rendered("gcp-dev")
    called = {what: port for what, (_, port) in webhook_pod_ports(rendering.objects()).items()}
    assert {"v1beta1.visibility.kueue.x-k8s.io", "kube-prometheus-stack-admission/prometheusrulemutate.monitoring.coreos.com"} <= set(called)
    (rule,) = webhook_firewall(gcp_dev)
    (allowed,) = rule.inputs["allows"]
    opened = {int(port) for port in allowed["ports"]}
    assert {what: port for what, port in called.items() if port not in opened} == {}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"):
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"] if obj["kind"] == "Pod" else None


def critical_pods(stack: str) -> dict[str, set[str]]:
    """Namespace -> the system-*-critical classes of the pods the stack's charts (rendered by Helm) run there;
    kube-system may always run them."""
    used: dict[str, set[str]] = {}
    for obj in rendered(stack).objects():
        spec = _pod_spec(obj)
        namespace = obj["metadata"].get("namespace")
        if spec and str(spec.get("priorityClassName", "")).startswith("system-") and namespace != "kube-system":
            used.setdefault(namespace, set()).add(spec["priorityClassName"])
    return used


def allowed_critical_classes(synthesis: Synthesis) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    for quota in synthesis.of_type("kubernetes:core/v1:ResourceQuota"):
        for requirement in quota.inputs["spec"].get("scopeSelector", {}).get("matchExpressions", []):
            if requirement["scopeName"] == "PriorityClass" and requirement["operator"] == "In":
                allowed.setdefault(quota.inputs["metadata"]["namespace"], set()).update(requirement["values"])
    return allowed


def test_critical_priority_pods_outside_kube_system_have_a_quota_that_admits_them(gcp_dev):
    """GKE refuses system-*-critical pods outside kube-system unless a ResourceQuota there allows the class."""
    used = critical_pods("gcp-dev")
    # Which pods use which class on GKE: Kueue's controller is cluster-critical, the DCGM exporter node-critical.
    assert used == {"kueue-system": {"system-cluster-critical"}, "monitoring": {"system-node-critical"}}
    allowed = allowed_critical_classes(gcp_dev)
    for namespace, classes in used.items():
        assert classes <= allowed.get(namespace, set()), namespace
    (quota,) = [q for q in gcp_dev.of_type("kubernetes:core/v1:ResourceQuota")
                if q.inputs["metadata"]["namespace"] == "monitoring"]
    assert int(quota.inputs["spec"]["hard"]["pods"]) >= 1000  # a permission, not a cap on DaemonSet pods


def test_kind_admits_its_critical_pods_too(local_synth):
    used = critical_pods("local")
    allowed = allowed_critical_classes(local_synth)
    assert used and all(classes <= allowed.get(namespace, set()) for namespace, classes in used.items())


# ---- What is created also works ---------------------------------------------------------------------------

def test_the_dcgm_exporter_sees_gpus_and_maps_them_to_pods_on_gke(gcp_dev):
    """As Google's own DCGM manifest (GoogleCloudPlatform/prometheus-engine, examples/nvidia-dcgm) runs it."""
    (daemonset,) = [o for o in rendered_release("gcp-dev", "dcgm-exporter") if o["kind"] == "DaemonSet"]
    (exporter,) = daemonset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in exporter["env"]}
    assert env["DCGM_EXPORTER_KUBERNETES"] == "true"
    assert env["DCGM_EXPORTER_KUBERNETES_GPU_ID_TYPE"] == "device-name"
    assert env["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
    # The API server refuses privileged beside allowPrivilegeEscalation: false (the chart's default).
    context = exporter["securityContext"]
    assert context["privileged"] is True and context.get("allowPrivilegeEscalation") is not False
    mounts = {m["mountPath"] for m in exporter["volumeMounts"]}
    assert {"/usr/local/nvidia", "/var/lib/kubelet/pod-resources"} <= mounts


def test_the_exporter_is_privileged_only_where_the_cluster_says_so():
    pool = gke_gpu_pools(GkeClusterConfig.model_validate(gke_cluster()))
    plain = dcgm_exporter_values(pool, Capabilities(gpu_drivers=True, device_plugin=False, physical_gpus=True,
                                                    persistent_volumes=True))
    assert "securityContext" not in plain and "extraEnv" not in plain


def test_the_temporary_default_pool_runs_as_the_node_account(gcp_dev):
    cluster = cluster_inputs(gcp_dev)
    (default_pool,) = cluster["nodePools"]
    assert default_pool["name"] == "default-pool" and cluster["removeDefaultNodePool"] is True
    node_config = default_pool["nodeConfig"]
    assert node_config["serviceAccount"] and node_config["oauthScopes"] == [
        "https://www.googleapis.com/auth/cloud-platform"]
    (resource,) = gcp_dev.of_type("gcp:container/cluster:Cluster")
    assert nodes_account_urn(gcp_dev) in resource.depends_on
    assert {"nodePools", "initialNodeCount"} <= set(resource.ignore_changes)


def test_kubeconfig_uses_application_default_credentials():
    config = yaml.safe_load(kubeconfig("ml", "10.0.0.2", "Q0E="))
    assert config["users"][0]["user"]["exec"]["args"] == ["--use_application_default_credentials"]


def test_the_system_pool_is_tainted_and_teams_cpu_work_has_an_untainted_pool_from_zero(gcp_dev):
    # Issue 24: the system pool had no taint, so teams' CPU pods landed beside the platform's controllers.
    # CriticalAddonsOnly is what GKE's kube-dns and konnectivity agents tolerate (Kubernetes' addon manifests).
    pools = node_pools(gcp_dev)
    assert pools["system"]["nodeConfig"]["taints"] == [
        {"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}]
    cpu = pools["cpu"]
    assert not cpu["nodeConfig"].get("taints") and cpu["nodeConfig"]["labels"] == {"mlplatform.io/pool": "cpu"}
    assert cpu["autoscaling"]["totalMinNodeCount"] == 0 and cpu["autoscaling"]["totalMaxNodeCount"] == 4
    assert cpu["nodeConfig"]["machineType"] == "e2-standard-8"


def test_every_pool_leaves_its_node_count_to_the_autoscaler(gcp_dev):
    pools = gcp_dev.of_type("gcp:container/nodePool:NodePool")
    assert len(pools) == 6
    assert all("initialNodeCount" in pool.ignore_changes for pool in pools)


def test_node_pools_come_after_the_node_accounts_roles(gcp_dev):
    roles = {m.urn for m in gcp_dev.of_type("gcp:projects/iAMMember:IAMMember")}
    assert len(roles) == 4
    for pool in gcp_dev.of_type("gcp:container/nodePool:NodePool"):
        assert roles <= set(pool.depends_on), pool.name


# ---- Correctness of what config accepts -------------------------------------------------------------------

@pytest.mark.parametrize("machine, partition, per_gpu", [
    ("a2-highgpu-1g", "1g.5gb", 7), ("a2-highgpu-1g", "2g.10gb", 3), ("a2-ultragpu-1g", "3g.40gb", 2),
    ("a3-highgpu-8g", "1g.10gb", 7), ("a3-highgpu-8g", "1g.20gb", 4), ("a3-highgpu-8g", "4g.40gb", 1),
    ("a3-ultragpu-8g", "1g.18gb", 7), ("a3-ultragpu-8g", "1g.35gb", 4), ("a3-ultragpu-8g", "2g.35gb", 3),
    ("a4-highgpu-8g", "1g.23gb", 7), ("a4-highgpu-8g", "1g.45gb", 4), ("a4-highgpu-8g", "3g.90gb", 2),
])
def test_mig_slices_per_gpu_are_the_gpus_own(machine, partition, per_gpu):
    """GKE's partitioner (container-engine-accelerators, partition_gpu.go): memory bounds the 1g profiles of
    H100 and H200 with more memory to four per GPU, not seven."""
    region = "us-central1"
    zone = {"a2-ultragpu-1g": "us-central1-a", "a3-ultragpu-8g": "us-central1-b",
            "a4-highgpu-8g": "us-central1-b"}.get(machine, "us-central1-a")
    spec = GkeClusterConfig.model_validate(gke_cluster(region=region, zones=[zone], gpuPools=[{
        "name": "mig", "machineType": machine, "maxNodes": 2, "sharing": {"migStrategy": "single"},
        "migPartitionSize": partition, "spot": machine in ("a3-ultragpu-8g", "a4-highgpu-8g")}]))
    (pool,) = spec.gpu_pools
    assert pool.mig_partitions == per_gpu
    assert pool.gpu_capacity() == 2 * pool.gpus * per_gpu


def test_memory_bounds_the_small_profiles_of_h100_and_h200():
    assert GPU_MODELS["nvidia-h100-80gb"].mig_partitions("1g.20gb") == 4
    assert GPU_MODELS["nvidia-h200-141gb"].mig_partitions("1g.35gb") == 4
    assert GPU_MODELS["nvidia-h200-141gb"].mig_partitions("2g.35gb") == 3


def test_a3_machines_get_gvnic_their_local_ssds_and_disk_type():
    synthesis = synth_with(cluster=gke_cluster(region="us-central1", zones=["us-central1-b"], gpuPools=[
        {"name": "h100", "machineType": "a3-highgpu-8g", "maxNodes": 1},
        {"name": "h200", "machineType": "a3-ultragpu-8g", "maxNodes": 1, "reservation": "h200-block"},
        {"name": "l4", "machineType": "g2-standard-8", "maxNodes": 1}]))
    pools = node_pools(synthesis)
    h100, h200, l4 = (pools[name]["nodeConfig"] for name in ("h100", "h200", "l4"))
    assert h100["gvnic"] == {"enabled": True} and h100["ephemeralStorageLocalSsdConfig"] == {"localSsdCount": 16}
    assert h100["diskType"] == "pd-balanced"
    assert h200["ephemeralStorageLocalSsdConfig"] == {"localSsdCount": 32}
    assert h200["diskType"] == "hyperdisk-balanced" and h200["gvnic"] == {"enabled": True}
    assert "gvnic" not in l4 and "ephemeralStorageLocalSsdConfig" not in l4
    assert h200["reservationAffinity"] == {"consumeReservationType": "SPECIFIC_RESERVATION",
                                           "key": "compute.googleapis.com/reservation-name",
                                           "values": ["h200-block"]}
    assert "reservationAffinity" not in h100 and "reservationAffinity" not in l4


def test_secrets_are_encrypted_with_a_rotated_key_gke_may_use(gcp_dev):
    cluster = cluster_inputs(gcp_dev)
    (key,) = gcp_dev.of_type("gcp:kms/cryptoKey:CryptoKey")
    assert cluster["databaseEncryption"]["state"] == "ENCRYPTED"
    (resource,) = gcp_dev.of_type("gcp:container/cluster:Cluster")
    assert key.urn in resource.depends_on and key.inputs["rotationPeriod"] == "7776000s"
    (grant,) = gcp_dev.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    assert grant.inputs["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    # GKE checks it may use the key when it creates the cluster: the cluster waits for the grant to propagate.
    (wait,) = [c for c in gcp_dev.of_type("command:local:Command") if grant.urn in c.depends_on]
    assert re.fullmatch(r"sleep (\d+)", wait.inputs["create"]) and int(wait.inputs["create"].split()[1]) >= 120
    assert {grant.urn, wait.urn} <= set(resource.depends_on)
    (ring,) = gcp_dev.of_type("gcp:kms/keyRing:KeyRing")
    assert ring.inputs["location"] == "us-central1"  # the cluster's own location, as GKE requires


def test_the_key_is_granted_to_gkes_service_agent_as_the_project_names_it(gcp_dev):
    """Issue 23: the agent was built from a project number typed into the stack file; the Service Usage API's
    identity of container.googleapis.com in the cluster's project names it instead."""
    (agent,) = gcp_dev.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
    assert agent.inputs == {"project": "my-ml-platform-dev", "service": "container.googleapis.com"}
    (grant,) = gcp_dev.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    assert agent.urn in grant.depends_on


def test_upgrades_happen_in_the_maintenance_window_and_not_in_exclusions(gcp_dev):
    policy = cluster_inputs(gcp_dev)["maintenancePolicy"]
    assert policy["recurringWindow"]["recurrence"] == "FREQ=WEEKLY;BYDAY=SA,SU"
    # gcp-dev's year-end freeze, as declared on 2026-12-05 (the day is given: the test must not age).
    maintenance = stack_config("gcp-dev").cluster.maintenance
    (exclusion,) = maintenance_policy(maintenance, datetime(2026, 12, 5, tzinfo=timezone.utc)).maintenance_exclusions
    assert exclusion.exclusion_name == "year-end-freeze"
    assert exclusion.exclusion_options.scope == "NO_UPGRADES"


def test_an_ended_maintenance_exclusion_is_dropped_with_a_warning():
    """GKE refuses an exclusion that has ended, and it protects nothing: it is left out, with a warning, rather
    than refused, so that a stack file does not turn invalid on a date without anyone changing it."""
    freeze = {"name": "year-end-freeze", "start": "2026-12-19T00:00:00Z", "end": "2027-01-04T00:00:00Z"}
    maintenance = GkeClusterConfig.model_validate(gke_cluster(maintenance={"exclusions": [freeze]})).maintenance
    before, after = (datetime(2026, 12, 5, tzinfo=timezone.utc), datetime(2027, 1, 4, tzinfo=timezone.utc))
    assert [e.exclusion_name for e in maintenance_policy(maintenance, before).maintenance_exclusions] == [
        "year-end-freeze"]
    assert maintenance_policy(maintenance, after).maintenance_exclusions == []
    assert maintenance.ended(before) == []
    # A freeze of a past year, whatever day the test runs on: the cluster gets none, and the synth says so.
    past = {"name": "old-freeze", "start": "2020-12-19T00:00:00Z", "end": "2021-01-04T00:00:00Z"}
    synthesis = synth_with(cluster=gke_cluster(maintenance={"exclusions": [past]}))
    assert cluster_inputs(synthesis)["maintenancePolicy"].get("maintenanceExclusions") in (None, [])
    assert any("old-freeze ended 2021-01-04T00:00:00Z; it is left out" in w for w in synthesis.warnings)


def test_nat_logs_errors_and_grows_ports_for_image_pulls(gcp_dev):
    (nat,) = gcp_dev.of_type("gcp:compute/routerNat:RouterNat")
    assert nat.inputs["logConfig"] == {"enable": True, "filter": "ERRORS_ONLY"}
    assert nat.inputs["enableDynamicPortAllocation"] is True
    assert nat.inputs["minPortsPerVm"] >= 1024 and nat.inputs["maxPortsPerVm"] == 65536


@pytest.mark.parametrize("overrides, message", [
    ({"name": "a-cluster-name-of-25-char"}, "mlplatform:cluster.name: 'a-cluster-name-of-25-char' is not a GKE "
                                            "cluster name: at most 24"),
    ({"gpuPools": [{"name": "p" * 41, "machineType": "g2-standard-8", "maxNodes": 1}]},
     "is not a GKE node pool name: at most 40"),
    ({"region": "us-central1", "zones": ["us-central1-b"],
      "gpuPools": [{"name": "x", "machineType": "a2-ultragpu-1g", "maxNodes": 1}]},
     "gpuPools[0] (x): nvidia-a100-80gb is not offered in us-central1-b: us-central1 has it only in "
     "us-central1-a, us-central1-c"),
    ({"region": "us-east4", "zones": ["us-east4-a"],
      "gpuPools": [{"name": "x", "machineType": "n1-standard-8", "accelerator": "nvidia-tesla-v100",
                    "gpusPerNode": 1, "maxNodes": 1}]},
     "nvidia-tesla-v100 is not offered in us-east4-a: us-east4 has it in no zone"),
    ({"region": "asia-south2", "zones": ["asia-south2-a"]}, "no GPU zone table for region asia-south2"),
    ({"maintenance": {"exclusions": [{"name": "q4", "start": "2026-10-01T00:00:00Z",
                                      "end": "2026-12-01T00:00:00Z"}]}},
     "a NO_UPGRADES exclusion lasts at most 30 days"),
    ({"gpuPools": [{"name": "default-pool", "machineType": "g2-standard-8", "maxNodes": 1}]},
     "'default-pool' is GKE's temporary first pool"),
    ({"gpuPools": [{"name": "x", "machineType": "g2-standard-8", "maxNodes": 1,
                    "sharing": {"timeSlicing": {"replicas": 64}}}]},
     "GKE time-shares a GPU between at most 48 pods"),
    # The GKE service agent is derived from the project: a number typed into the stack file is not taken.
    ({"projectNumber": "123456789012"}, "mlplatform:cluster: projectNumber is no longer read: GKE's service agent "
                                        "is named by the project itself"),
    ({"systemPool": {"maxNodes": 1}},
     "systemPool.maxNodes 1 is below the 2 nodes the system pool starts with (one in each of the zones "
     "europe-west4-a, europe-west4-b)"),
    # A3 High's smaller shapes are Spot or flex-start only; A3 Mega and Ultra need a reservation or Spot.
    ({"region": "us-central1", "zones": ["us-central1-a"],
      "gpuPools": [{"name": "x", "machineType": "a3-highgpu-2g", "maxNodes": 1}]},
     "a3-highgpu-2g is not sold on demand (Spot or flex-start VMs only): set spot: true"),
    ({"region": "us-central1", "zones": ["us-central1-a"],
      "gpuPools": [{"name": "x", "machineType": "a3-highgpu-4g", "maxNodes": 1, "reservation": "mine"}]},
     "a3-highgpu-4g is not sold on demand (Spot or flex-start VMs only): set spot: true"),
    ({"region": "us-central1", "zones": ["us-central1-a"],
      "gpuPools": [{"name": "x", "machineType": "a3-megagpu-8g", "maxNodes": 1}]},
     "a3-megagpu-8g is not sold on demand (Spot or flex-start VMs, or a reservation only): set spot: true, or "
     "reservation: <name>"),
    ({"gpuPools": [{"name": "x", "machineType": "g2-standard-8", "maxNodes": 1, "spot": True,
                    "reservation": "mine"}]},
     "Spot VMs consume no reservation"),
    # Compute Engine's N1 GPU limits: one V100 attaches to at most 12 vCPUs and 78 GB.
    ({"gpuPools": [{"name": "x", "machineType": "n1-standard-16", "accelerator": "nvidia-tesla-v100",
                    "gpusPerNode": 1, "maxNodes": 1}]},
     "1 nvidia-tesla-v100 attach to N1 machines of at most 12 vCPUs and 78 GB; n1-standard-16 has 16 vCPUs and "
     "60 GB: attach 2 GPUs or use a smaller machine"),
    ({"gpuPools": [{"name": "x", "machineType": "n1-highmem-96", "accelerator": "nvidia-tesla-t4",
                    "gpusPerNode": 2, "maxNodes": 1}]},
     "2 nvidia-tesla-t4 attach to N1 machines of at most 48 vCPUs and 312 GB; n1-highmem-96 has 96 vCPUs and "
     "624 GB: attach 4 GPUs"),
    ({"gpuPools": [{"name": "x", "machineType": "n1-megamem-96", "accelerator": "nvidia-tesla-t4",
                    "gpusPerNode": 4, "maxNodes": 1}]},
     "n1-megamem-96 takes no GPUs"),
])
def test_config_gke_refuses(overrides, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=gke_cluster(**overrides))
    assert message in str(caught.value), str(caught.value)


# ---- Teardown and provider identity -----------------------------------------------------------------------

def dependencies(synthesis: Synthesis, urn: str) -> set[str]:
    """Every resource a resource waits for on create, transitively: what it depends on and its provider. A
    destroy deletes it before every one of them."""
    by_urn = {r.urn: r for r in synthesis.resources}
    found: set[str] = set()
    pending = [urn]
    while pending:
        resource = by_urn[pending.pop()]
        for needed in (*resource.depends_on, *([resource.provider] if resource.provider else [])):
            if needed not in found:
                found.add(needed)
                pending.append(needed)
    return found


def test_every_kubernetes_resource_is_deleted_before_the_webhook_firewall_and_nat(gcp_dev):
    """Issue 23: Kueue's webhook fails closed. Were the firewall rule (the control plane's way to it) or NAT gone
    before the ClusterQueues, every finalizer update would be refused and the destroy would never end."""
    (firewall,) = webhook_firewall(gcp_dev)
    (nat,) = gcp_dev.of_type("gcp:compute/routerNat:RouterNat")
    on_cluster = [r for r in gcp_dev.resources if r.custom and r.type.startswith("kubernetes:")
                  and not r.type.startswith("pulumi:providers:")]
    assert len(on_cluster) > 50 and any(r.inputs.get("kind") == "ClusterQueue" for r in on_cluster)
    for resource in on_cluster:
        assert {firewall.urn, nat.urn} <= dependencies(gcp_dev, resource.urn), resource.urn


def test_toggling_the_dns_endpoint_replaces_no_kubernetes_resource():
    """The reachability message tells users to turn dnsEndpoint on, which changes the kubeconfig's server:
    the provider is tied to the cluster's identity instead, which pulumi-kubernetes' DiffConfig compares."""
    providers = [synth_with(cluster=gke_cluster(dnsEndpoint=dns)).of_type("pulumi:providers:kubernetes")[0]
                 for dns in (False, True)]
    identities = {p.inputs["clusterIdentifier"] for p in providers}
    (identity,) = identities
    assert identity and "ml-cluster" in str(identity)


def test_the_dcgm_exporter_reads_our_counters_on_gke(gcp_dev):
    """Issue 23: the file given to -f is the chart's ConfigMap holding components/dcgm-counters.csv, not the
    image's built-in list (which lacks the XID, throttling and row-remap counters our alerts read)."""
    rendered = rendered_release("gcp-dev", "dcgm-exporter")
    (daemonset,) = [o for o in rendered if o["kind"] == "DaemonSet"]
    spec = daemonset["spec"]["template"]["spec"]
    (exporter,) = spec["containers"]
    args = exporter["args"]
    counters_file = args[args.index("-f") + 1]
    (mount,) = [m for m in exporter["volumeMounts"] if m["mountPath"] == counters_file]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["configMap"]["items"] if i["path"] == mount["subPath"]]
    (config_map,) = [o for o in rendered if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"] == volume["configMap"]["name"]]
    assert config_map["data"][item["key"]].strip() == DCGM_COUNTERS.read_text().strip()
    # The driver's mount is there too, beside it.
    assert "/usr/local/nvidia" in {m["mountPath"] for m in exporter["volumeMounts"]}


def test_gpu_pools_upgrade_in_place_without_a_surge_vm(gcp_dev):
    """A surge upgrade adds a GPU VM above maxNodes, which a GPU quota sized at maxNodes x GPUs never has:
    GPU pools replace one node at a time instead (as cluster-toolkit's gke-node-pool does)."""
    pools = node_pools(gcp_dev)
    for name in ("l4", "a100", "t4"):
        assert pools[name]["upgradeSettings"] == {"strategy": "SURGE", "maxSurge": 0, "maxUnavailable": 1}, name


@pytest.mark.parametrize("machine, accelerator, gpus", [
    ("n1-standard-8", "nvidia-tesla-v100", 1), ("n1-highmem-8", "nvidia-tesla-v100", 1),
    ("n1-standard-96", "nvidia-tesla-v100", 8), ("n1-standard-48", "nvidia-tesla-t4", 1),
    ("n1-highmem-96", "nvidia-tesla-t4", 4), ("n1-highcpu-96", "nvidia-tesla-t4", 4)])
def test_n1_machines_within_their_gpus_limits_are_accepted(machine, accelerator, gpus):
    spec = GkeClusterConfig.model_validate(gke_cluster(region="us-central1", zones=["us-central1-a"], gpuPools=[{
        "name": "n1", "machineType": machine, "accelerator": accelerator, "gpusPerNode": gpus, "maxNodes": 1}]))
    assert spec.gpu_pools[0].gpus == gpus


def test_a_destroy_waits_for_the_clusters_disks_before_the_node_pools_and_cluster_go(gcp_dev):
    """Issue 23: Prometheus's claim goes with its StatefulSet (whenDeleted: Delete), the teams' with their
    namespaces, and their disks some time after, deleted by the CSI driver of a cluster that must still run. The
    wait runs after every Kubernetes resource is deleted and before any node pool or the cluster is."""
    (wait,) = [c for c in gcp_dev.of_type("command:local:Command") if "verify.released" in c.inputs.get("delete", "")]
    assert wait.inputs["delete"] == ".venv/bin/python -m verify.released" and "create" not in wait.inputs
    assert set(wait.inputs["environment"]) == {"MLPLATFORM_KUBECONFIG"}
    (cluster,) = gcp_dev.of_type("gcp:container/cluster:Cluster")
    assert {cluster.urn, *(p.urn for p in gcp_dev.of_type("gcp:container/nodePool:NodePool"))} <= set(wait.depends_on)
    on_cluster = [r for r in gcp_dev.resources if r.custom and r.type.startswith("kubernetes:")
                  and not r.type.startswith("pulumi:providers:")]
    assert all(wait.urn in dependencies(gcp_dev, r.urn) for r in on_cluster)
    # Prometheus's claim is deleted with its StatefulSet, so that the wait can end.
    values = next(r for r in gcp_dev.releases() if r.inputs["name"] == "kube-prometheus-stack").inputs["values"]
    assert values["prometheus"]["prometheusSpec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_preview_and_read_service_accounts_look_at_gke_and_change_nothing(gcp_dev):
    """As EKS's viewRoleArns and readRoleArns: CI's pull-request preview account sees no Secrets, the read
    account of drift checks reads everything (Helm's release Secrets, custom resources), neither writes."""
    viewer = "mlplatform-preview@my-ml-platform-dev.iam.gserviceaccount.com"
    reader = "mlplatform-read@my-ml-platform-dev.iam.gserviceaccount.com"
    bindings = {b.inputs["metadata"]["name"]: b.inputs for b in
                gcp_dev.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")}
    user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User"}
    assert bindings["mlplatform:view"]["roleRef"]["name"] == "view"
    assert bindings["mlplatform:view"]["subjects"] == [user | {"name": viewer}]
    assert bindings["mlplatform:read"]["subjects"] == [user | {"name": reader}]
    roles = {r.inputs["metadata"]["name"]: r.inputs for r in
             gcp_dev.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")}
    assert roles[bindings["mlplatform:read"]["roleRef"]["name"]]["rules"] == [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
    # None listed, none bound; one account in both lists is refused.
    bare = synth_with(cluster=gke_cluster())
    assert not [b for b in bare.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
                if b.inputs["metadata"]["name"].startswith("mlplatform:")]
    with pytest.raises(ConfigError, match="is in viewServiceAccounts already"):
        synth_with(cluster=gke_cluster(viewServiceAccounts=[viewer], readServiceAccounts=[viewer]))
    with pytest.raises(ConfigError, match=r"viewServiceAccounts\[0\].*a service account's email"):
        synth_with(cluster=gke_cluster(viewServiceAccounts=["mlplatform-preview"]))
