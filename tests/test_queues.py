"""Kueue: per team a guarantee and a ceiling in a cohort that lends idle GPUs, gating of team namespaces, and a
controller whose webhooks cannot block the platform; checked against Kueue 0.19's CRDs, CEL rules and chart."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import yaml

from core.vocabulary import ML_PRIORITY_CLASSES
from components.queues import KUEUE_FRAMEWORKS, cluster_queue, kueue_spread
from config.queues import pool_shapes, queue_layout
from config.errors import ConfigError, stack_file
from synth import PROJECT_DIR
from synth.engine import Resource, Synthesis
from synth.stackfile import available_stacks
from synth.schema import check_manifests
from tests.cel import crd_violations
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import PLATFORM_STACKS, stack_config, synth_with
from synth.render import stack_synthesis
from synth.summary import _platform_stack
from core.outputs import PlatformOutputs
from versions import KUEUE, KUEUE_IMAGE_TAG

# One node of each: a job of up to 4 GPUs fits t4, up to 2 fits a100.
POOLS = [{"name": "t4", "gpusPerNode": 4}, {"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 2}]
KUEUE_CHART = "charts/kueue-0.19.2"


def kueue(synthesis: Synthesis, kind: str) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: r.inputs for r in synthesis.resources
            if r.inputs.get("kind") == kind and r.inputs.get("apiVersion") == "kueue.x-k8s.io/v1beta2"
            and kind != "LocalQueue"}


def local_queues(synthesis: Synthesis) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r.inputs
            for r in synthesis.resources if r.inputs.get("kind") == "LocalQueue"}


def team(name: str, quota_gpus: int, **queue: Any) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "8", "memory": "32Gi"}, "gpus": quota_gpus}, "queue": queue}


def gpu_flavors(queue: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """pool -> resource -> its numbers, of a ClusterQueue's GPU resource group."""
    (group,) = [g for g in queue["spec"]["resourceGroups"] if "cpu" not in g["coveredResources"]]
    return {f["name"]: {r["name"]: r for r in f["resources"]} for f in group["flavors"]}


def kueue_release(synthesis: Synthesis) -> dict[str, Any]:
    (release,) = [r for r in synthesis.releases() if r.inputs["name"] == "kueue"]
    return release.inputs


@pytest.fixture(scope="module")
def shared() -> Synthesis:
    return synth_with(cluster={"cloud": "kind", "gpuPools": POOLS}, teams=[
        # Guaranteed 2 on t4, may reach 4 by borrowing; lends at most 1 of its own.
        team("research", 4, gpus={"t4": 2}, lendingLimit=1),
        # Guaranteed its whole quota (the default), placed by the platform.
        team("inference", 2),
        team("sandbox", 1, cohort="sandbox")])


def test_kueue_is_pinned_on_the_system_pool_and_scraped(shared):
    release = kueue_release(shared)
    assert release["version"] == KUEUE.version and release["namespace"] == "kueue-system"
    values = release["values"]
    assert values["controllerManager"]["manager"]["image"]["tag"] == KUEUE_IMAGE_TAG
    assert values["controllerManager"]["nodeSelector"] == {"mlplatform.io/pool": "system"}
    assert values["enablePrometheus"] is True
    monitoring = next(r for r in shared.releases() if r.inputs["name"] == "kube-prometheus-stack")
    assert monitoring.urn in next(r for r in shared.releases() if r.inputs["name"] == "kueue").depends_on


