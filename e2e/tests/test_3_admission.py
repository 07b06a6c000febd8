"""The team namespaces' admission policies (README, "Admission rules in team namespaces"), judged by the API
server itself: per policy, a team member submits a purpose-built violating object and a compliant one, Pods
and Jobs, with server-side dry-run (nothing is stored). The e2e stack is dev-like and sets no
`admission.enforcement`, so every policy warns (and audits): a violation draws the policy's own warning, and a
compliant object draws no warning at all (it also meets Pod Security `restricted`, whose warnings would
show)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from components.admission import QUEUE_LABEL
from core.vocabulary import GPU_TAINT, POOL_LABEL, TEAM_LABEL
from e2e.cluster import ApiError
from e2e.lifecycle import Platform

POLICIES = ("gpu-nodes-for-gpu-work", "gpu-limits-equal-requests", "gpu-work-through-team-queue", "team-pools-only",
            "gpu-request-fits-a-node", "team-priority-classes")
# The policies of multi-node work (components/gang_admission.py), judged by the API server in test_6_gangs.
GANG_POLICIES = ("multi-node-whole-nodes", "multi-node-names-its-topology", "jobset-through-team-queue")
# A member of each team, as its RoleBinding names the group (Pulumi.e2e.yaml's teams[].groups.edit).
MEMBERS = {"research": ("alice", "ml-research"), "inference": ("bob", "ml-inference")}
GPU_TOLERATION = {"key": GPU_TAINT.key, "operator": "Equal", "value": GPU_TAINT.value, "effect": GPU_TAINT.effect}


def gpu_pod(namespace: str = "research", *, gpus: int = 1, resource: str = "nvidia.com/gpu",
            pool: str = "a100") -> dict[str, Any]:
    """A compliant GPU pod: the team's queue, a pool it may use, an ML priority class, Pod Security
    `restricted` (README's example), GPUs in limits only."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "train", "namespace": namespace, "labels": {QUEUE_LABEL: namespace}},
        "spec": {
            "restartPolicy": "Never",
            "priorityClassName": "ml-training",
            "nodeSelector": {POOL_LABEL: pool},
            "tolerations": [GPU_TOLERATION],
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "train", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi", resource: str(gpus)}},
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def cpu_pod(namespace: str = "research") -> dict[str, Any]:
    """A compliant CPU pod: no GPU, no GPU toleration, no pool."""
    pod = gpu_pod(namespace)
    pod["metadata"]["labels"] = {}
    for key in ("nodeSelector", "tolerations", "priorityClassName"):
        del pod["spec"][key]
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    return pod


def as_job(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as a Job's template, the Job carrying its labels (where Kueue reads the queue name)."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "train", "namespace": pod["metadata"]["namespace"],
                         "labels": pod["metadata"]["labels"]},
            "spec": {"backoffLimit": 0, "template": {"spec": pod["spec"]}}}


def changed(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A copy with pod-spec fields set (None removes one); a Job's go into its template."""
    obj = copy.deepcopy(obj)
    target = obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]
    for key, value in spec.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return obj


def labelled(obj: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["labels"] = labels
    return obj


def required_affinity(key: str, *values: str) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}]}}}


def submit(e2e: Platform, obj: dict[str, Any]) -> list[str]:
    """Create OBJ with dryRun=All as a member of its namespace's team; the API server's warnings."""
    user, group = MEMBERS[obj["metadata"]["namespace"]]
    path = e2e.cluster.path_of(obj, collection=True) + "?dryRun=All"
    answer, warnings = e2e.cluster.request_as("POST", path, obj, user=user, groups=[group])
    assert answer["kind"] == obj["kind"]  # admitted (a dry run: stored nowhere)
    return warnings


def warned_by(warnings: list[str]) -> set[str]:
    """The platform's policies among the warnings (the API server names each: ValidatingAdmissionPolicy 'NAME')."""
    return {name for name in POLICIES if any(f"'mlplatform-{name}'" in w for w in warnings)}


SYSTEM_POOL = {POOL_LABEL: "system"}  # Pulumi.e2e.yaml's systemNodeLabels

