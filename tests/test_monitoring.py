"""Monitoring: Prometheus and Grafana, GPU metrics from the right exporter, a GPU dashboard and GPU alerts."""

from __future__ import annotations

import csv
import dataclasses
import json
import re

import promql_parser
import pytest

from core.fields import GpuSharing
from core.handle import GpuPool, gpu_pool_labels
from core.vocabulary import GPU_TAINT
from components.kube import DaemonSetRef
from components.gpu_rules import (GPU_JOB, GPU_METRICS_JOB, KSM, PLATFORM_MARK, RECORDED_NAMES, gpu_alert_rules,
                                  gpu_rule_groups)
from components.monitoring import (DASHBOARDS, DCGM_COUNTERS, Monitoring, gpu_metrics_metric_relabelings,
                                   gpu_metrics_relabelings)
from config.errors import ConfigError
from config.models import MonitoringConfig
from policies.rules import only_gpu_agents_tolerate_the_gpu_taint
from synth.engine import NOT_PLAIN, SECRET, Resource, Synthesis
from synth.schema import check_manifests
from synth import render
from tests.chart_values import chart_values, unknown_keys
from tests.conftest import KIND, cli_config, cluster_handle, run_component, synth_with

POOLS = (GpuPool(name="a100", accelerator="nvidia-a100-80gb", gpus_per_node=8, min_nodes=0, max_nodes=2,
                 spot=True, labels=gpu_pool_labels("a100", "nvidia-a100-80gb"), taints=(GPU_TAINT,)),)
SETTINGS = MonitoringConfig.model_validate({"retention": "30d", "storageSize": "200Gi", "storageClass": "gp3",
                                           "gpuPrices": {"a100": 2.5}})
DEVICE_PLUGIN = DaemonSetRef("nvidia-device-plugin", "nvidia-device-plugin")
# kube-state-metrics metrics the dashboard and alerts use (its docs/metrics reference), and Prometheus's own.
KUBE_STATE_METRICS = {"kube_resourcequota", "kube_daemonset_status_desired_number_scheduled",
                      "kube_daemonset_status_number_ready", "kube_node_labels", "kube_node_status_allocatable",
                      "kube_pod_container_resource_requests", "kube_pod_status_phase"}
PROMETHEUS_METRICS = {"up"}
# Kueue's metrics the dashboard reads (its documented ClusterQueue metrics).
KUEUE_METRICS = {"kueue_pending_workloads", "kueue_cluster_queue_resource_usage", "kueue_cluster_queue_nominal_quota"}


def monitor(pools: tuple[GpuPool, ...] = POOLS, **capabilities: bool) -> Synthesis:
    return run_component(lambda: Monitoring("monitoring", cluster_handle(pools, **capabilities), SETTINGS,
                                            device_plugin=DEVICE_PLUGIN))


def release(synthesis: Synthesis, chart: str) -> Resource:
    (found,) = [r for r in synthesis.releases() if r.inputs["chart"] == chart]
    return found


def custom_resource(synthesis: Synthesis, kind: str) -> Resource:
    (found,) = [r for r in synthesis.resources if r.custom and r.inputs.get("kind") == kind]
    return found


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every series selector of a PromQL expression (a rule's or a dashboard query's)."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    # Grafana's template variables are not PromQL: give them a value before parsing (a duration for its ranges).
    expr = re.sub(r"\$__(range|interval|rate_interval)\b", "1d", expr)
    promql_parser.walk(promql_parser.parse(re.sub(r"\$\{?\w+\}?", ".*", expr)), visit)
    return found


def metrics_in(expr: str) -> set[str]:
    return {selector.name for selector in selectors(expr) if selector.name}


def counters_in(path) -> set[str]:
    rows = csv.reader(line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {row[0].strip() for row in rows}


# Fields our counters file adds to the chart's defaults: DCGM field names (DCGM's dcgm_fields.h: 396 row remap
# pending, the power and thermal violation counters) and dcgm-exporter 4.8.2's own XID counter
# (internal/pkg/counters/const.go).
ADDED_COUNTERS = {"DCGM_FI_DEV_ROW_REMAP_PENDING", "DCGM_FI_DEV_POWER_VIOLATION", "DCGM_FI_DEV_THERMAL_VIOLATION",
                  "DCGM_EXP_XID_ERRORS_COUNT"}
# Fields the fake GPU operator's exporter serves on kind (run-ai/fake-gpu-operator v0.2.0,
# internal/status-exporter/export/metrics/metrics.go).
FAKE_EXPORTER_METRICS = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}