def test_controller_survives_one_restart(shared):
    manager = kueue_release(shared)["values"]["controllerManager"]
    assert manager["replicas"] == 2
    assert manager["podDisruptionBudget"] == {"enabled": True, "minAvailable": 1}
    # kind's one system node: nothing to spread over, both replicas share it.
    (spread,) = manager["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"


@pytest.mark.parametrize("stack", ["dev", "prod", "gcp-dev"])
def test_kueues_replicas_are_on_two_nodes_wherever_the_system_pool_can_have_two(stack):
    # ScheduleAnyway let the scheduler stack both replicas on one node, whose drain stopped every admission in
    # team namespaces (the webhooks fail closed); DoNotSchedule alone is met by stacking while the pool has one
    # node, so minDomains 2 makes the second replica wait for the autoscaler's second node (issue 24).
    (spread,) = kueue_release(stack_synthesis(stack))["values"]["controllerManager"]["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "DoNotSchedule" and spread["minDomains"] == 2
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1


def test_a_fixed_two_node_system_pool_spreads_kueue_and_an_unknown_one_does_not_wait():
    kind = synth_with(cluster={"cloud": "kind", "systemNodes": 2, "gpuPools": POOLS}, teams=[team("research", 1)])
    (spread,) = kueue_release(kind)["values"]["controllerManager"]["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "DoNotSchedule" and spread["minDomains"] == 2
    assert kueue_spread(None)["whenUnsatisfiable"] == "ScheduleAnyway" and "minDomains" not in kueue_spread(None)


def manager_config(synthesis: Synthesis) -> dict[str, Any]:
    return yaml.safe_load(kueue_release(synthesis)["values"]["managerConfig"]["controllerManagerConfigYaml"])


def test_jobs_without_a_queue_name_in_team_namespaces_still_go_through_kueue(shared):
    config = manager_config(shared)
    assert config["apiVersion"] == "config.kueue.x-k8s.io/v1beta2" and config["kind"] == "Configuration"
    assert config["manageJobsWithoutQueueName"] is True
    assert config["managedJobsNamespaceSelector"] == {
        "matchExpressions": [{"key": "mlplatform.io/team", "operator": "Exists"}]}
    assert {"batch/job", "pod", "deployment", "statefulset"} <= set(config["integrations"]["frameworks"])
    # ... into the team's queue: Kueue gives an unlabelled job the namespace's LocalQueue named `default`.
    queues = local_queues(shared)
    for namespace in ("research", "inference", "sandbox"):
        assert queues[(namespace, namespace)]["spec"] == {"clusterQueue": namespace}
        assert queues[(namespace, "default")]["spec"] == {"clusterQueue": namespace}


@pytest.mark.parametrize("node_resource", ["vpc.amazonaws.com/efa", "ephemeral-storage", "hugepages-2Mi",
                                           "hugepages-1Gi"])
def test_a_gpu_job_asking_for_a_node_level_resource_is_not_refused_by_kueue(shared, node_resource):
    # Kueue 0.19 (quota check BlockUndeclared, pkg/scheduler/flavorassigner) never admits a workload asking for
    # a resource that no ClusterQueue covers, except those its Configuration's resources.excludeResourcePrefixes
    # drops (pkg/workload dropExcludedResources, a plain prefix match). EFA interfaces, scratch disk and huge
    # pages are node-level resources the scheduler and kubelet account for, not team quota.
    prefixes = (manager_config(shared).get("resources") or {}).get("excludeResourcePrefixes") or []
    asked = {"cpu", "memory", "nvidia.com/gpu", node_resource}
    counted = {r for r in asked if not any(r.startswith(p) for p in prefixes)}
    covered = {r for group in kueue(shared, "ClusterQueue")["research"]["spec"]["resourceGroups"]
               for r in group["coveredResources"]}
    assert counted <= covered
    # GPUs are never excluded: they are what the queues share.
    assert not any("nvidia.com/gpu".startswith(p) or "nvidia.com/gpu.shared".startswith(p) for p in prefixes)


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a namespace's labels."""
    def requirement(expression: dict[str, Any]) -> bool:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        return {"Exists": key in labels, "DoesNotExist": key not in labels, "In": labels.get(key) in values,
                "NotIn": labels.get(key) not in values}[operator]
    return (all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
            and all(requirement(e) for e in selector.get("matchExpressions", [])))


def test_kueue_webhooks_cover_team_namespaces_and_no_platform_namespace(shared, upstream):
    # The chart gives every job, pod, deployment and statefulset webhook the managedJobsNamespaceSelector of
    # the manager config when it has one (templates/webhook/manifests.yaml); without it, all but two namespaces.
    template = (upstream / KUEUE_CHART / "templates" / "webhook" / "manifests.yaml").read_text()
    webhooks = re.findall(r"name: ([mv](?:pod|deployment|statefulset|job)\.kb\.io)\n(?:.*\n){0,6}?"
                          r"\s+namespaceSelector:\n\s+\{\{- if \(hasKey \$managerConfig "
                          r"\"managedJobsNamespaceSelector\"\) \}\}", template)
    assert sorted(webhooks) == ["mdeployment.kb.io", "mjob.kb.io", "mpod.kb.io", "mstatefulset.kb.io",
                                "vdeployment.kb.io", "vjob.kb.io", "vpod.kb.io", "vstatefulset.kb.io"]
    selector = manager_config(shared)["managedJobsNamespaceSelector"]
    namespaces = {r.inputs["metadata"]["name"]: r.inputs["metadata"].get("labels", {})
                  for r in shared.of_type("kubernetes:core/v1:Namespace")}
    namespaces["kube-system"] = {"kubernetes.io/metadata.name": "kube-system"}
    covered = {name for name, labels in namespaces.items() if _matches(selector, labels)}
    assert covered == {"research", "inference", "sandbox"}
    assert {"kube-system", "monitoring", "kueue-system", "gpu-operator"} <= set(namespaces) - covered


def test_flavors_carry_each_pools_label_and_toleration(shared):
    flavors = kueue(shared, "ResourceFlavor")
    assert set(flavors) == {"default", "t4", "a100"}
    assert flavors["t4"]["spec"] == {"nodeLabels": {"mlplatform.io/pool": "t4"}, "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]}
    assert flavors["default"]["spec"] == {}


def test_a_team_is_guaranteed_some_gpus_and_borrows_idle_ones_up_to_its_ceiling(shared):
    research = kueue(shared, "ClusterQueue")["research"]
    assert research["spec"]["cohortName"] == "platform"
    assert research["spec"]["namespaceSelector"] == {"matchLabels": {"mlplatform.io/team": "research"}}
    flavors = gpu_flavors(research)
    # Guaranteed 2 on t4 (1 of them lent while idle); may borrow 2 more (ceiling 4) in either pool.
    assert flavors["t4"]["nvidia.com/gpu"] == {"name": "nvidia.com/gpu", "nominalQuota": "2", "borrowingLimit": "2",
                                               "lendingLimit": "1"}
    assert flavors["a100"]["nvidia.com/gpu"] == {"name": "nvidia.com/gpu", "nominalQuota": "0", "borrowingLimit": "2",
                                                 "lendingLimit": "0"}
    # The guaranteed pool first, and a job tries every pool where the guarantee has room before borrowing.
    assert list(flavors) == ["t4", "a100"]
    assert research["spec"]["flavorFungibility"] == {"whenCanBorrow": "TryNextFlavor",
                                                     "whenCanPreempt": "TryNextFlavor"}
    cpu = {r["name"]: r for r in research["spec"]["resourceGroups"][0]["flavors"][0]["resources"]}
    assert {name: r["nominalQuota"] for name, r in cpu.items()} == {"cpu": "8", "memory": "32Gi",
                                                                    "mlplatform.io/gpu-units": "2"}
    assert kueue(shared, "ClusterQueue")["sandbox"]["spec"]["cohortName"] == "sandbox"
    # The namespace's ResourceQuota sits at the ceiling, so it does not stop the borrowing.
    quota = next(r.inputs for r in shared.of_type("kubernetes:core/v1:ResourceQuota")
                 if r.inputs["metadata"]["namespace"] == "research")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"


def test_default_guarantee_is_the_whole_quota_in_one_pool_with_room(shared):
    # inference's 2 GPUs are not split 1 + 1 over the pools (which would strand a 2-GPU job): t4 has room.
    flavors = gpu_flavors(kueue(shared, "ClusterQueue")["inference"])
    assert {pool: r["nvidia.com/gpu"]["nominalQuota"] for pool, r in flavors.items()} == {"t4": "2", "a100": "0"}
    assert all(r["nvidia.com/gpu"]["borrowingLimit"] == "0" for r in flavors.values())
    assert flavors["t4"]["nvidia.com/gpu"]["lendingLimit"] == "2"  # lends all of it while idle
    # sandbox's guarantee goes where room is left.
    sandbox = gpu_flavors(kueue(shared, "ClusterQueue")["sandbox"])
    assert {pool: r["nvidia.com/gpu"]["nominalQuota"] for pool, r in sandbox.items()} == {"a100": "1", "t4": "0"}


def test_owners_reclaim_lent_gpus_and_borrowers_preempt_only_best_effort_work(shared):
    preemption = kueue(shared, "ClusterQueue")["research"]["spec"]["preemption"]
    best_effort = min(p.value for p in ML_PRIORITY_CLASSES)
    assert preemption == {"reclaimWithinCohort": "Any", "withinClusterQueue": "LowerPriority",
                          "borrowWithinCohort": {"policy": "LowerPriority", "maxPriorityThreshold": best_effort}}


def test_summary_and_outputs_say_both_numbers_per_team(shared):
    research = shared.outputs["teams"]["research"]
    assert (research["guaranteedGpus"], research["gpus"], research["guarantee"]) == (2, 4, {"t4": 2})


def test_workload_priority_classes_match_the_pod_priority_classes(shared):
    classes = kueue(shared, "WorkloadPriorityClass")
    assert {name: c["value"] for name, c in classes.items()} == {p.name: p.value for p in ML_PRIORITY_CLASSES}


def test_local_queues_wait_for_kueue(shared):
    release = next(r for r in shared.releases() if r.inputs["name"] == "kueue")
    assert all(release.urn in r.depends_on for r in shared.resources if r.inputs.get("kind") == "LocalQueue")


def deleted_after(synthesis: Synthesis, resource: Resource) -> set[str]:
    """The URNs that `pulumi destroy` deletes only once `resource` is gone: what it depends on, transitively, by
    every edge Pulumi's dependency graph orders a destroy by (dependencies, parent, provider)."""
    by_urn = {r.urn: r for r in synthesis.resources}
    found: set[str] = set()
    todo = [resource]
    while todo:
        current = todo.pop()
        for urn in (*current.depends_on, current.parent, current.provider):
            if urn in by_urn and urn not in found:
                found.add(urn)
                todo.append(by_urn[urn])
    return found


def kueue_objects(synthesis: Synthesis, kind: str) -> list[Resource]:
    return [r for r in synthesis.resources if r.inputs.get("kind") == kind
            and str(r.inputs.get("apiVersion", "")).startswith("kueue.x-k8s.io/")]


def assert_destroy_order(synthesis: Synthesis, *, team_stack: bool) -> None:
    """Issue 23: destroy deletes a resource only after what depends on it. A ClusterQueue keeps its finalizer while
    Workloads are admitted to it, a ResourceFlavor its own while a ClusterQueue names it, and only the running Kueue
    releases them: so a team namespace (its Jobs and Workloads) and its LocalQueues must go first, then the
    ClusterQueues, then the ResourceFlavors, then the Kueue release."""
    namespaces = {r.inputs["metadata"]["name"]: r for r in synthesis.of_type("kubernetes:core/v1:Namespace")
                  if "mlplatform.io/team" in r.inputs["metadata"].get("labels", {})}
    local = kueue_objects(synthesis, "LocalQueue")
    assert namespaces and local, "no team namespace or LocalQueue: nothing to check"
    for queue in local:  # with the namespace it is in still there
        assert namespaces[queue.inputs["metadata"]["namespace"]].urn in deleted_after(synthesis, queue), queue.name
    queues, flavors = kueue_objects(synthesis, "ClusterQueue"), kueue_objects(synthesis, "ResourceFlavor")
    releases = [r for r in synthesis.releases() if r.inputs["name"] == "kueue"]
    if team_stack:
        # Its queues, flavors and Kueue are the platform stack's, which is destroyed after it.
        assert not (queues or flavors or releases)
        return
    (release,) = releases
    assert queues and flavors
    flavor_urns = {r.inputs["metadata"]["name"]: r.urn for r in flavors}
    for flavor in flavors:
        assert release.urn in deleted_after(synthesis, flavor), flavor.name
    for queue in queues:
        named = {f["name"] for group in queue.inputs["spec"]["resourceGroups"] for f in group["flavors"]}
        assert {release.urn, *(flavor_urns[name] for name in named)} <= deleted_after(synthesis, queue), queue.name
    kueue_side = {release.urn, *(r.urn for r in queues + flavors)}
    for resource in [*namespaces.values(), *local]:
        assert kueue_side <= deleted_after(synthesis, resource), resource.name


def test_destroy_deletes_team_namespaces_before_the_cluster_queues_and_kueue(shared):
    assert_destroy_order(shared, team_stack=False)


@pytest.mark.parametrize("stack", available_stacks(PROJECT_DIR))
def test_every_stacks_destroy_deletes_team_namespaces_then_cluster_queues_then_flavors_then_kueue(stack: str):
    # Issue 23 asks it of every stack, not only the synthetic one above.
    team_stack = "mlplatform:platformStack" in yaml.safe_load((PROJECT_DIR / stack_file(stack)).read_text())["config"]
    assert_destroy_order(stack_synthesis(stack), team_stack=team_stack)


def test_the_destroy_order_check_sees_an_order_that_is_only_transitive_and_one_that_is_missing(shared):
    namespace = next(r for r in shared.of_type("kubernetes:core/v1:Namespace")
                     if r.inputs["metadata"]["name"] == "research")
    queues = [r.urn for r in kueue_objects(shared, "ClusterQueue")]
    release = next(r for r in shared.releases() if r.inputs["name"] == "kueue")
    # Namespace -> ClusterQueues only: the flavors and the release are still deleted after it, through the queues.
    through_queues = dataclasses.replace(namespace, depends_on=tuple(queues), parent=None)
    with_it = dataclasses.replace(shared, resources=[through_queues if r is namespace else r for r in shared.resources])
    assert release.urn in deleted_after(with_it, through_queues)
    assert_destroy_order(with_it, team_stack=False)
    # Namespace -> nothing: Pulumi may delete the queues while its Workloads are admitted.
    alone = dataclasses.replace(namespace, depends_on=(), parent=None)
    without = dataclasses.replace(shared, resources=[alone if r is namespace else r for r in shared.resources])
    with pytest.raises(AssertionError, match="team-research-namespace"):
        assert_destroy_order(without, team_stack=False)


def test_team_stack_namespaces_share_their_teams_queue(local_synth):
    vision = stack_synthesis("team-vision")
    queues = local_queues(vision)
    assert set(queues) == {(ns, q) for ns in ("vision-dev", "vision-serving") for q in ("vision", "default")}
    assert all(q["spec"] == {"clusterQueue": "vision"} for q in queues.values())
    labels = [r.inputs["metadata"]["labels"]["mlplatform.io/team"]
              for r in vision.of_type("kubernetes:core/v1:Namespace")]
    assert labels == ["vision", "vision"]
    assert "vision" in kueue(local_synth, "ClusterQueue")


def test_renamed_time_sliced_shares_are_queued_and_quota_d():
    # b is guaranteed 4 shares and borrows a's idle whole GPUs for its jobs of 2 (a share runs one per container).
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": [
        {"name": "t4", "gpusPerNode": 2},
        {"name": "shared", "sharing": {"timeSlicing": {"replicas": 4, "renameByDefault": True}}}]},
        teams=[team("a", 2), team("b", 6, gpus={"shared": 4})])
    flavors = gpu_flavors(kueue(synthesis, "ClusterQueue")["b"])
    assert flavors["shared"]["nvidia.com/gpu.shared"]["nominalQuota"] == "4"
    assert flavors["shared"]["nvidia.com/gpu"] == {"name": "nvidia.com/gpu", "nominalQuota": "0",
                                                   "borrowingLimit": "0", "lendingLimit": "0"}
    assert flavors["t4"]["nvidia.com/gpu.shared"]["nominalQuota"] == "0"
    # Whole GPUs first, though the guarantee is in the shared pool.
    assert list(flavors) == ["t4", "shared"]
    hard = next(r.inputs for r in synthesis.of_type("kubernetes:core/v1:ResourceQuota")
                if r.inputs["metadata"]["namespace"] == "b")["spec"]["hard"]
    # Issue 24: each resource had the whole ceiling (6 + 6). A quota cannot cap the two together, but it holds
    # each to what b's queue can give of it: its 4 shares, and the 2 whole GPUs it may borrow.
    assert (hard["requests.nvidia.com/gpu.shared"], hard["requests.nvidia.com/gpu"]) == ("4", "2")
    # The team without renamed shares may not ask for them at all (Kueue's queue does not cover them either).
    hard_a = next(r.inputs for r in synthesis.of_type("kubernetes:core/v1:ResourceQuota")
                  if r.inputs["metadata"]["namespace"] == "a")["spec"]["hard"]
    assert (hard_a["requests.nvidia.com/gpu.shared"], hard_a["requests.nvidia.com/gpu"]) == ("0", "2")


def test_mixed_mig_is_refused_because_no_quota_could_count_it():
    with pytest.raises(ConfigError, match=r"mlplatform:cluster\.gpuPools\[0\]\.sharing\.migStrategy: mixed "
                                          r"advertises one resource per MIG profile"):
        synth_with(cluster={"cloud": "kind", "gpuPools": [
            {"name": "a100", "accelerator": "nvidia-a100-80gb", "sharing": {"migStrategy": "mixed"}}]})


def test_a_pool_dedicated_to_a_team_is_in_no_other_teams_queue():
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": POOLS},
                           teams=[team("research", 2, gpus={"a100": 2}, dedicatedPools=["a100"]), team("web", 2)])
    queues = kueue(synthesis, "ClusterQueue")
    assert list(gpu_flavors(queues["research"])) == ["a100", "t4"]
    assert list(gpu_flavors(queues["web"])) == ["t4"]