# (id, object, the one policy it violates)
VIOLATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("cpu-pod-tolerating-the-gpu-taint", changed(cpu_pod(), tolerations=[GPU_TOLERATION]), "gpu-nodes-for-gpu-work"),
    ("cpu-job-tolerating-every-taint", as_job(changed(cpu_pod("inference"), tolerations=[{"operator": "Exists"}])),
     "gpu-nodes-for-gpu-work"),
    ("gpu-pod-in-another-teams-queue", labelled(gpu_pod(), {QUEUE_LABEL: "inference"}),
     "gpu-work-through-team-queue"),
    ("gpu-job-in-another-teams-queue", as_job(labelled(gpu_pod("inference"), {QUEUE_LABEL: "research"})),
     "gpu-work-through-team-queue"),
    # A Job: a bare pod naming its node is refused outright (below).
    ("job-with-node-name", as_job(changed(gpu_pod(), nodeName="a100-0", nodeSelector=None)), "team-pools-only"),
    ("pod-selecting-the-system-pool", changed(cpu_pod(), nodeSelector=SYSTEM_POOL), "team-pools-only"),
    ("job-requiring-the-system-pool", as_job(changed(cpu_pod("inference"),
                                                     affinity=required_affinity(POOL_LABEL, "system"))),
     "team-pools-only"),
    # The largest nodes are the h100 pool's 8 GPUs.
    ("pod-asking-more-gpus-than-a-node-has", gpu_pod(gpus=9), "gpu-request-fits-a-node"),
    ("job-asking-a-gpu-resource-no-pool-has", as_job(gpu_pod("inference", resource="nvidia.com/mig-1g.10gb")),
     "gpu-request-fits-a-node"),
    ("pod-with-a-system-priority-class", changed(cpu_pod(), priorityClassName="system-cluster-critical"),
     "team-priority-classes"),
]

COMPLIANT: list[tuple[str, dict[str, Any]]] = [
    ("cpu-pod", cpu_pod()),
    ("cpu-job", as_job(cpu_pod("inference"))),
    ("gpu-pod-in-its-teams-queue", gpu_pod()),
    ("gpu-pod-in-the-default-queue", labelled(gpu_pod(), {QUEUE_LABEL: "default"})),
    # README: "or leave the label off for the namespace's default queue".
    ("gpu-pod-without-a-queue-label", labelled(gpu_pod(), {})),
    ("gpu-job-on-time-sliced-gpus", as_job(gpu_pod("inference", resource="nvidia.com/gpu.shared", pool="t4"))),
    ("gpu-pod-as-large-as-a-node", gpu_pod(gpus=4)),
    ("gpu-pod-requiring-its-pool", changed(gpu_pod(), nodeSelector=None,
                                           affinity=required_affinity(POOL_LABEL, "a100"))),
    ("gpu-pod-with-ml-serving-priority", changed(gpu_pod("inference"), priorityClassName="ml-serving")),
]


def test_every_policy_warns_and_audits_in_team_namespaces(e2e: Platform):
    # Dev-like stack without admission.enforcement: Warn + Audit (Deny + Audit is for prod).
    bindings = {b["metadata"]["name"]: b["spec"] for b in
                e2e.cluster.get("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings")["items"]}
    assert set(bindings) == {f"mlplatform-{name}" for name in POLICIES + GANG_POLICIES}
    for spec in bindings.values():
        assert spec["validationActions"] == ["Warn", "Audit"]
        assert spec["matchResources"]["namespaceSelector"] == {
            "matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}]}


@pytest.mark.parametrize("obj,policy", [(o, p) for _, o, p in VIOLATIONS], ids=[i for i, _, _ in VIOLATIONS])
def test_a_violation_draws_its_policys_warning(e2e: Platform, obj: dict[str, Any], policy: str):
    warnings = submit(e2e, obj)
    assert warned_by(warnings) == {policy}, warnings


@pytest.mark.parametrize("obj", [o for _, o in COMPLIANT], ids=[i for i, _ in COMPLIANT])
def test_a_compliant_object_draws_no_warning(e2e: Platform, obj: dict[str, Any]):
    assert submit(e2e, obj) == []


def test_the_queue_warning_names_the_team(e2e: Platform):
    # Its messageExpression, evaluated by the API server's CEL (a static message would not know the team).
    warnings = submit(e2e, labelled(gpu_pod(), {QUEUE_LABEL: "inference"}))
    assert any(f"label it {QUEUE_LABEL}: research " in w for w in warnings), warnings


@pytest.mark.parametrize("kind", ["pod", "job"])
def test_gpu_requests_without_equal_limits_are_refused(e2e: Platform, kind: str):
    # mlplatform-gpu-limits-equal-requests: the API server's own validation of the pod spec refuses this before
    # any admission policy runs, so it is refused even where the policy only warns.
    pod = gpu_pod()
    pod["spec"]["containers"][0]["resources"]["requests"] = {"nvidia.com/gpu": "1"}
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "2"
    with pytest.raises(ApiError) as refused:
        submit(e2e, as_job(pod) if kind == "job" else pod)
    assert refused.value.status == 422
    assert "must be equal to nvidia.com/gpu limit" in json.loads(refused.value.body)["message"]


def test_a_bare_pod_naming_its_node_is_refused(e2e: Platform):
    # Kueue gates every pod in a team namespace (manageJobsWithoutQueueName), and the API server refuses
    # spec.nodeName on a gated pod: refused even where mlplatform-team-pools-only only warns.
    with pytest.raises(ApiError) as refused:
        submit(e2e, changed(gpu_pod(), nodeName="a100-0", nodeSelector=None))
    assert refused.value.status == 422
    assert "schedulingGates" in json.loads(refused.value.body)["message"]
