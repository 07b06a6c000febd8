"""What every stack applies, its own objects and every chart's, checked as the cluster would judge them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from synth import PROJECT_DIR, render
from synth.applied import (_pod_spec, applied_objects, check_cel, check_mounts, check_placement, check_schemas, crds_of,
                           origin)
from synth.checks import check_rendered
from synth.engine import Synthesis
from synth.render import Rendering, stack_rendering, stack_synthesis
from synth.stackfile import available_stacks
from tests.conftest import synth_with

PLATFORM_STACKS = [stack for stack in available_stacks(PROJECT_DIR) if not stack.startswith("team-")]


@pytest.fixture(scope="module", params=PLATFORM_STACKS)
def stack(request: pytest.FixtureRequest) -> tuple[Synthesis, Rendering]:
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    return stack_synthesis(request.param), stack_rendering(request.param)


def _needs(rendering: Rendering, *releases: str) -> None:
    for release in releases:
        if release in rendering.unavailable:
            pytest.skip(f"chart of release {release} unavailable: {rendering.unavailable[release]}")


def test_every_applied_object_passes_its_strict_schema(stack) -> None:
    synthesis, rendering = stack
    _needs(rendering, *rendering.unavailable)  # the CRDs of a chart not rendered are missing
    report = check_schemas(synthesis, rendering)
    assert report.errors == []
    # A custom resource whose CRD the stack does not install would be refused by the API server.
    assert report.unchecked == [], "objects with no schema in the stack"


def test_custom_resources_keep_the_cel_rules_of_their_crds(stack) -> None:
    synthesis, rendering = stack
    report = check_cel(applied_objects(synthesis, rendering), crds_of(rendering, synthesis.manifests()))
    assert report.failures == []
    assert report.unevaluated == [], "rules cel-python cannot evaluate: add the function or name it here"


def test_cel_rules_catch_a_broken_custom_resource(stack) -> None:
    synthesis, rendering = stack
    crds = crds_of(rendering, synthesis.manifests())
    kinds = {crd["spec"]["names"]["kind"] for crd in crds}
    if "EC2NodeClass" not in kinds:
        pytest.skip("the stack installs no Karpenter CRDs")
    node_class = next(m for m in synthesis.manifests() if m["kind"] == "EC2NodeClass")
    broken = {**node_class, "spec": {**node_class["spec"], "amiSelectorTerms": [{"alias": "ubuntu@latest"}]}}
    assert check_cel([broken], crds).failures


def test_policy_rules_hold_for_chart_workloads(stack) -> None:
    synthesis, rendering = stack
    assert [str(v) for v in check_rendered(rendering, synthesis) if v.mandatory] == []


# Chart workloads the platform cannot pin by the chart's values (the chart has no nodeSelector for them).
# They still land on the system pool, the only untainted one; each is a known gap with its reason.
UNPINNABLE = {
    "fake-gpu-operator": {"kwok-gpu-device-plugin", "nvidia-dcgm-exporter-kwok", "status-updater",
                          "topology-server"},  # templates set no nodeSelector from values (chart 0.2.0)
}
# DaemonSets that select node labels the platform never sets, on purpose: they are for features it leaves off.
NOWHERE = {
    "mig-faker": "Run:ai dynamic MIG (node-role.kubernetes.io/runai-dynamic-mig), not used on kind",
    "nvidia-device-plugin-mps-control-daemon": "MPS sharing (nvidia.com/mps.capable), not offered",
}


def test_every_workload_runs_on_its_pool(stack) -> None:
    synthesis, rendering = stack
    report = check_placement(synthesis, rendering)
    unexpected = [problem for problem in report.problems
                  if not any(f"Deployment gpu-operator/{name} " in problem and chart in problem
                             for chart, names in UNPINNABLE.items() for name in names)
                  and not any(f"/{name} runs on no pool" in problem for name in NOWHERE)]
    assert unexpected == []
    assert report.unplaceable == []


def test_each_placement_problem_says_why_and_what_to_change_and_counts(local_rendered) -> None:
    """A workload that can land nowhere is an error (its pods would stay Pending); the rest are warnings, each
    with why it matters and what to change, counted in the summary's Warnings."""
    import copy

    from synth import pipeline
    from synth.applied import check_applied

    synthesis, rendering = local_rendered
    result = pipeline.run("local")
    placement = [w for w in result.synthesis.warnings if w.startswith("placement: ")]
    assert placement and all("To change: " in warning for warning in placement)
    assert any("would take room from jobs and keep the pool from scaling to zero" in w for w in placement)
    assert not result.failed
    stranded = copy.deepcopy(rendering)
    deployment = next(o for o in stranded.releases["kueue"].objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["nodeSelector"] = {"mlplatform.io/pool": "gpu-a100"}
    report = check_applied(synthesis, stranded)
    (error,) = report.placement.unplaceable
    assert error.startswith("kueue (kueue-0.19.2): Deployment kueue-system/kueue-controller-manager can land on no "
                            "pool (system: its nodeSelector {'mlplatform.io/pool': 'gpu-a100'} matches no system node;")
    assert "so its pods would stay Pending. To change: give it a nodeSelector" in error
    assert report.broken
    assert "  ERROR " + error in report.summary()


@pytest.fixture
def local_rendered() -> tuple[Synthesis, Rendering]:
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    rendering = stack_rendering("local")
    _needs(rendering, "kueue", "fake-gpu-operator")
    return stack_synthesis("local"), rendering


def test_the_admission_jobs_and_node_exporter_are_pinned_to_the_system_pool(stack) -> None:
    synthesis, rendering = stack
    _needs(rendering, "kube-prometheus-stack")
    pinned = {obj["metadata"]["name"]: (_pod_spec(obj) or {}).get("nodeSelector")
              for obj in rendering.releases["kube-prometheus-stack"].objects
              if obj["kind"] in ("Job", "DaemonSet")}
    assert pinned and all((selector or {}).get("mlplatform.io/pool") == "system" for selector in pinned.values()), \
        pinned


def _limit_range_defaults(synthesis: Synthesis) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["namespace"]: item for m in synthesis.manifests() if m["kind"] == "LimitRange"
            for item in m["spec"]["limits"] if item["type"] == "Container"}