def test_kueue_objects_validate_against_their_crds_schemas_and_cel_rules(shared, upstream):
    objects = [o for kind in ("ResourceFlavor", "ClusterQueue", "WorkloadPriorityClass", "Cohort")
               for o in kueue(shared, kind).values()] + list(local_queues(shared).values())
    report = check_manifests(objects, upstream_dir=upstream)
    assert report.errors == [] and report.unchecked == [] and len(report.checked) == len(objects)
    crds = upstream / "kueue" / "crds"
    plural = {"ClusterQueue": "clusterqueues", "LocalQueue": "localqueues", "ResourceFlavor": "resourceflavors",
              "WorkloadPriorityClass": "workloadpriorityclasses", "Cohort": "cohorts"}
    for obj in objects:
        crd = crds / f"kueue.x-k8s.io_{plural[obj['kind']]}.yaml"
        assert crd_violations(crd, "v1beta2", obj) == [], obj["metadata"]["name"]


def test_the_crd_cel_rules_are_really_evaluated(shared, upstream):
    """The rules catch what they should, so an empty list above means something."""
    crd = upstream / "kueue" / "crds" / "kueue.x-k8s.io_clusterqueues.yaml"
    research = kueue(shared, "ClusterQueue")["research"]
    broken = yaml.safe_load(yaml.safe_dump(research))
    del broken["spec"]["cohortName"]
    broken["spec"]["resourceGroups"][1]["flavors"][0]["resources"].pop()
    broken["spec"]["flavorFungibility"] = {"preference": "BorrowingOverPreemption", "whenCanBorrow": "MayStopSearch"}
    assert crd_violations(crd, "v1beta2", broken) == [
        "spec: borrowingLimit must be nil when cohort is empty",
        "spec.flavorFungibility: preference can only be set when both whenCanBorrow and whenCanPreempt are "
        "TryNextFlavor",
        "spec.resourceGroups[1]: flavors must have the same number of resources as the coveredResources"]