@pytest.fixture(scope="module")
def dcgm_counters(request) -> set[str]:
    """What our dcgm-exporter serves: its file of counters, checked against the chart's default list."""
    from synth.schema import UPSTREAM_DIR
    path = UPSTREAM_DIR / "dcgm-exporter" / "default-counters.csv"
    if not path.is_file():
        pytest.skip(f"needs DCGM's default counters at {path} (../shared/upstream): absent")
    ours = counters_in(DCGM_COUNTERS)
    # Only the added fields are new; the profiling and label fields the chart leaves out stay out.
    assert ours - counters_in(path) == ADDED_COUNTERS
    return ours


# ---- Prometheus, Alertmanager, Grafana ---------------------------------------------------------------------

def test_kube_prometheus_stack_is_pinned_and_discovers_monitors_everywhere():
    stack = release(monitor(), "kube-prometheus-stack")
    assert stack.inputs["version"] == "88.5.3"
    assert stack.inputs["repositoryOpts"] == {"repo": "https://prometheus-community.github.io/helm-charts"}
    assert stack.inputs["namespace"] == "monitoring"
    values = stack.inputs["values"]
    spec = values["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "rule", "probe"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
    assert spec["retention"] == "30d"
    assert spec["resources"] == {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4096Mi"}}
    assert values["alertmanager"]["enabled"] is True
    assert values["grafana"]["sidecar"]["dashboards"] == {"enabled": True, "label": "grafana_dashboard",
                                                          "labelValue": "1", "searchNamespace": "ALL",
                                                          "resource": "configmap"}


def test_prometheus_keeps_its_data_on_a_volume_where_the_cluster_has_durable_ones():
    spec = release(monitor(), "kube-prometheus-stack").inputs["values"]["prometheus"]["prometheusSpec"]
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim == {"accessModes": ["ReadWriteOnce"], "storageClassName": "gp3",
                     "resources": {"requests": {"storage": "200Gi"}}}
    assert spec["retentionSize"] == "170GB"  # 85% of the volume: old data goes before the disk fills
    # A destroy deletes the volume with the StatefulSet instead of leaving it billing.
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete", "whenScaled": "Retain"}


def test_no_persistence_on_kind():
    spec = release(monitor(persistent_volumes=False), "kube-prometheus-stack").inputs["values"]["prometheus"][
        "prometheusSpec"]
    assert "storageSpec" not in spec and "retentionSize" not in spec


# ---- the Grafana admin password -----------------------------------------------------------------------------

def test_grafana_password_is_generated_as_a_secret_and_never_in_helm_values():
    synthesis = monitor()
    (password,) = synthesis.of_type("random:index/randomPassword:RandomPassword")
    assert password.inputs == {"length": 32, "special": False}
    secret = next(r for r in synthesis.resources if r.inputs.get("kind") == "Secret")
    # Unknown until the password exists, and secret: a preview shows the Secret's data as nothing but that.
    assert secret.inputs["stringData"] in NOT_PLAIN
    grafana = release(synthesis, "kube-prometheus-stack").inputs["values"]["grafana"]
    assert grafana["admin"] == {"existingSecret": "grafana-admin", "userKey": "admin-user",
                                "passwordKey": "admin-password"}
    assert "adminPassword" not in grafana
    assert secret.urn in release(synthesis, "kube-prometheus-stack").depends_on


def test_grafana_password_from_secret_config_replaces_the_generated_one():
    config = cli_config(cluster=KIND) | {"mlplatform:grafanaAdminPassword": "s3cret-from-config"}
    from stacks import main
    from synth.engine import run_program
    synthesis = run_program(main, project="mlplatform", stack="test", config=config,
                            secret_keys=["mlplatform:grafanaAdminPassword"])
    assert synthesis.of_type("random:index/randomPassword:RandomPassword") == []
    assert synthesis.outputs["grafanaAdminPassword"] == SECRET
    assert "s3cret-from-config" not in json.dumps([r.inputs for r in synthesis.resources])


def test_grafana_password_in_plain_text_is_refused():
    with pytest.raises(ConfigError, match=r"^Pulumi\.test\.yaml: mlplatform:grafanaAdminPassword: a secret stored "
                                          r"in plain text.*pulumi config set --secret grafanaAdminPassword"):
        synth_with(cluster=KIND, grafanaAdminPassword="hunter2")


def test_stack_outputs_say_how_to_reach_grafana():
    outputs = synth_with(cluster=KIND).outputs
    assert outputs["grafana"]["portForward"] == \
        "kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80"
    assert outputs["grafanaAdminPassword"] in NOT_PLAIN


# ---- GPU metrics --------------------------------------------------------------------------------------------

def test_real_gpus_get_the_pinned_dcgm_exporter_on_gpu_nodes_only():
    exporter = release(monitor(), "dcgm-exporter")
    assert exporter.inputs["version"] == "4.8.2"
    assert exporter.inputs["repositoryOpts"] == {"repo": "https://nvidia.github.io/dcgm-exporter/helm-charts"}
    values = exporter.inputs["values"]
    assert values["tolerations"] == [GPU_TAINT.toleration()]
    (term,) = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert {e["key"] for e in term["matchExpressions"]} == set(POOLS[0].labels)


def test_the_exporter_names_each_pod_sharing_a_gpu_and_the_renamed_shares():
    # dcgm-exporter 4.8.2 gives a time-sliced GPU to one of its pods unless KUBERNETES_VIRTUAL_GPUS is on, and maps
    # to pods only nvidia.com/gpu and the resources NVIDIA_RESOURCE_NAMES names (pkg/cmd/app.go,
    # internal/pkg/transformation/kubernetes.go).
    def env(*pools: GpuPool) -> dict[str, str]:
        values = release(monitor(pools), "dcgm-exporter").inputs["values"]
        return {e["name"]: e["value"] for e in values.get("extraEnv", [])}

    def sliced(name: str, renamed: bool) -> GpuPool:
        return dataclasses.replace(POOLS[0], name=name, sharing=GpuSharing.model_validate(
            {"timeSlicing": {"replicas": 4, "renameByDefault": renamed}}))

    assert env(*POOLS) == {}
    assert env(*POOLS, sliced("t4", False)) == {"KUBERNETES_VIRTUAL_GPUS": "true"}
    assert env(*POOLS, sliced("t4", False), sliced("l4", True)) == {
        "KUBERNETES_VIRTUAL_GPUS": "true", "NVIDIA_RESOURCE_NAMES": "nvidia.com/gpu.shared"}


def test_kind_scrapes_the_fake_gpu_operators_exporter_the_same_way():
    synthesis = synth_with(cluster=KIND)
    assert [r.inputs["chart"] for r in synthesis.releases() if "dcgm" in r.inputs["chart"]] == []
    endpoint_of = {}
    for name, synth in (("kind", synthesis), ("real", monitor())):
        monitor_spec = custom_resource(synth, "ServiceMonitor").inputs["spec"]
        (endpoint,) = monitor_spec["endpoints"]
        endpoint_of[name] = (monitor_spec["namespaceSelector"], monitor_spec["selector"], endpoint)
    assert endpoint_of["kind"][0] == {"matchNames": ["gpu-operator"]}
    assert endpoint_of["kind"][1] == {"matchLabels": {"app": "nvidia-dcgm-exporter"}}
    assert endpoint_of["real"][1] == {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}
    # Both land in the same job, so the dashboard and the alerts need not know which one a cluster has.
    assert endpoint_of["kind"][2] == endpoint_of["real"][2] | {"port": "gpu-metrics"}
    assert endpoint_of["real"][2]["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": "mlplatform:gpu-metrics"},
        {"action": "replace", "targetLabel": "mlplatform_source", "replacement": "platform"},
        {"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    # The exporters' namespace/pod labels are not honoured: free GPUs would take the exporter's own.
    assert endpoint_of["real"][2]["honorLabels"] is False


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str]:
    """Prometheus's `replace` and `labeldrop` relabelling (model/relabel/relabel.go): source labels joined by ';',
    an anchored regex, and a replacement that is empty deletes the target label."""
    out = dict(labels)
    for config in configs:
        regex = re.compile(f"^(?:{config.get('regex', '(.*)')})$")
        if config["action"] == "labeldrop":
            out = {k: v for k, v in out.items() if not regex.match(k)}
            continue
        assert config["action"] == "replace"
        value = ";".join(out.get(label, "") for label in config["sourceLabels"])
        if (match := regex.match(value)) is None:
            continue
        result = match.expand(config.get("replacement", "$1").replace("$1", r"\1"))
        if result:
            out[config["targetLabel"]] = result
        else:
            out.pop(config["targetLabel"], None)
    return out


# What Prometheus makes of an exporter's sample before metric relabelling, honorLabels off: the target's
# namespace/pod/container (the exporter's pod) win, and the sample's own are renamed exported_*.
TARGET = {"job": "mlplatform:gpu-metrics", "instance": "10.0.3.7:9400", "node": "ip-10-0-3-21.ec2.internal",
          "namespace": "monitoring", "pod": "dcgm-exporter-7xk2p", "container": "exporter"}
GPU_LABELS = {"gpu": "0", "UUID": "GPU-6a3e0c1d", "modelName": "NVIDIA A100-SXM4-80GB"}


@pytest.mark.parametrize("hostname_label", ["Hostname", "hostname"])
def test_free_gpus_name_no_workload_and_held_ones_name_theirs(hostname_label):
    rules = gpu_metrics_metric_relabelings()
    free = relabel(TARGET | GPU_LABELS | {hostname_label: "ip-10-0-3-21"}, rules)
    assert free == {"job": "mlplatform:gpu-metrics", "instance": "10.0.3.7:9400", "node": "ip-10-0-3-21.ec2.internal",
                    "hostname": "ip-10-0-3-21"} | GPU_LABELS
    held = relabel(TARGET | GPU_LABELS | {hostname_label: "ip-10-0-3-21", "exported_namespace": "vision",
                                          "exported_pod": "train-0", "exported_container": "trainer"}, rules)
    assert held == free | {"namespace": "vision", "pod": "train-0", "container": "trainer"}


def test_no_gpu_pools_no_gpu_scrape():
    synthesis = monitor(pools=())
    assert [r for r in synthesis.resources if r.inputs.get("kind") == "ServiceMonitor"] == []
    assert [r.inputs["chart"] for r in synthesis.releases()] == ["kube-prometheus-stack"]


def test_nothing_of_monitoring_but_the_exporter_goes_to_gpu_nodes():
    synthesis = monitor()
    values = release(synthesis, "kube-prometheus-stack").inputs["values"]
    system = {"mlplatform.io/pool": "system"}
    for selector in (values["prometheus"]["prometheusSpec"]["nodeSelector"],
                     values["prometheusOperator"]["nodeSelector"],
                     values["alertmanager"]["alertmanagerSpec"]["nodeSelector"], values["grafana"]["nodeSelector"],
                     values["kube-state-metrics"]["nodeSelector"]):
        assert selector == system
    for resource in synthesis.resources:
        violations = only_gpu_agents_tolerate_the_gpu_taint(resource.type, resource.inputs)
        assert violations == [], resource.urn


# ---- custom resources: after their CRDs, valid against them ------------------------------------------------

def test_service_monitor_and_prometheus_rule_wait_for_the_chart_that_brings_their_crds():
    synthesis = monitor()
    stack = release(synthesis, "kube-prometheus-stack")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert stack.urn in custom_resource(synthesis, kind).depends_on
    assert release(synthesis, "dcgm-exporter").urn in custom_resource(synthesis, "ServiceMonitor").depends_on


def test_service_monitor_and_prometheus_rule_match_their_crds(upstream):
    synthesis = monitor()
    report = check_manifests([custom_resource(synthesis, k).inputs for k in ("ServiceMonitor", "PrometheusRule")],
                             upstream_dir=upstream)
    assert report.errors == [] and report.unchecked == []
    assert len(report.checked) == 2


def test_chart_values_exist_in_the_charts(upstream):
    synthesis = monitor()
    stack_values = release(synthesis, "kube-prometheus-stack").inputs["values"]
    # grafana, kube-state-metrics and node-exporter are subcharts: keys of theirs that the parent's values.yaml
    # does not repeat are checked against their own values.yaml where the chart folders have it.
    subcharts = {"grafana": "12.11.1", "kube-state-metrics": "8.4.0", "prometheus-node-exporter": "4.56.1"}
    unknown = unknown_keys(stack_values, chart_values(upstream, "kube-prometheus-stack"),
                           free_form={"prometheus.prometheusSpec.storageSpec"})
    assert all(key.split(".")[0] in subcharts for key in unknown), unknown
    for subchart, version in subcharts.items():
        if (folder := render._find_chart_dir(subchart, version)) is not None:
            # `enabled` is the parent's switch for the subchart; grafana's values.yaml documents
            # rbac.useExistingClusterRole in a comment (templates/clusterrolebinding.yaml reads it).
            keys = unknown_keys(stack_values[subchart], chart_values(folder.parent, folder.name),
                                free_form={"nodeSelector", "rbac"})
            assert [key for key in keys if key != "enabled"] == [], subchart
    exporter_values = release(synthesis, "dcgm-exporter").inputs["values"]
    # customMetrics is commented out in the chart's values.yaml; its metrics-configmap.yaml template reads it.
    assert unknown_keys(exporter_values, chart_values(upstream, "dcgm-exporter"), free_form={"affinity"}) == [
        "customMetrics"]


# ---- dashboard and alerts -----------------------------------------------------------------------------------

def test_dashboard_is_provisioned_for_the_grafana_sidecar_from_the_file_in_the_repo():
    dashboard = next(r for r in monitor().resources if r.inputs.get("kind") == "ConfigMap")
    assert dashboard.inputs["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert json.loads(dashboard.inputs["data"]["gpus.json"]) == json.loads((DASHBOARDS / "gpus.json").read_text())


def test_the_dashboard_counts_kueue_metrics_once_though_two_replicas_serve_them():
    # Kueue 0.19 serves its metrics from the leader and the follower alike, told apart by replica_role
    # (pkg/metrics/metrics.go): a sum over both counts every workload and every GPU twice.
    dashboard = json.loads((DASHBOARDS / "gpus.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    selectors = [m for e in exprs for m in re.findall(r"kueue_\w+(?:\{[^}]*\})?", e)]
    assert selectors and all('replica_role!="follower"' in selector for selector in selectors), selectors


def recorded_series() -> set[str]:
    groups = custom_resource(monitor(), "PrometheusRule").inputs["spec"]["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def test_every_dashboard_query_reads_metrics_that_exist(dcgm_counters):
    dashboard = json.loads((DASHBOARDS / "gpus.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set().union(*(metrics_in(e) for e in exprs))
    known = dcgm_counters | KUBE_STATE_METRICS | KUEUE_METRICS | recorded_series()
    assert used <= known, used - known
    # What a GPU dashboard must show.
    assert {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP",
            "DCGM_FI_DEV_SM_CLOCK", "DCGM_EXP_XID_ERRORS_COUNT", "kube_resourcequota", "kueue_pending_workloads",
            "kueue_cluster_queue_resource_usage"} <= used


def test_the_dashboard_says_which_panels_have_data_on_kind():
    dashboard = json.loads((DASHBOARDS / "gpus.json").read_text())
    for panel in [p for p in dashboard["panels"] if p["type"] != "row"]:
        used = set().union(*(metrics_in(t["expr"]) for t in panel["targets"]))
        dcgm = {m for m in used if m.startswith("DCGM_")}
        # The usage rules read DCGM_FI_DEV_GPU_UTIL only, which the fake exporter serves.
        on_kind = dcgm <= FAKE_EXPORTER_METRICS
        assert panel["description"].endswith(" On kind: has data." if on_kind else " On kind: no data (the fake "
                                             "GPU operator's exporter serves only utilisation and framebuffer "
                                             "memory)."), panel["title"]


def test_every_alert_is_valid_promql_on_existing_metrics_and_says_what_to_do(dcgm_counters):
    groups = custom_resource(monitor(), "PrometheusRule").inputs["spec"]["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    rules = [r for g in groups for r in g["rules"] if "alert" in r]
    assert {r["alert"] for r in rules} == {
        "GpuAllocatedButIdle", "GpuXidHardwareFault", "GpuXidError", "GpuTemperatureHigh", "GpuThermalThrottling",
        "GpuPowerThrottling", "GpuRowRemapPending", "GpuRowRemapFailed", "GpuMemoryNearlyFull",
        "GpuMetricsExporterDown", "GpuNodeWithoutGpuMetrics", "GpuNodeAllocatableBelowPool",
        "TeamGpuQuotaNearlyExhausted", "GpuDevicePluginDown"}
    for rule in [r for g in groups for r in g["rules"]]:
        known = dcgm_counters | KUBE_STATE_METRICS | PROMETHEUS_METRICS | records
        assert metrics_in(rule["expr"]) <= known, rule
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_invalid_promql_is_caught():
    with pytest.raises(ValueError):
        metrics_in("sum by (x (up)")


def test_kube_state_metrics_exposes_the_node_labels_that_name_a_gpu_pool():
    values = release(monitor(), "kube-prometheus-stack").inputs["values"]
    assert values["kube-state-metrics"]["metricLabelsAllowlist"] == [
        "nodes=[mlplatform.io/accelerator,mlplatform.io/pool,nvidia.com/device-plugin.config,nvidia.com/gpu.present]"]


def test_the_exporter_serves_our_counters_file():
    values = release(monitor(), "dcgm-exporter").inputs["values"]
    assert values["customMetrics"] == DCGM_COUNTERS.read_text()
    assert ADDED_COUNTERS <= counters_in(DCGM_COUNTERS)


def test_device_plugin_alert_only_where_the_platform_installs_one():
    assert "GpuDevicePluginDown" not in {r["alert"] for r in gpu_alert_rules(POOLS, None)}


# ---- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({"retention": "15 days"}, "mlplatform:monitoring.retention: '15 days' is not a Prometheus duration"),
    ({"retention": "0d"}, "mlplatform:monitoring.retention: '0d' is not a Prometheus duration"),
    ({"storageSize": "lots"}, "mlplatform:monitoring.storageSize: 'lots' is not a Kubernetes quantity"),
    ({"storageSize": "0"}, "mlplatform:monitoring.storageSize: '0' must be more than zero"),
    ({"storageClass": "Fast_SSD"}, "mlplatform:monitoring.storageClass: 'Fast_SSD' is not a valid StorageClass name"),
    ({"gpuPrices": {"a100": 2}}, "mlplatform:monitoring: gpuPrices.a100: no GPU pool named 'a100'; the cluster's "
                                 "GPU pools: gpu"),
    ({"gpuPrices": {"gpu": 0}}, "mlplatform:monitoring.gpuPrices.gpu: Input should be greater than 0"),
])
def test_bad_monitoring_settings(settings, message):
    with pytest.raises(ConfigError) as caught:
        synth_with(cluster=KIND, monitoring=settings)
    assert f"Pulumi.test.yaml: {message}" in str(caught.value)


# How prometheus-operator names a team monitor's job (pkg/prometheus/promcfg.go): a ServiceMonitor's after its
# Service (a DNS-1035 label) or the value of the Service label its jobLabel names, a PodMonitor's
# "<namespace>/<name>" (a DNS-1123 label and subdomain) or a pod label's value (Kubernetes' label-value syntax).
TEAM_JOB_NAMES = {
    "Service name": r"[a-z]([-a-z0-9]*[a-z0-9])?",
    "label value (jobLabel)": r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
    "PodMonitor namespace/name": r"[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?",
}


@pytest.mark.parametrize("how", TEAM_JOB_NAMES)
def test_no_team_monitor_can_name_its_job_as_the_gpu_scrape_so_gpu_rules_trust_none(how):
    # A team Service named gpu-metrics, with its own ServiceMonitor, gave its series the job the GPU rules and
    # cost records select on (issue 24); team monitors may not write job by relabeling (the team-monitor-labels
    # policy).
    assert not re.fullmatch(TEAM_JOB_NAMES[how], GPU_METRICS_JOB)
    groups = gpu_rule_groups(POOLS, None, {pool.name: 2.5 for pool in POOLS})
    exprs = [rule["expr"] for group in groups for rule in group["rules"] if "DCGM_" in rule["expr"]
             or "up{" in rule["expr"]]
    assert exprs and all(GPU_JOB in expr and 'job="gpu-metrics"' not in expr for expr in exprs)


# ---- whose series the rules read ---------------------------------------------------------------------------

def matchers(selector: promql_parser.VectorSelector) -> set[str]:
    return {str(m) for m in selector.matchers.matchers}


def test_every_series_the_gpu_rules_and_dashboard_read_is_the_platforms_own_scrape():
    # The rules read kube-state-metrics' series by name alone: a team's exporter behind a Service named
    # kube-state-metrics (or any) added GPU requests, node labels, allocatable GPUs and quotas they counted.
    groups = gpu_rule_groups(POOLS, DEVICE_PLUGIN, {"a100": 2.5})
    records = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    dashboard = json.loads((DASHBOARDS / "gpus.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])
              if {"kube_resourcequota"} & metrics_in(t["expr"])]
    mark = {m.replace(" ", "") for m in PLATFORM_MARK.split(", ")}
    ksm, gpu = ({m.replace(" ", "") for m in matcher.split(", ")} for matcher in (KSM, GPU_JOB))
    raw = 0
    for expr in exprs:
        for selector in selectors(expr):
            if selector.name in records:
                continue
            found = {m.replace(" ", "") for m in matchers(selector)}
            raw += 1
            assert mark <= found, (selector.name, expr)
            assert (ksm if (selector.name or "").startswith("kube_") else gpu) <= found, (selector.name, expr)
    assert raw > 10


def test_prometheus_marks_every_scrape_but_the_platforms_own_kube_state_metrics_and_gpu_exporters():
    values = release(monitor(), "kube-prometheus-stack").inputs["values"]
    (scrape_class,) = values["prometheus"]["prometheusSpec"]["scrapeClasses"]
    # The default class: every monitor naming none, which team monitors must (the team-monitor-labels policy).
    assert scrape_class["default"] is True
    assert scrape_class["relabelings"] == [
        {"action": "replace", "targetLabel": "mlplatform_source", "replacement": "other"}]
    platform = {"action": "replace", "targetLabel": "mlplatform_source", "replacement": "platform"}
    # prometheus-operator runs the class's relabelings before the monitor's: these two say platform instead.
    assert values["kube-state-metrics"]["prometheus"]["monitor"]["http"]["relabelings"] == [platform]
    assert platform in gpu_metrics_relabelings()


def test_no_scrape_brings_in_a_series_named_like_the_platforms_recording_rules():
    # The rules and the dashboard read recorded series by name alone: an exporter printing
    # mlplatform:gpu_price_per_hour{pool="a100"} 0, or negative namespace_pool:mlplatform_gpus_allocated:count,
    # priced or erased every team's GPU time.
    values = release(monitor(), "kube-prometheus-stack").inputs["values"]
    (scrape_class,) = values["prometheus"]["prometheusSpec"]["scrapeClasses"]
    assert scrape_class["metricRelabelings"] == [
        {"action": "drop", "sourceLabels": ["__name__"], "regex": RECORDED_NAMES}]
    records = {rule["record"] for group in gpu_rule_groups(POOLS, DEVICE_PLUGIN, {"a100": 2.5})
               for rule in group["rules"] if "record" in rule}
    assert records and all(re.fullmatch(RECORDED_NAMES, record) for record in records)
    # What exporters serve is kept: every metric the rules and the dashboard read, and Kueue's.
    served = KUBE_STATE_METRICS | PROMETHEUS_METRICS | KUEUE_METRICS | ADDED_COUNTERS | FAKE_EXPORTER_METRICS
    assert not [name for name in served if re.fullmatch(RECORDED_NAMES, name)]
