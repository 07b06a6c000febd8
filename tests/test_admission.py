"""The admission policies of team namespaces, evaluated offline with a CEL library (cel-python) against pods and
jobs that must pass or fail; the objects themselves pass the Kubernetes schema, so the table is realistic."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from synth.engine import Synthesis
from synth.schema import check_manifests
from tests.cel import admit
from tests.conftest import PLATFORM_STACKS, stack_config, synth_with

POOLS = [{"name": "t4", "gpusPerNode": 4}, {"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 2}]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}


def _team(name: str, quota_gpus: int, **queue: Any) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "8", "memory": "32Gi"}, "gpus": quota_gpus}, "queue": queue}


@pytest.fixture(scope="module")
def synthesis() -> Synthesis:
    return synth_with(cluster={"cloud": "kind", "gpuPools": POOLS},
                      teams=[_team("research", 2, gpus={"a100": 2}, dedicatedPools=["a100"]), _team("web", 4)])


@pytest.fixture(scope="module")
def policies(synthesis) -> dict[str, dict[str, Any]]:
    """TeamAdmission's policies (those of multi-node work, components/gang_admission.py, have their own tests)."""
    (component,) = synthesis.of_type("mlplatform:admission:TeamAdmission")
    return {r.inputs["metadata"]["name"].removeprefix("mlplatform-"): r.inputs
            for r in synthesis.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")
            if r.parent == component.urn}


def namespace(team: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": team, "labels": {"kubernetes.io/metadata.name": team, "mlplatform.io/team": team}}}


def pod(*, gpus: int | None = 1, requests: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    """A pod in `research`: by default one GPU in limits, tolerating the GPU taint, labelled with the queue."""
    resources: dict[str, Any] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    if gpus is not None:
        resources["limits"]["nvidia.com/gpu"] = gpus
    if requests is not None:
        resources["requests"] = requests
    body: dict[str, Any] = {"containers": [{"name": "main", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                                            "resources": resources}]}
    if gpus is not None:
        body["tolerations"] = [GPU_TOLERATION]
    body |= spec
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "train", "namespace": "research",
                         "labels": {"kueue.x-k8s.io/queue-name": "research"} if labels is None else labels},
            "spec": body}