def test_every_stacks_cluster_queues_pass_the_crd_cel_rules(upstream):
    crd = upstream / "kueue" / "crds" / "kueue.x-k8s.io_clusterqueues.yaml"
    for stack in PLATFORM_STACKS:
        config = stack_config(stack)
        layout = queue_layout(pool_shapes(config.cluster), config.teams)
        for team in config.teams:
            queue = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": team.name},
                     "spec": cluster_queue(layout.teams[team.name], layout, team, team_label=team.name)}
            assert crd_violations(crd, "v1beta2", queue) == [], (stack, team.name)
            assert check_manifests([queue], upstream_dir=upstream).errors == [], (stack, team.name)


def test_kueue_values_exist_in_its_chart(shared, upstream):
    values = kueue_release(shared)["values"]
    assert unknown_keys(values, chart_values(upstream, "kueue"), free_form={"controllerManager.nodeSelector"}) == []
    # The frameworks are the chart's own default list.
    chart = yaml.safe_load(chart_values(upstream, "kueue")["managerConfig"]["controllerManagerConfigYaml"])
    assert list(KUEUE_FRAMEWORKS) == chart["integrations"]["frameworks"]


ADMISSIBILITY_POOLS = [{"name": "left", "gpusPerNode": 2}, {"name": "right", "gpusPerNode": 2}]


