"""Topology-aware scheduling: a Kueue Topology per cloud from the labels its nodes carry, the flavors of
multi-node pools naming it, ClusterQueues that can admit a topology-placed gang, and waitForPodsReady."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from config.errors import ConfigError
from core.outputs import PlatformOutputs
from synth.applied import applied_objects, check_cel, check_schemas, crds_of
from synth.engine import Synthesis
from synth.render import render_stack, stack_synthesis
from tests.clouds.gke.test_gke import gke_cluster
from tests.conftest import aws_cluster, synth_with, team
from tests.test_queues import kueue, manager_config

EKS_LEVELS = ["topology.k8s.aws/network-node-layer-1", "topology.k8s.aws/network-node-layer-2",
              "topology.k8s.aws/network-node-layer-3", "kubernetes.io/hostname"]
GKE_LEVELS = ["cloud.google.com/gce-topology-block", "cloud.google.com/gce-topology-subblock",
              "cloud.google.com/gce-topology-host", "kubernetes.io/hostname"]
A3_POOL = {"name": "h100", "machineType": "a3-megagpu-8g", "zones": ["europe-west4-b"], "maxNodes": 4,
           "multiNode": True, "spot": True}
EXISTING_POOLS = [{"name": "h100", "accelerator": "nvidia-h100-80gb", "gpusPerNode": 8, "maxNodes": 4,
                   "multiNode": True},
                  {"name": "l4", "accelerator": "nvidia-l4", "gpusPerNode": 1, "maxNodes": 2}]


def existing_cluster(tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> dict[str, Any]:
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    return {"cloud": "existing", "name": "lab", "kubeconfig": str(kubeconfig),
            "topologyLabels": ["example.com/block", "example.com/rack"], "gpuPools": EXISTING_POOLS} | overrides


@pytest.fixture(scope="module")
def gke() -> Synthesis:
    return synth_with(cluster=gke_cluster(gpuPools=[A3_POOL], multiNetworking=True), teams=[team("research", 16)])


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> Synthesis:
    return synth_with(cluster=existing_cluster(tmp_path_factory), teams=[team("research", 16)])


def topology_levels(synthesis: Synthesis) -> list[str]:
    return [level["nodeLabel"] for level in kueue(synthesis, "Topology")["network"]["spec"]["levels"]]


def test_eks_topology_is_awss_network_layers_then_the_node(prod):
    assert topology_levels(prod) == EKS_LEVELS


def test_gke_topology_is_googles_block_subblock_host_then_the_node(gke):
    assert topology_levels(gke) == GKE_LEVELS


def test_an_existing_clusters_topology_is_its_labels_then_the_node(existing):
    assert topology_levels(existing) == ["example.com/block", "example.com/rack", "kubernetes.io/hostname"]


def test_only_multi_node_pools_are_placed_by_topology(prod, existing):
    for synthesis, multi, single in ((prod, "h100", "a10g"), (existing, "h100", "l4")):
        flavors = kueue(synthesis, "ResourceFlavor")
        assert flavors[multi]["spec"]["topologyName"] == "network"
        assert "topologyName" not in flavors[single]["spec"] and "topologyName" not in flavors["default"]["spec"]


def test_no_topology_where_no_pool_runs_multi_node_work(local_synth):
    assert kueue(local_synth, "Topology") == {}


def test_a_queue_reaching_a_multi_node_pool_covers_cpu_memory_and_gpus_in_one_group(prod):
    # Kueue 0.19 assigns every resource of a topology-placed job from flavors naming a Topology
    # (flavorassigner/tas_flavorassigner.go checkPodSetAndFlavorMatchForTAS): a separate CPU group whose only
    # flavor is `default` would refuse every gang with "Flavor default does not support TopologyAwareScheduling".
    (group,) = kueue(prod, "ClusterQueue")["research"]["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "memory", "mlplatform.io/gpu-units", "nvidia.com/gpu"]
    flavors = {f["name"]: {r["name"]: r for r in f["resources"]} for f in group["flavors"]}
    assert [f["name"] for f in group["flavors"]][0] == "default"
    assert flavors["default"]["nvidia.com/gpu"]["nominalQuota"] == "0"
    assert flavors["default"]["nvidia.com/gpu"]["borrowingLimit"] == "0"
    assert flavors["h100"]["nvidia.com/gpu"]["nominalQuota"] == "16"
    assert flavors["h100"]["cpu"]["nominalQuota"] == flavors["default"]["cpu"]["nominalQuota"]
    # The GPU units (one ceiling over whole GPUs and shares) sit beside each pool's GPUs, none in `default`.
    assert flavors["h100"]["mlplatform.io/gpu-units"]["nominalQuota"] == "16"
    assert flavors["default"]["mlplatform.io/gpu-units"]["nominalQuota"] == "0"


def test_a_gang_that_cannot_start_releases_its_quota(local_synth):
    ready = manager_config(local_synth)["waitForPodsReady"]
    assert ready == {"timeout": "1h", "blockAdmission": False, "requeuingStrategy": {"timestamp": "Eviction"}}


@pytest.mark.parametrize("which", ["prod", "gke", "existing"])
def test_topology_flavors_and_queues_pass_the_crd_schemas_and_cel_rules(which, request, charts):
    synthesis = stack_synthesis("prod") if which == "prod" else request.getfixturevalue(which)
    rendering = render_stack(synthesis)
    assert check_schemas(synthesis, rendering).errors == []
    objects = applied_objects(synthesis, rendering)
    report = check_cel(objects, crds_of(rendering, synthesis.manifests()))
    assert report.failures == [] and report.unevaluated == []
    # The Topology's own rules were among those evaluated: a hostname above the lowest level fails them.
    (topology,) = [o for o in objects if o.get("kind") == "Topology"]
    broken = copy.deepcopy(topology)
    broken["spec"]["levels"].reverse()
    assert check_cel([broken], crds_of(rendering)).failures == [
        "kueue.x-k8s.io/v1beta2 Topology network .spec.levels: the kubernetes.io/hostname label can only be used "
        "at the lowest level of topology (rule \"size(self.filter(i, i.nodeLabel == 'kubernetes.io/hostname')) "
        "== 0 || self[size(self) - 1].nodeLabel == 'kubernetes.io/hostname'\")"]


def test_gke_places_multi_node_pools_compactly(gke):
    (pool,) = [p.inputs for p in gke.of_type("gcp:container/nodePool:NodePool") if p.inputs["name"] == "h100"]
    assert pool["placementPolicy"] == {"type": "COMPACT"} and pool["nodeLocations"] == ["europe-west4-b"]


def test_the_pool_outputs_say_which_pools_run_multi_node_work(prod):
    pools = {p["name"]: p for p in prod.outputs["gpuPools"]}
    assert pools["h100"]["multiNode"] is True and pools["a10g"]["multiNode"] is False


@pytest.mark.parametrize(("cluster", "message"), [
    (lambda tmp: existing_cluster(tmp, topologyLabels=[]),
     "gpuPools: [0].multiNode: nothing places multi-node jobs on this cluster: set cluster.topologyLabels"),
    (lambda tmp: existing_cluster(tmp, topologyLabels=["kubernetes.io/hostname"]),
     "kubernetes.io/hostname is always the lowest level: leave it out of topologyLabels"),
    (lambda tmp: existing_cluster(tmp, gpuPools=[EXISTING_POOLS[0] | {"maxNodes": 1}]),
     "a multiNode pool needs room for two nodes at least (it has 1)"),
    (lambda tmp: existing_cluster(tmp, gpuPools=[EXISTING_POOLS[0] | {"sharing": {"timeSlicing": {"replicas": 2}}}]),
     "a multiNode pool runs jobs of whole nodes, every GPU of each: remove its sharing"),
    (lambda tmp: gke_cluster(gpuPools=[A3_POOL | {"zones": None}]),
     "multiNode: a compact placement policy places nodes in one zone"),
    (lambda tmp: gke_cluster(gpuPools=[A3_POOL | {"machineType": "a3-highgpu-4g"}]),
     "multiNode: a3-highgpu-4g has no GPU network between nodes that compact placement serves"),
    (lambda tmp: aws_cluster(gpuPools=[{"name": "h100", "instanceTypes": ["p5.48xlarge"], "maxNodes": 1,
                                        "efa": True}]),
     "a multiNode pool needs room for two nodes at least (it has 1)"),
])
def test_config_refuses_a_multi_node_pool_it_cannot_place(cluster, message, tmp_path_factory):
    with pytest.raises(ConfigError) as error:
        synth_with(cluster=cluster(tmp_path_factory), teams=[team("research", 8)])
    assert message in str(error.value)


def test_the_chart_renders_the_topology_crd_the_synth_checks_against(prod, charts):
    assert "Topology" in {c["spec"]["names"]["kind"] for c in crds_of(render_stack(prod))}


def test_the_stack_exports_its_topology_for_what_places_gangs_on_it(prod, existing, local_synth):
    # make e2e labels its fake nodes by these, and its gang test asks Kueue for the outermost level.
    assert PlatformOutputs.read(prod.outputs).topology_levels == tuple(EKS_LEVELS)
    assert PlatformOutputs.read(existing.outputs).topology_levels == (
        "example.com/block", "example.com/rack", "kubernetes.io/hostname")
    assert PlatformOutputs.read(local_synth.outputs).topology_levels == ()


def test_e2e_nodes_of_a_multi_node_pool_sit_two_to_a_domain_above_the_node(existing):
    from e2e.lifecycle import topology_labels

    platform = PlatformOutputs.read(existing.outputs)
    h100, l4 = (next(p for p in platform.gpu_pools if p.name == name) for name in ("h100", "l4"))
    labels = [topology_labels(platform, h100, index) for index in range(4)]
    assert labels[0] == labels[1] != labels[2] == labels[3]
    assert set(labels[0]) == {"example.com/block", "example.com/rack"}  # the hostname is the node's own
    assert topology_labels(platform, l4, 0) == {}


def test_the_root_cohort_lends_a_multi_node_pools_gpu_units_beside_its_gpus(existing):
    # A queue reaching a multi-node pool counts that pool's GPU units in the pool's own flavor (one resource group
    # with the GPUs, for topology-aware admission): borrowing the pool's unguaranteed GPUs then needs the units
    # there too, or Kueue would never admit the gang config/gangs.py judged admissible by borrowing.
    (group,) = kueue(existing, "Cohort")["mlplatform"]["spec"]["resourceGroups"]
    flavors = {f["name"]: {r["name"]: r["nominalQuota"] for r in f["resources"]} for f in group["flavors"]}
    assert flavors["h100"]["mlplatform.io/gpu-units"] == flavors["h100"]["nvidia.com/gpu"] != "0"
    assert flavors["l4"]["mlplatform.io/gpu-units"] == "0"
    assert flavors["default"]["nvidia.com/gpu"] == "0"
