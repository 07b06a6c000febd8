"""Kueue: a ClusterQueue per team in a cohort, flavors per GPU pool, LocalQueues teams can find."""

from __future__ import annotations

from typing import Any

import pytest

from components.gpu import ML_PRIORITY_CLASSES
from versions import KUEUE, KUEUE_IMAGE_TAG
from config.errors import ConfigError
from synth import synthesize
from synth.engine import Synthesis
from synth.output import helm_releases
from synth.schema import check_manifests
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import synth_with

POOLS = [{"name": "t4", "gpusPerNode": 4}, {"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 2}]


def kueue(synthesis: Synthesis, kind: str) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in synthesis.resources
            if r.inputs.get("kind") == kind and r.inputs.get("apiVersion") == "kueue.x-k8s.io/v1beta2"}


def team(name: str, quota_gpus: int, **queue: Any) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "8", "memory": "32Gi"}, "gpus": quota_gpus}, "queue": queue}


@pytest.fixture(scope="module")
def shared() -> Synthesis:
    return synth_with(cluster={"cloud": "kind", "gpuPools": POOLS}, teams=[
        team("research", 3, gpus={"t4": 2}, lendingLimit=1),
        team("inference", 2),
        team("sandbox", 1, cohort="sandbox")])


def test_kueue_is_pinned_on_the_system_pool_and_scraped(shared):
    (release,) = [r for r in helm_releases(shared) if r.inputs["name"] == "kueue"]
    assert release.inputs["version"] == KUEUE.version and release.inputs["namespace"] == "kueue-system"
    values = release.inputs["values"]
    assert values["controllerManager"]["manager"]["image"]["tag"] == KUEUE_IMAGE_TAG
    assert values["controllerManager"]["nodeSelector"] == {"mlplatform.io/pool": "system"}
    assert values["enablePrometheus"] is True
    monitoring = next(r for r in helm_releases(shared) if r.inputs["name"] == "kube-prometheus-stack")
    assert monitoring.urn in release.depends_on  # its ServiceMonitor needs the CRD


def test_flavors_carry_each_pools_label_and_toleration(shared):
    flavors = kueue(shared, "ResourceFlavor")
    assert set(flavors) == {"default", "t4", "a100"}
    assert flavors["t4"]["spec"] == {"nodeLabels": {"mlplatform.io/pool": "t4"}, "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]}
    assert flavors["default"]["spec"] == {}


def test_each_team_gets_a_cluster_queue_with_guarantees_borrowing_and_lending(shared):
    queues = kueue(shared, "ClusterQueue")
    research = queues["research"]["spec"]
    assert research["cohortName"] == "platform"
    assert research["namespaceSelector"] == {"matchLabels": {"mlplatform.io/team": "research"}}
    gpu_group = research["resourceGroups"][1]
    assert gpu_group["coveredResources"] == ["nvidia.com/gpu"]
    resources = {f["name"]: f["resources"][0] for f in gpu_group["flavors"]}
    # 2 guaranteed of a 3-GPU quota: it may borrow 1 more from its cohort, and lends at most 1 of its own.
    assert resources["t4"] == {"name": "nvidia.com/gpu", "nominalQuota": 2, "borrowingLimit": 1, "lendingLimit": 1}
    # No guarantee on the a100 pool, but it can still borrow there.
    assert resources["a100"] == {"name": "nvidia.com/gpu", "nominalQuota": 0, "borrowingLimit": 1, "lendingLimit": 0}
    cpu = {r["name"]: r["nominalQuota"] for r in research["resourceGroups"][0]["flavors"][0]["resources"]}
    assert cpu == {"cpu": "8", "memory": "32Gi"}
    assert queues["sandbox"]["spec"]["cohortName"] == "sandbox"


def test_default_guarantee_is_the_quota_spread_over_the_pools_by_size(shared):
    # inference: 2 GPUs over t4 (4 GPUs) and a100 (2 GPUs), in proportion.
    flavors = kueue(shared, "ClusterQueue")["inference"]["spec"]["resourceGroups"][1]["flavors"]
    assert {f["name"]: f["resources"][0]["nominalQuota"] for f in flavors} == {"t4": 1, "a100": 1}
    assert all(f["resources"][0]["borrowingLimit"] == 0 for f in flavors)


def test_preemption_reclaims_lent_gpus_and_borrowers_preempt_only_best_effort_work(shared):
    preemption = kueue(shared, "ClusterQueue")["research"]["spec"]["preemption"]
    best_effort = min(p.value for p in ML_PRIORITY_CLASSES)
    assert preemption == {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority",
                          "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": best_effort}}