def test_a_guarantee_split_over_pools_that_strands_a_job_is_refused():
    # The case: 1 + 1 guaranteed over two pools of 2-GPU nodes, and nobody lends the second GPU.
    teams = [team("a", 2, gpus={"left": 1, "right": 1}), team("b", 2, gpus={"left": 1, "right": 1}, lendingLimit=0)]
    with pytest.raises(ConfigError, match=re.escape(
            "mlplatform:teams[0].queue: a job of 2 GPUs on one node is within the team's quota.gpus (2) and a node "
            "of some pool holds it, but no pool can ever admit it: at most left 1, right 1 GPUs")):
        synth_with(cluster={"cloud": "kind", "gpuPools": ADMISSIBILITY_POOLS}, teams=teams)
    warned = synth_with(cluster={"cloud": "kind", "gpuPools": ADMISSIBILITY_POOLS}, teams=teams,
                        capacity={"allowOvercommit": True})
    assert any(w.startswith("mlplatform:teams[0].queue: a job of 2 GPUs") for w in warned.warnings)


def test_the_same_quotas_placed_by_the_platform_strand_nothing():
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": ADMISSIBILITY_POOLS}, teams=[team("a", 2),
                                                                                                team("b", 2)])
    assert synthesis.warnings == []
    guarantees = {name: t["guarantee"] for name, t in synthesis.outputs["teams"].items()}
    assert guarantees == {"a": {"left": 2}, "b": {"right": 2}}