def test_every_platform_container_has_requests_and_a_memory_limit(stack) -> None:
    synthesis, rendering = stack
    defaults = _limit_range_defaults(synthesis)
    unsized = []
    for obj in rendering.objects():
        spec = _pod_spec(obj)
        if spec is None or (obj.get("spec") or {}).get("replicas") == 0:
            continue
        group_kind = (obj["apiVersion"].rpartition("/")[0], obj["kind"])
        containers = [{"name": obj["kind"].lower(), "resources": spec.get("resources") or {}}] \
            if group_kind[0] == "monitoring.coreos.com" else \
            [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        default = defaults.get(obj["metadata"].get("namespace"), {})
        for container in containers:
            resources = container.get("resources") or {}
            requests = resources.get("requests") or default.get("defaultRequest") or {}
            limits = resources.get("limits") or default.get("default") or {}
            if not ({"cpu", "memory"} <= set(requests) and "memory" in limits):
                unsized.append(f"{origin(obj)}: {obj['kind']} {obj['metadata']['name']} {container['name']}")
    assert unsized == []


def test_every_volume_is_mounted_and_every_file_an_argument_names_is_mounted(stack) -> None:
    """Issue 23: on GKE the DCGM exporter's counters volume was mounted by nobody (a values list replaced the
    chart's), so the file its -f names was the image's own, and the alerts on our added counters never fired."""
    synthesis, rendering = stack
    assert check_mounts(applied_objects(synthesis, rendering)) == []


def test_the_mount_check_finds_a_replaced_mount_list() -> None:
    # The shape gcp-dev's dcgm-exporter DaemonSet had: the chart's volume, our driver mount only, -f unmounted.
    exporter = {"name": "exporter", "args": ["-f", "/etc/dcgm-exporter/default-counters.csv"],
                "volumeMounts": [{"name": "nvidia-driver", "mountPath": "/usr/local/nvidia"}]}
    daemonset = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "dcgm-exporter"},
                 "spec": {"template": {"spec": {"containers": [exporter], "volumes": [
                     {"name": "exporter-metrics-volume", "configMap": {"name": "exporter-metrics-config-map"}},
                     {"name": "nvidia-driver", "hostPath": {"path": "/home/kubernetes/bin/nvidia"}}]}}}}
    problems = check_mounts([daemonset])
    assert len(problems) == 2
    assert "volume exporter-metrics-volume is mounted by no container" in problems[0]
    assert "is given /etc/dcgm-exporter/default-counters.csv" in problems[1]


# Control-plane targets that cannot exist per cloud, by the clouds' own docs (see each cluster module's
# Capabilities.scrapeable for the sources); the jobs kube-prometheus-stack gives them.
MISSING_TARGETS = {
    "aws": {"kube-scheduler", "kube-controller-manager", "kube-etcd", "kube-proxy"},
    "gcp": {"kube-scheduler", "kube-controller-manager", "kube-etcd", "kube-proxy", "coredns"},
    "kind": {"kube-etcd", "kube-proxy"},
    "existing": {"kube-scheduler", "kube-controller-manager", "kube-etcd", "kube-proxy"},
}