def job(of: dict[str, Any]) -> dict[str, Any]:
    """The pod's spec as a Job's template, the Job carrying the pod's labels and owners."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {key: value for key, value in of["metadata"].items() if key != "name"} | {"name": "train"},
            "spec": {"template": {"spec": of["spec"] | {"restartPolicy": "Never"}}}}


def owned(of: dict[str, Any], owner: tuple[str, str] = ("batch/v1", "Job")) -> dict[str, Any]:
    """The object as its owner's controller creates it (by default a Job's pod), without the queue label."""
    created = copy.deepcopy(of)
    created["metadata"]["labels"] = {"batch.kubernetes.io/job-name": "train"}
    created["metadata"]["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": "train",
                                               "uid": "7c7a2b7e-0000-4000-8000-000000000001", "controller": True}]
    return created


def affinity(key: str, *values: str) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]}]}}}


CPU_POD = pod(gpus=None, labels={})
MIG_POD = pod(gpus=None, tolerations=[GPU_TOLERATION])
MIG_POD["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] = 1
# (policy, case, object, team namespace, admitted?)
TABLE: list[tuple[str, str, dict[str, Any], str, bool]] = [
    ("gpu-nodes-for-gpu-work", "GPU pod tolerating the taint", pod(), "research", True),
    ("gpu-nodes-for-gpu-work", "CPU pod without tolerations", CPU_POD, "research", True),
    ("gpu-nodes-for-gpu-work", "CPU pod tolerating the GPU taint", pod(gpus=None, tolerations=[GPU_TOLERATION]),
     "research", False),
    ("gpu-nodes-for-gpu-work", "CPU pod tolerating every taint", pod(gpus=None, tolerations=[{"operator": "Exists"}]),
     "research", False),
    ("gpu-nodes-for-gpu-work", "CPU pod tolerating another taint",
     pod(gpus=None, tolerations=[{"key": "spot", "operator": "Exists"}]), "research", True),
    ("gpu-nodes-for-gpu-work", "CPU job tolerating the GPU taint",
     job(pod(gpus=None, tolerations=[GPU_TOLERATION])), "research", False),
    ("gpu-nodes-for-gpu-work", "GPU in an init container",
     pod(gpus=None, tolerations=[GPU_TOLERATION], initContainers=[{"name": "warmup", "image": "busybox:1.37",
                                                                   "resources": {"limits": {"nvidia.com/gpu": 1}}}]),
     "research", True),
    ("gpu-limits-equal-requests", "GPUs in limits only", pod(), "research", True),
    ("gpu-limits-equal-requests", "requests equal limits", pod(gpus=2, requests={"nvidia.com/gpu": "2"}),
     "research", True),
    ("gpu-limits-equal-requests", "requests below limits", pod(gpus=2, requests={"nvidia.com/gpu": "1"}),
     "research", False),
    ("gpu-limits-equal-requests", "GPUs in requests only", pod(gpus=None, requests={"nvidia.com/gpu": 1},
                                                              tolerations=[GPU_TOLERATION]), "research", False),
    ("gpu-limits-equal-requests", "shared GPU in requests only",
     job(pod(gpus=None, requests={"nvidia.com/gpu.shared": 1})), "research", False),
    ("gpu-work-through-team-queue", "labelled with the team's queue", pod(), "research", True),
    ("gpu-work-through-team-queue", "the namespace's default queue",
     pod(labels={"kueue.x-k8s.io/queue-name": "default"}), "research", True),
    ("gpu-work-through-team-queue", "another team's queue", pod(labels={"kueue.x-k8s.io/queue-name": "web"}),
     "research", False),
    ("gpu-work-through-team-queue", "bare GPU pod without a queue", pod(labels={}), "research", False),
    ("gpu-work-through-team-queue", "GPU job without a queue", job(pod(labels={})), "research", False),
    ("gpu-work-through-team-queue", "GPU job with the team's queue", job(pod()), "research", True),
    ("gpu-work-through-team-queue", "pod created by a job", owned(pod()), "research", True),
    ("gpu-work-through-team-queue", "job created by a JobSet",
     owned(job(pod()), ("jobset.x-k8s.io/v1alpha2", "JobSet")), "research", True),
    ("gpu-work-through-team-queue", "CPU pod without a queue", CPU_POD, "research", True),
    ("team-pools-only", "own dedicated pool", pod(nodeSelector={"mlplatform.io/pool": "a100"}), "research", True),
    ("team-pools-only", "a shared pool", pod(nodeSelector={"mlplatform.io/pool": "t4"}), "web", True),
    ("team-pools-only", "another team's dedicated pool", pod(nodeSelector={"mlplatform.io/pool": "a100"}), "web",
     False),
    ("team-pools-only", "the system pool", pod(gpus=None, labels={}, nodeSelector={"mlplatform.io/pool": "system"}),
     "research", False),
    ("team-pools-only", "the system pool by affinity", pod(affinity=affinity("mlplatform.io/pool", "t4", "system")),
     "research", False),
    ("team-pools-only", "another team's pool by affinity, in a job", job(pod(affinity=affinity(
        "mlplatform.io/pool", "a100"))), "web", False),
    ("team-pools-only", "a shared pool by affinity", pod(affinity=affinity("mlplatform.io/pool", "t4")), "web", True),
    ("team-pools-only", "a node by name", pod(nodeName="ip-10-0-0-1"), "research", False),
    ("gpu-request-fits-a-node", "4 GPUs, as a t4 node has", pod(gpus=4), "research", True),
    ("gpu-request-fits-a-node", "5 GPUs, more than any node", pod(gpus=5), "research", False),
    ("gpu-request-fits-a-node", "a GPU resource no pool has", MIG_POD, "research", False),
    ("team-priority-classes", "an ML priority class", pod(priorityClassName="ml-training"), "research", True),
    ("team-priority-classes", "no priority class", pod(), "research", True),
    ("team-priority-classes", "the platform's priority class", job(pod(priorityClassName="system-node-critical")),
     "research", False),
]


def _case_id(case: tuple[str, str, dict[str, Any], str, bool]) -> str:
    return f"{case[0]}: {case[1]}"


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_policy_table(policies, case):
    name, _, obj, team, admitted = case
    # In the team's namespace, and (unless the case is about the queue) labelled with that team's queue.
    labels = {key: team if value == "research" else value for key, value in obj["metadata"]["labels"].items()}
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": team, "labels": labels}}
    decision = admit(policies[name], obj, namespace(team))
    assert decision.allowed is admitted, decision.failures
    # Every other policy admits it: each case breaks at most the rule it is about.
    others = {other: admit(policy, obj, namespace(team)).failures for other, policy in policies.items()
              if other != name}
    assert {other: f for other, f in others.items() if f} == {}


def test_every_policy_has_passing_and_failing_cases(policies):
    assert {case[0] for case in TABLE if case[4]} == set(policies) == {case[0] for case in TABLE if not case[4]}


def test_the_table_is_made_of_valid_kubernetes_objects():
    objects = [case[2] for case in TABLE] + [namespace("research")]
    report = check_manifests(objects)
    assert report.errors == [] and report.unchecked == []


def test_messages_say_what_to_change(policies):
    decision = admit(policies["gpu-work-through-team-queue"], pod(labels={"kueue.x-k8s.io/queue-name": "web"}),
                     namespace("research"))
    assert decision.failures == ("GPU work in a team namespace goes through the team's Kueue queue: label it "
                                 "kueue.x-k8s.io/queue-name: research (or leave the label off for the namespace's "
                                 "default queue), or run it as a Job whose pods the queue admits.",)
    (fits,) = admit(policies["gpu-request-fits-a-node"], pod(gpus=5), namespace("research")).failures
    assert "largest nodes: nvidia.com/gpu 4 on pool t4, nvidia.com/gpu 2 on pool a100" in fits
    (pools,) = admit(policies["team-pools-only"], pod(nodeSelector={"mlplatform.io/pool": "a100"}),
                     namespace("web")).failures
    assert "dedicated: a100 to research" in pools


def test_policies_match_pod_and_job_creation_and_bind_to_team_namespaces(synthesis, policies):
    for policy in policies.values():
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        assert [(r["apiGroups"], r["resources"], r["operations"]) for r in rules] == [
            ([""], ["pods"], ["CREATE"]), (["batch"], ["jobs"], ["CREATE"])]
        assert policy["spec"]["failurePolicy"] == "Fail"
    bindings = {r.inputs["spec"]["policyName"]: r.inputs["spec"] for r in synthesis.of_type(
        "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding")}
    assert {f"mlplatform-{name}" for name in policies} <= set(bindings)
    for binding in bindings.values():
        assert binding["matchResources"] == {"namespaceSelector": {"matchExpressions": [
            {"key": "mlplatform.io/team", "operator": "Exists"}]}}


def _actions(synthesis: Synthesis) -> set[tuple[str, ...]]:
    return {tuple(r.inputs["spec"]["validationActions"]) for r in synthesis.of_type(
        "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding")}


def test_warn_and_audit_on_dev_like_stacks_deny_in_prod_configurable(synthesis):
    assert _actions(synthesis) == {("Warn", "Audit")}
    assert {stack: stack_config(stack).admission_enforcement for stack in PLATFORM_STACKS} == {
        "local": "warn", "dev": "warn", "gcp-dev": "warn", "prod": "deny"}
    assert _actions(synth_with(cluster={"cloud": "kind"}, admission={"enforcement": "deny"})) == {("Deny", "Audit")}


def test_team_editors_may_declare_monitors_and_prometheus_finds_them(synthesis):
    roles = {r.inputs["metadata"]["name"]: r.inputs
             for r in synthesis.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")}
    edit = roles["mlplatform-monitors-edit"]
    assert edit["metadata"]["labels"] == {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}
    (rule,) = edit["rules"]
    assert rule["apiGroups"] == ["monitoring.coreos.com"] and rule["resources"] == ["servicemonitors", "podmonitors"]
    assert {"create", "update", "delete"} <= set(rule["verbs"])
    assert roles["mlplatform-monitors-view"]["metadata"]["labels"] == {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}
    # Prometheus selects monitors of every namespace, not only its own release's.
    stack = next(r for r in synthesis.releases() if r.inputs["name"] == "kube-prometheus-stack")
    prometheus = stack.inputs["values"]["prometheus"]["prometheusSpec"]
    assert prometheus["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert prometheus["podMonitorSelectorNilUsesHelmValues"] is False
    assert not prometheus.get("serviceMonitorNamespaceSelector") and not prometheus.get("podMonitorNamespaceSelector")


def test_every_child_is_parented_named_after_the_component_and_uses_the_clusters_provider(synthesis):
    (component,) = synthesis.of_type("mlplatform:admission:TeamAdmission")
    children = synthesis.children_of(component.urn)
    # a policy and its binding for each of six policies, and two aggregated ClusterRoles
    assert len(children) == 14
    providers = {r.urn for r in synthesis.of_type("pulumi:providers:kubernetes")}
    assert all(child.name.startswith("admission-") and child.provider in providers for child in children)