def test_a_split_guarantee_that_only_borrowing_can_join_is_a_warning():
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": ADMISSIBILITY_POOLS},
                           teams=[team(name, 3, gpus={"left": 1, "right": 1}) for name in ("a", "b")])
    assert synthesis.warnings == [
        f"mlplatform:teams[{index}].queue: the team is guaranteed 2 GPUs, but split over pools (left 1, right 1) so "
        "that a 2-GPU job fits none of its guaranteed parts: it runs only on borrowed GPUs, which their owners "
        "reclaim." for index in (0, 1)]


def test_every_stack_in_the_repo_lets_a_team_borrow():
    for stack in PLATFORM_STACKS:
        config = stack_config(stack)
        layout = queue_layout(pool_shapes(config.cluster), config.teams)
        assert any(share.borrowing for share in layout.teams.values()), stack


@pytest.mark.parametrize("teams, message", [
    ([team("a", 2, gpus={"v100": 1})], "mlplatform:teams[0].queue.gpus.v100: no GPU pool is named 'v100'; the pools "
                                       "are: t4, a100"),
    ([team("a", 2, gpus={"t4": 3})], "mlplatform:teams[0]: queue.gpus: 3 guaranteed GPUs, more than the team's "
                                     "quota.gpus (2), its ceiling"),
    ([team("a", 3, guaranteedGpus=1, gpus={"t4": 1})], "mlplatform:teams[0].queue: both gpus and guaranteedGpus"),
    ([team("a", 3, gpus={"t4": 0}), team("b", 4, gpus={"t4": 4}, lendingLimit=1),
      team("c", 2, gpus={"a100": 2}, lendingLimit=0)],
     "mlplatform:teams[0].queue: the team may borrow up to 3 GPUs (quota.gpus 3 minus 0 guaranteed), but its cohort "
     "'platform' can lend it at most 1"),
    ([team("a", 3, gpus={"a100": 3})], "the teams' queues guarantee 3 GPUs of pool 'a100', which holds at most 2"),
    ([team("a", 1, dedicatedPools=["a100"]), team("b", 1, dedicatedPools=["a100"])],
     "mlplatform:teams[1].queue.dedicatedPools: pool 'a100' is already dedicated to team 'a'"),
    ([team("a", 1, dedicatedPools=["a100"]), team("b", 1, gpus={"a100": 1})],
     "mlplatform:teams[1].queue.gpus.a100: pool 'a100' is dedicated to team 'a'"),
])
def test_bad_queue_config(teams, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster={"cloud": "kind", "gpuPools": POOLS}, teams=teams)
    assert message in str(caught.value), str(caught.value)


def test_a_team_stacks_namespaces_share_the_queue_the_platform_sets():
    namespace = team("vision-dev", 1, guaranteedGpus=1)
    with pytest.raises(ConfigError, match=r"namespaces\[0\]\.queue: the team's queue \(guarantee, cohort, pools\) is "
                                          "set in the platform stack's teams"):
        synth_with(platformStack="organization/mlplatform/local", team="vision", namespaces=[namespace])


def test_cluster_queue_quantities_are_strings_as_the_api_server_returns_them(shared):
    # The API server stores a resource.Quantity as a string; an int in the program differs from what the
    # provider reads back, so every preview after `up` proposed an update (found by make e2e).
    for queue in kueue(shared, "ClusterQueue").values():
        for group in queue["spec"]["resourceGroups"]:
            for flavor in group["flavors"]:
                for resource in flavor["resources"]:
                    numbers = {k: v for k, v in resource.items() if k != "name"}
                    assert all(isinstance(v, str) for v in numbers.values()), resource