def test_no_default_alert_or_scrape_whose_target_cannot_exist(stack) -> None:
    _assert_no_doomed_alerts(*stack)


def test_an_existing_cluster_has_no_doomed_alert_and_its_own_system_nodes(tmp_path) -> None:
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: lab\ncontexts: [{name: lab}]\n")
    synthesis = synth_with(cluster={
        "cloud": "existing", "name": "lab", "kubeconfig": str(kubeconfig), "context": "lab",
        "systemNodeLabels": {"node-role": "infra"},
        "gpuPools": [{"name": "l4", "accelerator": "nvidia-l4", "gpusPerNode": 1, "maxNodes": 2}]})
    rendering = render.render_stack(synthesis)
    _assert_no_doomed_alerts(synthesis, rendering)
    report = check_placement(synthesis, rendering)
    assert report.checked and [p for p in report.problems if "node-role" in p] == []


def _assert_no_doomed_alerts(synthesis: Synthesis, rendering: Rendering) -> None:
    _needs(rendering, "kube-prometheus-stack")
    missing = MISSING_TARGETS[synthesis.outputs["cloud"]]
    jobs = "|".join(sorted(missing))
    doomed = []
    for obj in rendering.releases["kube-prometheus-stack"].objects:
        if obj["kind"] == "PrometheusRule":
            doomed += [rule["alert"] for group in obj["spec"]["groups"] for rule in group["rules"]
                       if "alert" in rule and re.search(rf'job="({jobs})"', rule["expr"])]
        if obj["kind"] in ("ServiceMonitor", "Service") and any(
                job in obj["metadata"]["name"].removeprefix("kube-prometheus-stack-") for job in missing):
            doomed.append(f"{obj['kind']} {obj['metadata']['name']}")
    assert doomed == [], f"{synthesis.stack} ({synthesis.outputs['cloud']})"


def test_grafana_reads_no_secret_through_the_api(stack) -> None:
    synthesis, rendering = stack
    _needs(rendering, "kube-prometheus-stack")
    objects = applied_objects(synthesis, rendering)
    roles = {(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]): obj for obj in objects
             if obj["kind"] in ("ClusterRole", "Role")}
    granted = []
    for binding in (obj for obj in objects if obj["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        if not any(subject.get("name") == "kube-prometheus-stack-grafana" for subject in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], None if ref["kind"] == "ClusterRole" else
                          binding["metadata"]["namespace"], ref["name"]))
        assert role is not None, f"{binding['metadata']['name']} binds a role the stack does not declare"
        granted += [resource for rule in role["rules"] for resource in rule.get("resources", [])]
    assert "configmaps" in granted and "secrets" not in granted


def test_every_karpenter_value_we_set_takes_effect_in_the_1_14_1_chart() -> None:
    """The values are checked against what Karpenter's own 1.14.1 chart renders from them, not against a
    values.yaml that may be from another commit: each one must reach the controller's Deployment."""
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    synthesis, rendering = stack_synthesis("dev"), stack_rendering("dev")
    _needs(rendering, "karpenter")
    release = next(r for r in synthesis.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == "karpenter")
    values = release.inputs["values"]
    (deployment,) = [o for o in rendering.releases["karpenter"].objects if o["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (controller,) = spec["containers"]
    env = {item["name"]: item.get("value") for item in controller["env"]}
    assert rendering.releases["karpenter"].chart.version == "1.14.1"
    assert env["CLUSTER_NAME"] == values["settings"]["clusterName"]
    assert env["INTERRUPTION_QUEUE"] == values["settings"]["interruptionQueue"]
    assert spec["serviceAccountName"] == values["serviceAccount"]["name"]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert controller["resources"] == values["controller"]["resources"]
    assert set(values) == {"settings", "serviceAccount", "nodeSelector", "controller"}, "a new value: check it here"


def test_crd_rules_judge_the_object_as_the_api_server_defaults_it() -> None:
    # The API server fills a CRD's defaults before it validates: a rule reading a defaulted field holds.
    crd = {"spec": {"group": "example.io", "names": {"kind": "Widget"}, "versions": [{"name": "v1", "schema": {
        "openAPIV3Schema": {"type": "object", "properties": {"spec": {
            "type": "object", "properties": {"mode": {"type": "string", "default": "fast"}},
            "x-kubernetes-validations": [{"rule": "self.mode == 'fast'", "message": "mode must be fast"}]}}}}}]}}
    widget = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    report = check_cel([widget], [crd])
    assert (report.evaluated, report.failures, report.unevaluated) == (1, [], [])
    slow = check_cel([widget | {"spec": {"mode": "slow"}}], [crd])
    assert slow.failures == ["example.io/v1 Widget w .spec: mode must be fast (rule \"self.mode == 'fast'\")"]
