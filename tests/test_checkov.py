"""checkov over everything the local stack applies: only the accepted checks below may fail."""

from __future__ import annotations

import pytest

from synth import render
from synth.applied import applied_objects
from synth.checkov import CHECKOV, checkov_available, run_checkov
from synth.render import stack_rendering, stack_synthesis

# The checks the platform accepts failing, each with its reason. Anything else failing fails this test.
ACCEPTED = {
    "CKV_K8S_8": "liveness probes: the charts decide them; several agents and Jobs have none upstream",
    "CKV_K8S_9": "readiness probes: as above",
    "CKV_K8S_11": "CPU limits: deliberately none (components/sizing.py): throttling controllers helps no one",
    "CKV_K8S_15": "pull policy Always: images are pinned to release tags (policy images-and-charts-pinned), so "
                  "IfNotPresent is right and keeps nodes working when a registry is down",
    "CKV_K8S_43": "image digests: the pin is the release tag (versions.py); the charts template tags",
    "CKV_K8S_38": "service account tokens: the controllers (operator, Kueue, kube-state-metrics, Grafana's "
                  "sidecar) talk to the API server",
    "CKV_K8S_40": "high UIDs: upstream images choose their users; Pod Security Admission limits them",
    "CKV_K8S_22": "read-only root filesystems: upstream images that write to their filesystem",
    "CKV_K8S_28": "NET_RAW/capabilities: upstream defaults of agents in privileged platform namespaces",
    "CKV_K8S_37": "capabilities: as above",
    "CKV_K8S_20": "allowPrivilegeEscalation: the GPU agents and node-exporter, in the privileged platform "
                  "namespaces (policy no-host-access-outside-platform-agents)",
    "CKV_K8S_23": "root containers: the same node agents",
    "CKV_K8S_29": "pod security contexts: chart defaults of agents and the fake GPU operator",
    "CKV_K8S_30": "container security contexts: as above",
    "CKV_K8S_31": "seccomp profiles: chart defaults; the runtime's default applies",
    "CKV_K8S_16": "privileged containers: the fake GPU operator's per-node agents on kind only",
    "CKV_K8S_17": "host PID: node-exporter reads its node's processes",
    "CKV_K8S_19": "host network: node-exporter serves its node's metrics on the node's address",
    "CKV_K8S_35": "secrets as environment: Grafana reads its admin password from our Secret by env",
    "CKV_K8S_49": "wildcards in ClusterRoles: the Prometheus operator manages every monitoring.coreos.com kind",
    "CKV_K8S_155": "admission webhook control: the operator's and Kueue's certificate management patch their "
                   "own webhook configurations",
    "CKV2_K8S_5": "reading Secrets: Kueue's and the operator's webhook certificate Secrets, in their own "
                  "namespaces only",
    "CKV_K8S_10": "CPU requests: the fake GPU operator's containers the chart leaves unsized get them from "
                  "their namespace's LimitRange, which checkov does not see; and its gpu-operator placeholder "
                  "runs no pod (replicas: 0)",
    "CKV_K8S_12": "memory requests: as above",
    "CKV_K8S_13": "memory limits: as above",
}


def test_checkov_fails_only_accepted_checks_and_counts_them_per_chart() -> None:
    if not checkov_available():
        pytest.skip(f"needs checkov at {CHECKOV}: make checkov-venv")
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")
    rendering = stack_rendering("local")
    if rendering.unavailable:
        pytest.skip(f"charts unavailable: {rendering.unavailable}")
    report = run_checkov(applied_objects(stack_synthesis("local"), rendering))
    assert sum(report.passed.values()) > 0
    unaccepted = sorted({f"{failure.check_id} ({failure.check_name}): {failure.source} {failure.resource}"
                         for failure in report.failures if failure.check_id not in ACCEPTED})
    assert unaccepted == []
    assert any("kube-prometheus-stack" in line for line in report.summary())


def test_the_failures_are_listed_per_object_for_out_checkov_txt() -> None:
    from synth.checkov import CheckovReport, Failure

    report = CheckovReport(failures=[
        Failure("kueue (kueue-0.19.2)", "CKV_K8S_9", "Readiness Probe Should be Configured",
                "Deployment.kueue-system.kueue-controller-manager"),
        Failure("kueue (kueue-0.19.2)", "CKV_K8S_8", "Liveness Probe Should be Configured",
                "Deployment.kueue-system.kueue-controller-manager"),
        Failure("stack", "CKV_K8S_21", "The default namespace should not be used", "ConfigMap.default.x")])
    assert report.listing() == (
        "kueue (kueue-0.19.2): Deployment.kueue-system.kueue-controller-manager\n"
        "  CKV_K8S_8  Liveness Probe Should be Configured\n"
        "  CKV_K8S_9  Readiness Probe Should be Configured\n"
        "stack: ConfigMap.default.x\n"
        "  CKV_K8S_21  The default namespace should not be used\n")
    assert CheckovReport().listing() == "no check fails\n"