# Issue 24: whole GPUs, time-sliced shares advertised as nvidia.com/gpu, and renamed shares.
SHARED_POOLS = [{"name": "l4", "accelerator": "nvidia-l4", "nodes": 2, "sharing": {"timeSlicing": {"replicas": 2}}},
                {"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 2},
                {"name": "t4s", "sharing": {"timeSlicing": {"replicas": 4, "renameByDefault": True}}}]


@pytest.fixture(scope="module")
def shared_pools() -> Synthesis:
    return synth_with(cluster={"cloud": "kind", "gpuPools": SHARED_POOLS}, teams=[
        team("research", 6, gpus={"l4": 4}), team("inference", 2), team("sandbox", 1, cohort="sandbox")])


def test_a_time_sliced_pool_counts_as_one_gpu_per_container():
    # NVIDIA's device plugin refuses a container more than one share (failRequestsGreaterThanOne, its default):
    # a 2-GPU job is admissible only where whole GPUs are. Guaranteed 4 L4 shares and nothing else to borrow,
    # research could never run one.
    with pytest.raises(ConfigError, match=re.escape(
            "mlplatform:teams[0].queue: a job of 2 GPUs on one node is within the team's quota.gpus (4) and a node "
            "of some pool holds it, but no pool can ever admit it: at most a100 0, l4 4")):
        synth_with(cluster={"cloud": "kind", "gpuPools": SHARED_POOLS[:2]},
                   teams=[team("research", 4, gpus={"l4": 4}), team("inference", 2, gpus={"a100": 2},
                                                                  lendingLimit=0)])
    # Nor is a default guarantee placed on time-sliced shares while a pool of whole GPUs has room.
    placed = synth_with(cluster={"cloud": "kind", "gpuPools": SHARED_POOLS[:2]}, teams=[team("inference", 2)])
    assert placed.outputs["teams"]["inference"]["guarantee"] == {"a100": 2}


def test_kueue_tries_whole_gpus_before_time_sliced_shares(shared_pools):
    queues = kueue(shared_pools, "ClusterQueue")
    # research's guarantee is in l4, yet a job meets a100 first: Kueue takes the first flavor that fits
    # without borrowing (whenCanBorrow TryNextFlavor), so a job of several GPUs is not put on shares.
    assert list(gpu_flavors(queues["research"])) == ["a100", "l4", "t4s"]
    assert list(gpu_flavors(queues["inference"])) == ["a100", "l4", "t4s"]


def test_only_pods_that_tolerate_sharing_are_given_time_sliced_gpus(shared_pools):
    flavors = kueue(shared_pools, "ResourceFlavor")
    assert flavors["l4"]["spec"]["nodeTaints"] == [
        {"key": "mlplatform.io/gpu-sharing", "value": "time-slicing", "effect": "NoSchedule"}]
    # The flavor does not tolerate it for the pod (Kueue adds a flavor's tolerations before it checks).
    assert all(t["key"] != "mlplatform.io/gpu-sharing" for t in flavors["l4"]["spec"]["tolerations"])
    # Renamed shares are asked for by name; whole GPUs are never refused.
    assert "nodeTaints" not in flavors["t4s"]["spec"] and "nodeTaints" not in flavors["a100"]["spec"]


def test_gpus_no_team_is_guaranteed_are_held_by_a_root_cohort_every_team_borrows(shared_pools):
    cohorts = kueue(shared_pools, "Cohort")
    assert set(cohorts) == {"mlplatform", "platform", "sandbox"}
    # l4: 2 nodes x 2 shares, all 4 guaranteed to research; a100: 2, both to inference; t4s: 4 shares, 1 to sandbox.
    root = cohorts["mlplatform"]["spec"]
    assert "parentName" not in root
    units, gpus = root["resourceGroups"]
    assert units == {"coveredResources": ["mlplatform.io/gpu-units"], "flavors": [
        {"name": "default", "resources": [{"name": "mlplatform.io/gpu-units", "nominalQuota": "3"}]}]}
    assert gpus == {"coveredResources": ["nvidia.com/gpu.shared"], "flavors": [
        {"name": "t4s", "resources": [{"name": "nvidia.com/gpu.shared", "nominalQuota": "3"}]}]}
    # Team cohorts lend nothing up to the root: no team borrows another cohort's idle guarantee.
    for name in ("platform", "sandbox"):
        spec = cohorts[name]["spec"]
        assert spec["parentName"] == "mlplatform"
        lent = [r.get("lendingLimit") for group in spec["resourceGroups"] for f in group["flavors"]
                for r in f["resources"]]
        assert lent and set(lent) == {"0"}
    # The ClusterQueues are created after their Cohorts and deleted before them.
    urns = {r.inputs["metadata"]["name"]: r.urn for r in shared_pools.resources if r.inputs.get("kind") == "Cohort"}
    for queue in (r for r in shared_pools.resources if r.inputs.get("kind") == "ClusterQueue"):
        assert urns[queue.inputs["spec"]["cohortName"]] in queue.depends_on
    assert all(urns["mlplatform"] in r.depends_on for r in shared_pools.resources
               if r.inputs.get("kind") == "Cohort" and r.inputs["metadata"]["name"] != "mlplatform")


def test_the_unguaranteed_gpus_let_a_team_borrow_what_no_cohort_member_lends():
    # Before, research could borrow only what inference lends (nothing), so its ceiling was refused, and the t4
    # GPUs nobody is guaranteed were never admitted at all.
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": POOLS}, teams=[
        team("research", 2, gpus={"t4": 0}), team("inference", 2, gpus={"a100": 2}, lendingLimit=0)])
    units, gpus = kueue(synthesis, "Cohort")["mlplatform"]["spec"]["resourceGroups"]
    assert units["flavors"][0]["resources"] == [{"name": "mlplatform.io/gpu-units", "nominalQuota": "4"}]
    assert gpus["flavors"] == [{"name": "t4", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "4"}]}]
    assert synthesis.outputs["unguaranteedGpus"] == {"t4": 4}
    # The summary said they could be borrowed while nothing could admit them; it now names where they are.
    summary = _platform_stack(PlatformOutputs.read(synthesis.outputs))
    assert "  Kueue Cohort 'mlplatform' (above every team cohort) holds the GPUs no team is guaranteed: t4 4" in summary