def test_local_queue_in_each_team_namespace_is_named_after_the_team(shared):
    local = {r.inputs["metadata"]["namespace"]: r.inputs for r in shared.resources
             if r.inputs.get("kind") == "LocalQueue"}
    assert {ns: q["metadata"]["name"] for ns, q in local.items()} == {
        "research": "research", "inference": "inference", "sandbox": "sandbox"}
    assert local["research"]["spec"] == {"clusterQueue": "research"}
    (release,) = [r for r in helm_releases(shared) if r.inputs["name"] == "kueue"]
    assert all(release.urn in r.depends_on for r in shared.resources if r.inputs.get("kind") == "LocalQueue")


def test_workload_priority_classes_match_the_pod_priority_classes(shared):
    classes = kueue(shared, "WorkloadPriorityClass")
    assert {name: c["value"] for name, c in classes.items()} == {p.name: p.value for p in ML_PRIORITY_CLASSES}


def test_team_stack_namespaces_share_their_teams_queue():
    vision = synthesize("team-vision")
    queues = {r.inputs["metadata"]["namespace"]: r.inputs for r in vision.resources
              if r.inputs.get("kind") == "LocalQueue"}
    assert set(queues) == {"vision-dev", "vision-serving"}
    assert all(q["spec"] == {"clusterQueue": "vision"} for q in queues.values())
    labels = [r.inputs["metadata"]["labels"]["mlplatform.io/team"]
              for r in vision.of_type("kubernetes:core/v1:Namespace")]
    assert labels == ["vision", "vision"]
    assert "vision" in kueue(synthesize("local"), "ClusterQueue")


def test_kueue_objects_validate_against_their_crds(shared, upstream):
    objects = [o for kind in ("ResourceFlavor", "ClusterQueue", "LocalQueue", "WorkloadPriorityClass")
               for o in (kueue(shared, kind).values() if kind != "LocalQueue" else
                         [r.inputs for r in shared.resources if r.inputs.get("kind") == "LocalQueue"])]
    report = check_manifests(objects, upstream_dir=upstream)
    assert report.errors == [] and report.unchecked == [] and len(report.checked) == len(objects)


def test_kueue_values_exist_in_its_chart(shared, upstream):
    (release,) = [r for r in helm_releases(shared) if r.inputs["name"] == "kueue"]
    assert unknown_keys(release.inputs["values"], chart_values(upstream, "kueue"),
                        free_form={"controllerManager.nodeSelector"}) == []


@pytest.mark.parametrize("teams, message", [
    ([team("a", 2, gpus={"v100": 1})], "mlplatform:teams[0].queue.gpus.v100: no GPU pool is named 'v100'; the pools "
                                       "are: t4, a100"),
    ([team("a", 2, gpus={"t4": 3})], "mlplatform:teams[0].queue.gpus: 3 guaranteed GPUs, more than the team's "
                                     "quota.gpus (2)"),
    ([team("a", 3, gpus={"t4": 0}), team("b", 1, lendingLimit=1)],
     "mlplatform:teams[0].queue: the team may borrow up to 3 GPUs (quota.gpus 3 minus 0 guaranteed), but its cohort "
     "'platform' can lend at most 1"),
    ([team("a", 3, gpus={"a100": 3})], "the teams' queues guarantee 3 GPUs of pool 'a100', which holds at most 2"),
])
def test_bad_queue_config(teams, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster={"cloud": "kind", "gpuPools": POOLS}, teams=teams)
    assert message in str(caught.value), str(caught.value)