def test_the_root_cohort_name_is_not_a_team_cohort():
    with pytest.raises(ConfigError, match=r"teams\[0\]\.queue\.cohort: .*'mlplatform' is the Kueue Cohort above "
                                          "every team cohort"):
        synth_with(cluster={"cloud": "kind", "gpuPools": POOLS}, teams=[team("a", 1, cohort="mlplatform")])


def test_cpu_and_memory_are_never_borrowed_beyond_the_resource_quota(shared):
    # The ResourceQuota caps requests.cpu and requests.memory at the team's quota: a job Kueue admitted on
    # borrowed CPU could not create its pods, would hold its GPUs until waitForPodsReady evicts it, and be
    # admitted again, in a loop.
    for name, queue in kueue(shared, "ClusterQueue").items():
        (flavor,) = queue["spec"]["resourceGroups"][0]["flavors"]
        numbers = {r["name"]: r for r in flavor["resources"]}
        quota = next(r.inputs for r in shared.of_type("kubernetes:core/v1:ResourceQuota")
                     if r.inputs["metadata"]["namespace"] == name)["spec"]["hard"]
        for resource in ("cpu", "memory"):
            assert numbers[resource]["borrowingLimit"] == "0", (name, resource)
            assert numbers[resource]["nominalQuota"] == quota[f"requests.{resource}"], (name, resource)


def test_one_gpu_ceiling_over_whole_and_renamed_pools(shared_pools):
    # Every GPU, whole or a renamed share, also counts as a GPU unit (Kueue's resource transformations, Retain
    # keeping the GPU resource the pools' flavors hold); the units are what the team's ceiling caps.
    transformations = manager_config(shared_pools)["resources"]["transformations"]
    assert transformations == [
        {"input": "nvidia.com/gpu", "strategy": "Retain", "outputs": {"mlplatform.io/gpu-units": "1"}},
        {"input": "nvidia.com/gpu.shared", "strategy": "Retain", "outputs": {"mlplatform.io/gpu-units": "1"}}]
    research = kueue(shared_pools, "ClusterQueue")["research"]
    (units,) = [r for r in research["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
                if r["name"] == "mlplatform.io/gpu-units"]
    # Guaranteed 4, ceiling 6: 2 more units borrowed in all pools together, where each pool alone allows 2.
    assert units == {"name": "mlplatform.io/gpu-units", "nominalQuota": "4", "borrowingLimit": "2",
                     "lendingLimit": "4"}
    flavors = gpu_flavors(research)
    borrowing = [flavors[p][r]["borrowingLimit"] for p, r in (("a100", "nvidia.com/gpu"), ("l4", "nvidia.com/gpu"),
                                                               ("t4s", "nvidia.com/gpu.shared"))]
    assert borrowing == ["2", "2", "2"]


def test_a_pool_that_hands_out_several_shares_is_not_one_gpu_per_container():
    # With failRequestsGreaterThanOne off, the device plugin gives a container several shares (of any GPUs):
    # jobs of several shares are admissible there, and Kueue needs no opt-in taint.
    pools = [{"name": "l4", "accelerator": "nvidia-l4", "nodes": 2,
              "sharing": {"timeSlicing": {"replicas": 2, "failRequestsGreaterThanOne": False}}}]
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": pools}, teams=[team("research", 2)])
    assert "nodeTaints" not in kueue(synthesis, "ResourceFlavor")["l4"]["spec"]
    assert synthesis.warnings == []


def test_a_slow_starting_serving_pod_is_not_evicted_after_kueues_default_30_minutes(shared):
    # Issue 24: each serving pod is its own Kueue workload, evicted when not Ready within waitForPodsReady's
    # timeout (30 minutes by default, apis/config/v1beta2/defaults.go), which a model's cold start can exceed.
    wait = manager_config(shared)["waitForPodsReady"]
    assert wait["timeout"] == "1h" and "recoveryTimeout" not in wait  # recovery: as long (Kueue's default)
