"""The admission policies of team namespaces, evaluated offline with a CEL library (cel-python) against pods and
jobs that must pass or fail; the objects themselves pass the Kubernetes schema, so the table is realistic."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from synth.engine import Synthesis
from synth.schema import UPSTREAM_DIR, check_manifests, schemas_of
from components.admission import KUEUE_USER, NVIDIA_DEVICE_ENV
from versions import JOBSET
from tests.cel import admit
from tests.conftest import PLATFORM_STACKS, stack_config, synth_with

# Who creates what a controller owns (kube-controller-manager runs with --use-service-account-credentials on
# EKS, GKE and kubeadm clusters), and the JobSet controller's ServiceAccount.
JOB_CONTROLLER = "system:serviceaccount:kube-system:job-controller"
JOBSET_CONTROLLER = "system:serviceaccount:jobset-system:jobset-controller-manager"
POOLS = [{"name": "t4", "gpusPerNode": 4}, {"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 2}]
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
# The JobSet CRD of the pinned chart.
JOBSET_CRD = UPSTREAM_DIR / "charts" / f"jobset-{JOBSET.version}" / "crds" / "jobset.x-k8s.io_jobsets.yaml"


def _team(name: str, quota_gpus: int, **queue: Any) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "8", "memory": "32Gi"}, "gpus": quota_gpus}, "queue": queue,
            "groups": {"edit": [f"ml-{name}"], "view": ["ml-readers"]}}


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


def deployment(of: dict[str, Any], kind: str = "Deployment") -> dict[str, Any]:
    """The pod's spec as a Deployment's (or StatefulSet's) template, carrying the pod's labels."""
    labels = {"app": "serve"}
    spec: dict[str, Any] = {"replicas": 2, "selector": {"matchLabels": labels},
                            "template": {"metadata": {"labels": labels}, "spec": of["spec"]}}
    if kind == "StatefulSet":
        spec["serviceName"] = "serve"
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {key: value for key, value in of["metadata"].items() if key != "name"} | {"name": "serve"},
            "spec": spec}


def owned(of: dict[str, Any], owner: tuple[str, str] = ("batch/v1", "Job")) -> dict[str, Any]:
    """The object as its owner's controller creates it (by default a Job's pod), without the queue label."""
    created = copy.deepcopy(of)
    created["metadata"]["labels"] = {"batch.kubernetes.io/job-name": "train"}
    created["metadata"]["ownerReferences"] = [{"apiVersion": owner[0], "kind": owner[1], "name": "train",
                                               "uid": "7c7a2b7e-0000-4000-8000-000000000001", "controller": True}]
    return created


def affinity(key: str, *values: str, operator: str = "In") -> dict[str, Any]:
    expression: dict[str, Any] = {"key": key, "operator": operator}
    if operator not in ("Exists", "DoesNotExist"):
        expression["values"] = list(values)
    return terms({"matchExpressions": [expression]})


def terms(*node_selector_terms: dict[str, Any]) -> dict[str, Any]:
    """A required node affinity of these terms (any one of which a node must match)."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": list(node_selector_terms)}}}


CPU_POD = pod(gpus=None, labels={})
MIG_POD = pod(gpus=None, tolerations=[GPU_TOLERATION])
MIG_POD["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] = 1


def gated(of: dict[str, Any]) -> dict[str, Any]:
    """The pod as Kueue leaves it until its queue admits it: behind Kueue's scheduling gate."""
    return changed(of, schedulingGates=[{"name": "kueue.x-k8s.io/admission"}])


def changed(of: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A copy with pod-spec fields set (a Job's in its template)."""
    copied = copy.deepcopy(of)
    (copied["spec"]["template"]["spec"] if copied["kind"] == "Job" else copied["spec"]).update(spec)
    return copied


def with_env(of: dict[str, Any], name: str, value: str = "all") -> dict[str, Any]:
    copied = copy.deepcopy(of)
    target = copied["spec"]["template"]["spec"] if copied["kind"] == "Job" else copied["spec"]
    target["containers"][0]["env"] = [{"name": "OMP_NUM_THREADS", "value": "4"}, {"name": name, "value": value}]
    return copied


DEBUG_CONTAINER = {"name": "debug", "image": "busybox:1.37",
                   "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}
SYSTEM_POOL = {"mlplatform.io/pool": "system"}
# The policies that judge something other than workloads: monitors, NetworkPolicies, ConfigMaps and Secrets.
NOT_WORKLOAD = ("team-monitors", "team-monitor-labels", "team-network-policies-stay", "no-gpu-device-env-sources")
# (policy, case, object, team namespace, admitted?[, how it is requested: admit()'s user, old, sub_resource])
TABLE: list[tuple[Any, ...]] = [
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
    ("gpu-nodes-for-gpu-work", "zero GPUs tolerating the GPU taint", pod(gpus=0), "research", False),
    ("gpu-nodes-for-gpu-work", "a CPU pod given the GPU toleration by update",
     changed(gated(CPU_POD), tolerations=[GPU_TOLERATION]), "research", False, {"old": gated(CPU_POD)}),
    ("gpu-nodes-for-gpu-work", "a suspended CPU job given every toleration by update",
     changed(job(CPU_POD), tolerations=[{"operator": "Exists"}]), "research", False, {"old": job(CPU_POD)}),
    ("gpu-nodes-for-gpu-work", "a CPU deployment tolerating the GPU taint",
     deployment(pod(gpus=None, tolerations=[GPU_TOLERATION])), "research", False),
    ("gpu-nodes-for-gpu-work", "a GPU deployment", deployment(pod()), "research", True),
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
    ("gpu-work-through-team-queue", "pod created by a job", owned(pod()), "research", True,
     {"user": JOB_CONTROLLER}),
    ("gpu-work-through-team-queue", "pod created by the controller manager's own credentials", owned(pod()),
     "research", True, {"user": "system:kube-controller-manager"}),
    ("gpu-work-through-team-queue", "job created by a JobSet",
     owned(job(pod()), ("jobset.x-k8s.io/v1alpha2", "JobSet")), "research", True, {"user": JOBSET_CONTROLLER}),
    ("gpu-work-through-team-queue", "a member's bare GPU pod naming a Job as its controller", owned(pod()),
     "research", False),
    ("gpu-work-through-team-queue", "a job naming a JobSet as its controller, from the team's ServiceAccount",
     owned(job(pod()), ("jobset.x-k8s.io/v1alpha2", "JobSet")), "research", False,
     {"user": "system:serviceaccount:research:default"}),
    ("gpu-work-through-team-queue", "a job's pod given another toleration by update, keeping its owners",
     changed(owned(pod()), tolerations=[GPU_TOLERATION, {"key": "spot", "operator": "Exists"}]), "research", True,
     {"old": owned(pod())}),
    ("gpu-work-through-team-queue", "a bare GPU pod given a controller owner by update",
     changed(owned(gated(pod())), tolerations=[GPU_TOLERATION, {"key": "spot", "operator": "Exists"}]), "research",
     False, {"old": gated(pod(labels={}))}),
    ("gpu-work-through-team-queue", "a member removing Kueue's gate", changed(gated(pod()), schedulingGates=[]),
     "research", False, {"old": gated(pod())}),
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
    # Issue 24: the system pool is tainted for the platform's controllers; a team pod may not tolerate that.
    ("team-pools-only", "a CPU pod tolerating the system pool's taint", pod(gpus=None, labels={}, tolerations=[
        {"key": "CriticalAddonsOnly", "operator": "Exists"}]), "research", False),
    ("team-pools-only", "a GPU job tolerating the system pool's taint too", job(pod(tolerations=[
        GPU_TOLERATION, {"key": "CriticalAddonsOnly", "operator": "Equal", "value": "true", "effect": "NoSchedule"}])),
     "web", False),
    # Operators other than In on the pool label allow what they do not list (issue 24): NotIn a100 is the system
    # pool and every other team's, Exists every pool, DoesNotExist the system nodes of a cluster that labels
    # only its GPU pools.
    ("team-pools-only", "every pool but a shared one, by NotIn", pod(affinity=affinity(
        "mlplatform.io/pool", "t4", operator="NotIn")), "web", False),
    ("team-pools-only", "any pool, by Exists, in a job", job(pod(affinity=affinity(
        "mlplatform.io/pool", operator="Exists"))), "web", False),
    ("team-pools-only", "nodes without a pool, by DoesNotExist",
     pod(gpus=None, labels={}, affinity=affinity("mlplatform.io/pool", operator="DoesNotExist")), "research", False),
    ("team-pools-only", "the system pool by a second term", pod(affinity=terms(
        {"matchExpressions": [{"key": "mlplatform.io/pool", "operator": "In", "values": ["t4"]}]},
        {"matchExpressions": [{"key": "mlplatform.io/pool", "operator": "NotIn", "values": ["t4", "a100"]}]})),
     "web", False),
    ("team-pools-only", "a node by name, by matchFields", pod(gpus=None, labels={}, affinity=terms(
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["ip-10-0-0-1"]}]})), "research", False),
    ("team-pools-only", "a GPU model by affinity, the pool left to Kueue", pod(affinity=affinity(
        "nvidia.com/gpu.product", "Tesla-T4")), "web", True),
    ("team-pools-only", "an own pool and a GPU model in one term, a shared pool in another", pod(affinity=terms(
        {"matchExpressions": [{"key": "mlplatform.io/pool", "operator": "In", "values": ["a100"]},
                              {"key": "nvidia.com/gpu.product", "operator": "NotIn", "values": ["A100-PCIE-40GB"]}]},
        {"matchExpressions": [{"key": "mlplatform.io/pool", "operator": "In", "values": ["t4"]}]})),
     "research", True),
    ("team-pools-only", "a statefulset on the system pool", deployment(pod(gpus=None, labels={},
                                                                          nodeSelector=SYSTEM_POOL), "StatefulSet"),
     "research", False),
    ("team-pools-only", "a gated pod moved to the system pool by update",
     changed(gated(CPU_POD), nodeSelector=SYSTEM_POOL), "research", False, {"old": gated(CPU_POD)}),
    ("team-pools-only", "a suspended job moved to another team's pool by update",
     changed(job(pod()), affinity=affinity("mlplatform.io/pool", "a100")), "web", False, {"old": job(pod())}),
    ("team-pools-only", "a gated pod given its own pool by update",
     changed(gated(pod()), nodeSelector={"mlplatform.io/pool": "a100"}), "research", True, {"old": gated(pod())}),
    ("gpu-request-fits-a-node", "4 GPUs, as a t4 node has", pod(gpus=4), "research", True),
    ("gpu-request-fits-a-node", "5 GPUs, more than any node", pod(gpus=5), "research", False),
    ("gpu-request-fits-a-node", "a GPU resource no pool has", MIG_POD, "research", False),
    ("no-gpu-device-env", "ordinary environment variables", with_env(pod(), "CUDA_VISIBLE_DEVICES", "0"),
     "research", True),
    # An EFA pool's NCCL settings (the nccl-<pool> ConfigMap), set inline or taken with envFrom: not device variables.
    ("no-gpu-device-env", "libfabric's GPUDirect RDMA switch", with_env(pod(), "FI_EFA_USE_DEVICE_RDMA", "1"),
     "research", True),
    ("no-gpu-device-env", "an EFA pool's NCCL settings by envFrom",
     changed(pod(), containers=[{"name": "main", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                                 "resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": 1}},
                                 "envFrom": [{"configMapRef": {"name": "nccl-h100"}}]}]), "research", True),
    # Issue 24: envFrom with a prefix that completes a device variable from an innocent key.
    ("no-gpu-device-env", "envFrom prefixed NVIDIA_", changed(CPU_POD, containers=[
        {"name": "main", "image": "busybox:1.37", "envFrom": [{"prefix": "NVIDIA_", "configMapRef": {"name": "gpus"}}]}]),
     "research", False),
    ("no-gpu-device-env", "envFrom prefixed N, in a job", job(changed(pod(), containers=[
        {"name": "main", "image": "busybox:1.37", "resources": {"limits": {"nvidia.com/gpu": 1}},
         "envFrom": [{"prefix": "N", "secretRef": {"name": "gpus"}}]}])), "research", False),
    ("no-gpu-device-env", "envFrom with a prefix of its own", changed(CPU_POD, containers=[
        {"name": "main", "image": "busybox:1.37", "envFrom": [{"prefix": "APP_", "configMapRef": {"name": "app"}}]}]),
     "research", True),
    ("no-gpu-device-env", "a CPU pod asking for every GPU by environment", with_env(CPU_POD, "NVIDIA_VISIBLE_DEVICES"),
     "research", False),
    ("no-gpu-device-env", "a job asking for driver capabilities by environment",
     with_env(job(pod()), "NVIDIA_DRIVER_CAPABILITIES", "compute,utility,video"), "research", False),
    ("no-gpu-device-env", "a debug container asking for every GPU",
     changed(CPU_POD, ephemeralContainers=[DEBUG_CONTAINER]), "research", False,
     {"old": CPU_POD, "sub_resource": "ephemeralcontainers"}),
    # A canonical quantity (1k GPUs), on which int(string(q)) erred (issue 24): compared by the quantity library.
    ("gpu-request-fits-a-node", "a thousand GPUs written 1k", pod(gpus=None, tolerations=[GPU_TOLERATION], containers=[
        {"name": "main", "image": "nvcr.io/nvidia/pytorch:25.01-py3", "resources": {"limits": {
            "cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1k"}}}]), "research", False),
    ("team-priority-classes", "an ML priority class", pod(priorityClassName="ml-training"), "research", True),
    ("team-priority-classes", "no priority class", pod(), "research", True),
    ("team-priority-classes", "the platform's priority class", job(pod(priorityClassName="system-node-critical")),
     "research", False),
]


def in_jobset(*of: dict[str, Any]) -> dict[str, Any]:
    """A JobSet of one replicated Job per pod (or Job) given, each with that pod spec as its template, carrying
    the labels of them all."""
    specs = [o["spec"]["template"]["spec"] if o["kind"] == "Job" else o["spec"] for o in of]
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "train", "namespace": "research", "labels": {k: v for o in of for k, v in o["metadata"]["labels"].items()}},
            "spec": {"replicatedJobs": [{"name": f"workers-{index}", "replicas": 1, "template": {"spec": {
                "template": {"spec": copy.deepcopy(spec) | {"restartPolicy": "Never"}}}}}
                for index, spec in enumerate(specs)]}}


def changed_template(of: dict[str, Any], index: int, **spec: Any) -> dict[str, Any]:
    """A copy of the JobSet with pod-spec fields set in one replicated Job's template."""
    copied = copy.deepcopy(of)
    copied["spec"]["replicatedJobs"][index]["template"]["spec"]["template"]["spec"].update(spec)
    return copied


# Every case of a Pod or Job created by a team member, as the second template of a JobSet whose first is a
# compliant CPU pod: JobSets are judged over every template, with the same outcome (issue 24).
TABLE += [(name, f"{case}, as a JobSet's second template", in_jobset(CPU_POD, obj), team, admitted)
          for name, case, obj, team, admitted, *how in list(TABLE) if not how and obj["kind"] in ("Pod", "Job")]
TABLE += [
    ("gpu-work-through-team-queue", "a GPU JobSet of the team's queue", in_jobset(pod(), pod()), "research", True),
    ("gpu-nodes-for-gpu-work", "a suspended JobSet's CPU template given every toleration by update",
     changed_template(in_jobset(pod(), CPU_POD), 1, tolerations=[{"operator": "Exists"}]), "research", False,
     {"old": in_jobset(pod(), CPU_POD)}),
    ("team-pools-only", "a suspended JobSet's second template moved to the system pool by update",
     changed_template(in_jobset(pod(), CPU_POD), 1, nodeSelector=SYSTEM_POOL), "research", False,
     {"old": in_jobset(pod(), CPU_POD)}),
    ("team-pools-only", "a suspended JobSet's template given its own pool by update",
     changed_template(in_jobset(pod(), pod()), 1, nodeSelector={"mlplatform.io/pool": "a100"}), "research", True,
     {"old": in_jobset(pod(), pod())}),
]


def matches(policy: dict[str, Any], obj: dict[str, Any]) -> bool:
    """Whether the policy's resource rules select the object's kind (its plural, as these kinds spell it)."""
    group = obj["apiVersion"].rpartition("/")[0]
    return any(group in rule["apiGroups"] and f"{obj['kind'].lower()}s" in rule["resources"]
               for rule in policy["spec"]["matchConstraints"]["resourceRules"])


def judging(policies: dict[str, dict[str, Any]], rule: str, obj: dict[str, Any]) -> str:
    """The name of the policy that judges the object by this rule: the rule's own, or its JobSet form."""
    (name,) = [n for n in (rule, f"{rule}-jobsets") if n in policies and matches(policies[n], obj)]
    return name


def _case_id(case: tuple[Any, ...]) -> str:
    return f"{case[0]}: {case[1]}"


def _in_team(obj: dict[str, Any], team: str) -> dict[str, Any]:
    """In the team's namespace, and (unless the case is about the queue) labelled with that team's queue."""
    labels = {key: team if value == "research" else value for key, value in obj["metadata"]["labels"].items()}
    return {**obj, "metadata": {**obj["metadata"], "namespace": team, "labels": labels}}


@pytest.mark.parametrize("case", TABLE, ids=_case_id)
def test_policy_table(policies, case):
    name, _, obj, team, admitted, *how = case
    request = dict(how[0]) if how else {}
    if "old" in request:
        request["old"] = _in_team(request["old"], team)
    obj = _in_team(obj, team)
    name = judging(policies, name, obj)
    decision = admit(policies[name], obj, namespace(team), **request)
    assert decision.judged and decision.allowed is admitted, decision.failures
    # Every other policy of its kind admits it: each case breaks at most the rule it is about.
    others = {other: admit(policy, obj, namespace(team), **request).failures for other, policy in policies.items()
              if other not in (name, *NOT_WORKLOAD) and matches(policy, obj)}
    assert {other: f for other, f in others.items() if f} == {}


NOT_JUDGED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    # Kueue ungating a pod its queue admitted and injecting its flavor's node selector, whatever the pod asks.
    ("Kueue admitting a gated pod", changed(pod(), nodeSelector={"mlplatform.io/pool": "a100"}),
     {"old": gated(pod()), "user": KUEUE_USER}),
    ("Kueue unsuspending a job onto its flavor", changed(job(pod()), nodeSelector=SYSTEM_POOL),
     {"old": job(pod()), "user": KUEUE_USER}),
    ("a label added to a running pod", pod(labels={"kueue.x-k8s.io/queue-name": "research", "stage": "eval"}),
     {"old": pod()}),
    ("Kueue admitting a suspended JobSet onto its flavor",
     changed_template(in_jobset(CPU_POD, pod()), 1, nodeSelector=SYSTEM_POOL),
     {"old": in_jobset(CPU_POD, pod()), "user": KUEUE_USER}),
    ("a label added to a JobSet", in_jobset(CPU_POD, pod(labels={"kueue.x-k8s.io/queue-name": "web", "stage": "eval"})),
     {"old": in_jobset(CPU_POD, pod(labels={"kueue.x-k8s.io/queue-name": "web"}))}),
]


@pytest.mark.parametrize("obj,request_", [(o, r) for _, o, r in NOT_JUDGED], ids=[i for i, _, _ in NOT_JUDGED])
def test_updates_that_move_nothing_and_kueues_own_are_not_judged(policies, obj, request_):
    # Even updates that would break a rule as a creation: Kueue is never held up, and a pod admitted once is
    # not judged again for an unrelated edit.
    for name, policy in policies.items():
        if name not in NOT_WORKLOAD and matches(policy, obj):
            assert admit(policy, obj, namespace("web"), **request_).judged is False


def test_device_environment_variables_are_the_toolkits():
    # The names NVIDIA's container toolkit reads devices and driver capabilities from (internal/config/image).
    assert set(NVIDIA_DEVICE_ENV) >= {"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}


def test_every_policy_has_passing_and_failing_cases(policies):
    # The JobSet form of each workload policy included: each has JobSets it admits and JobSets it refuses.
    workload = set(policies) - set(NOT_WORKLOAD)
    assert {f"{name}-jobsets" for name in workload if not name.endswith("-jobsets")} <= workload
    judged = [(judging(policies, case[0], case[2]), case[4]) for case in TABLE]
    assert {name for name, admitted in judged if admitted} == workload == {
        name for name, admitted in judged if not admitted}


def test_the_table_is_made_of_valid_kubernetes_objects(upstream):
    # JobSets against the JobSet CRD the platform installs (the chart's, at its pin).
    objects = [case[2] for case in TABLE] + [namespace("research")]
    report = check_manifests(objects, custom=schemas_of([yaml.safe_load(JOBSET_CRD.read_text())]))
    assert report.errors == [] and report.unchecked == []


def test_messages_say_what_to_change(policies):
    decision = admit(policies["gpu-work-through-team-queue"], pod(labels={"kueue.x-k8s.io/queue-name": "web"}),
                     namespace("research"))
    assert decision.failures == ("GPU work in a team namespace goes through the team's Kueue queue: label it "
                                 "kueue.x-k8s.io/queue-name: research (or leave the label off for the namespace's "
                                 "default queue), or run it as a Job whose pods the queue admits. An owner reference "
                                 "counts only on what a controller creates.",)
    (fits,) = admit(policies["gpu-request-fits-a-node"], pod(gpus=5), namespace("research")).failures
    assert "largest nodes: nvidia.com/gpu 4 on pool t4, nvidia.com/gpu 2 on pool a100" in fits
    (pools,) = admit(policies["team-pools-only"], pod(nodeSelector={"mlplatform.io/pool": "a100"}),
                     namespace("web")).failures
    assert "dedicated: a100 to research" in pools


def test_policies_match_pod_and_job_creation_and_updates_and_bind_to_team_namespaces(synthesis, policies):
    for name, policy in policies.items():
        if name in NOT_WORKLOAD:
            continue
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        # A JobSet form judges the JobSet version the pinned JobSet serves, and nothing else.
        assert [(r["apiGroups"], r["apiVersions"], r["resources"], r["operations"]) for r in rules] == ([
            (["jobset.x-k8s.io"], ["v1alpha2"], ["jobsets"], ["CREATE", "UPDATE"])] if name.endswith("-jobsets") else [
            ([""], ["v1"], ["pods", "pods/ephemeralcontainers"], ["CREATE", "UPDATE"]),
            (["batch"], ["v1"], ["jobs"], ["CREATE", "UPDATE"]),
            (["apps"], ["v1"], ["deployments", "statefulsets"], ["CREATE", "UPDATE"])])
        assert policy["spec"]["failurePolicy"] == "Fail"
    bindings = {r.inputs["spec"]["policyName"]: r.inputs["spec"] for r in synthesis.of_type(
        "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding")}
    assert {f"mlplatform-{name}" for name in policies} <= set(bindings)
    for name in policies:
        assert bindings[f"mlplatform-{name}"]["matchResources"] == {"namespaceSelector": {"matchExpressions": [
            {"key": "mlplatform.io/team", "operator": "Exists"}]}}


# Requests that can never run: refused whatever the enforcement, since a warning would let them hold queue quota;
# and team monitors whose series would pass for the platform's, which a warning would let the GPU and cost rules
# count; and Pod Security baseline where a namespace's labels do not enforce it, with exec into a GPUDirect daemon
# (tests/test_pod_security.py).
ALWAYS_DENIED = {"gpu-request-fits-a-node", "gpu-request-fits-a-node-jobsets", "team-monitor-labels",
                 "team-pod-security", "team-gpudirect-daemon-connect"}


def _actions(synthesis: Synthesis) -> dict[str, tuple[str, ...]]:
    return {r.inputs["spec"]["policyName"].removeprefix("mlplatform-"): tuple(r.inputs["spec"]["validationActions"])
            for r in synthesis.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding")}


def test_warn_and_audit_on_dev_like_stacks_deny_in_prod_configurable(synthesis):
    actions = _actions(synthesis)
    assert {name: a for name, a in actions.items() if name not in ALWAYS_DENIED} == {
        name: ("Warn", "Audit") for name in set(actions) - ALWAYS_DENIED}
    assert {stack: stack_config(stack).admission_enforcement for stack in PLATFORM_STACKS} == {
        "local": "warn", "dev": "warn", "gcp-dev": "warn", "prod": "deny"}
    assert set(_actions(synth_with(cluster={"cloud": "kind"}, admission={"enforcement": "deny"})).values()) == {
        ("Deny", "Audit")}


def test_what_can_never_run_is_refused_even_where_policies_only_warn(synthesis):
    # Issue 24: a container of two time-sliced shares was only warned about on dev-like stacks; Kueue then
    # admitted it onto the shared pool, whose device plugin fails it.
    assert {name: a for name, a in _actions(synthesis).items() if name in ALWAYS_DENIED} == {
        name: ("Deny", "Audit") for name in ALWAYS_DENIED}


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
    # a policy and its binding for each of seven workload policies and their JobSet forms, the two monitor
    # policies, the NetworkPolicy one and the ConfigMap and Secret one, and two aggregated ClusterRoles
    assert len(children) == 38
    providers = {r.urn for r in synthesis.of_type("pulumi:providers:kubernetes")}
    assert all(child.name.startswith("admission-") and child.provider in providers for child in children)


# ---- team monitors ---------------------------------------------------------------------------------------------

def service_monitor(**spec: Any) -> dict[str, Any]:
    """A compliant ServiceMonitor of research's own service, with the limits a team monitor must state."""
    endpoint = spec.pop("endpoint", {})
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "trainer", "namespace": "research"},
            "spec": {"selector": {"matchLabels": {"app": "trainer"}}, "sampleLimit": 10_000, "targetLimit": 20,
                     "endpoints": [{"port": "metrics", "interval": "30s", **endpoint}]} | spec}


def pod_monitor(**spec: Any) -> dict[str, Any]:
    endpoint = spec.pop("endpoint", {})
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": "trainer", "namespace": "research"},
            "spec": {"selector": {"matchLabels": {"app": "trainer"}}, "sampleLimit": 10_000, "targetLimit": 20,
                     "podMetricsEndpoints": [{"port": "metrics", **endpoint}]} | spec}


def relabel(target: str, **rule: Any) -> dict[str, Any]:
    return {"relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_team"], "targetLabel": target, **rule}]}


# (case, monitor, admitted?)
MONITORS: list[tuple[str, dict[str, Any], bool]] = [
    ("a service monitor of its own service", service_monitor(), True),
    ("a pod monitor of its own pods", pod_monitor(), True),
    ("its own namespace by name", service_monitor(namespaceSelector={"matchNames": ["research"]}), True),
    ("a label of its own by relabeling", service_monitor(endpoint=relabel("team")), True),
    ("credentials from a Secret of its namespace",
     service_monitor(endpoint={"bearerTokenSecret": {"name": "scrape-token", "key": "token"},
                               "tlsConfig": {"ca": {"secret": {"name": "scrape-ca", "key": "ca.crt"}}}}), True),
    ("Prometheus's own token file",
     service_monitor(endpoint={"bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}), False),
    ("Prometheus's certificate files", service_monitor(endpoint={"tlsConfig": {
        "certFile": "/etc/prometheus/secrets/etcd/client.crt", "keyFile": "/etc/prometheus/secrets/etcd/client.key"}}),
     False),
    ("every namespace", service_monitor(namespaceSelector={"any": True}), False),
    ("another team's namespace", pod_monitor(namespaceSelector={"matchNames": ["web"]}), False),
    ("honorLabels", pod_monitor(endpoint={"honorLabels": True}), False),
    ("honorLabels off", pod_monitor(endpoint={"honorLabels": False}), True),
    ("the node label by relabeling", service_monitor(endpoint=relabel("node")), False),
    ("the job label by relabeling", service_monitor(endpoint=relabel("job", replacement="kube-state-metrics")), False),
    ("the job label by metric relabeling", pod_monitor(endpoint={"metricRelabelings": [
        {"sourceLabels": ["exported_job"], "targetLabel": "job"}]}), False),
    # The label that tells the platform's kube-state-metrics and GPU scrapes from every other.
    ("the platform's source label by relabeling",
     service_monitor(endpoint=relabel("mlplatform_source", replacement="platform")), False),
    ("the platform's source label by metric relabeling", service_monitor(endpoint={"metricRelabelings": [
        {"sourceLabels": ["exported_mlplatform_source"], "targetLabel": "mlplatform_source"}]}), False),
    ("the platform's source label copied from the Service", service_monitor(targetLabels=["mlplatform_source"]),
     False),
    ("the job label copied from the Service", service_monitor(targetLabels=["job"]), False),
    ("a scrape class of its choosing", pod_monitor(scrapeClass="platform"), False),
    # A Service label's value as the job: no more than naming the Service so (no rule trusts job alone).
    ("its job from a Service label", service_monitor(jobLabel="app.kubernetes.io/name"), True),
    ("labels of its own copied from its pods", pod_monitor(podTargetLabels=["team", "model"]), True),
    ("GPU labels of its own", service_monitor(endpoint=relabel("gpu")), True),
    ("the scrape address by relabeling", pod_monitor(endpoint=relabel("__address__", replacement="10.0.0.1:10250")),
     False),
    ("a GPU metric's name by metric relabeling", service_monitor(endpoint={"metricRelabelings": [
        {"sourceLabels": ["__name__"], "regex": "my_util", "targetLabel": "__name__",
         "replacement": "DCGM_FI_DEV_GPU_UTIL"}]}), False),
    ("a templated target label", service_monitor(endpoint=relabel("${1}", regex="(.*)")), False),
    ("labelmap", pod_monitor(endpoint={"relabelings": [{"action": "labelmap",
                                                         "regex": "__meta_kubernetes_pod_label_(.+)"}]}), False),
    ("the pod label copied from the pod", pod_monitor(podTargetLabels=["pod"]), False),
    ("no sample limit", {**service_monitor(), "spec": {k: v for k, v in service_monitor()["spec"].items()
                                                       if k != "sampleLimit"}}, False),
    ("a sample limit above the platform's", service_monitor(sampleLimit=1_000_000), False),
    ("no target limit", {**pod_monitor(), "spec": {k: v for k, v in pod_monitor()["spec"].items()
                                                   if k != "targetLimit"}}, False),
]


@pytest.mark.parametrize("case", MONITORS, ids=[c[0] for c in MONITORS])
def test_team_monitor_table(policies, case):
    _, monitor, admitted = case
    decisions = [admit(policies[name], monitor, namespace("research"))
                 for name in ("team-monitors", "team-monitor-labels")]
    failures = [failure for decision in decisions for failure in decision.failures]
    assert (not failures) is admitted, failures
    assert len(failures) <= 1  # each case breaks at most the rule it is about


def test_the_monitor_table_is_made_of_valid_monitors():
    report = check_manifests([case[1] for case in MONITORS])
    assert report.errors == []


@pytest.mark.parametrize("name", ["team-monitors", "team-monitor-labels"])
def test_the_monitor_policies_judge_team_monitors_on_create_and_update(policies, name):
    rules = policies[name]["spec"]["matchConstraints"]["resourceRules"]
    assert [(r["apiGroups"], r["resources"], r["operations"]) for r in rules] == [
        (["monitoring.coreos.com"], ["servicemonitors", "podmonitors"], ["CREATE", "UPDATE"])]


def test_a_monitor_forging_the_platforms_series_is_refused_even_where_policies_only_warn(synthesis, policies):
    # With the monitor checks under `enforcement`, a dev-like stack only warned about honorLabels or a
    # relabeling to job: the monitor was stored, and its exporter's series passed for the GPU scrape's.
    assert _actions(synthesis)["team-monitor-labels"] == ("Deny", "Audit")
    messages = {check["message"] for check in policies["team-monitor-labels"]["spec"]["validations"]}
    for field in ("honorLabels", "relabelings and metricRelabelings", "targetLabels and podTargetLabels",
                  "spec.scrapeClass"):
        assert any(field in message for message in messages), field


def test_prometheus_stamps_team_series_with_their_namespace_but_not_the_platforms(synthesis):
    stack = next(r for r in synthesis.releases() if r.inputs["name"] == "kube-prometheus-stack")
    prometheus = stack.inputs["values"]["prometheus"]["prometheusSpec"]
    assert prometheus["enforcedNamespaceLabel"] == "namespace"
    excluded = {(e["resource"], e["namespace"]) for e in prometheus["excludedFromEnforcement"]}
    # The GPU scrape (monitoring) and the platform's rules keep their namespaces; no team namespace is excluded.
    assert {("servicemonitors", "monitoring"), ("prometheusrules", "monitoring"), ("servicemonitors", "kueue-system"),
            ("servicemonitors", "kube-system")} <= excluded
    assert not {ns for _, ns in excluded} & {"research", "web"}


# ---- the platform's NetworkPolicies ----------------------------------------------------------------------------

def network_policy(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "research", "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []}}


PLATFORMS = network_policy("default-deny-ingress", {"mlplatform.io/team": "research"})
OWN = network_policy("allow-from-web", {"app": "serve"})


@pytest.mark.parametrize("case,old,new,groups,refused", [
    ("a member deleting the platform's default deny", PLATFORMS, None, ("ml-research",), True),
    ("a member opening the platform's default deny", PLATFORMS,
     {**PLATFORMS, "spec": {**PLATFORMS["spec"], "ingress": [{}]}}, ("ml-research",), True),
    ("a member deleting a policy of the team's own", OWN, None, ("ml-research",), False),
    ("the deployer deleting the platform's policy", PLATFORMS, None, ("platform-admins",), False),
    ("another team's member (whose RBAC stops it anyway)", PLATFORMS, None, ("ml-web",), False),
])
def test_team_members_keep_the_platforms_network_policies(policies, case, old, new, groups, refused):
    decision = admit(policies["team-network-policies-stay"], new, namespace("research"), groups=groups, old=old)
    assert (decision.judged and not decision.allowed) is refused, case
# Issue 24: whole GPUs, time-sliced shares advertised as nvidia.com/gpu, and renamed shares.
SHARED_POOLS = [{"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 2},
                {"name": "l4", "accelerator": "nvidia-l4", "sharing": {"timeSlicing": {"replicas": 2}}},
                {"name": "t4s", "sharing": {"timeSlicing": {"replicas": 4, "renameByDefault": True}}}]
SHARING_TOLERATION = {"key": "mlplatform.io/gpu-sharing", "operator": "Equal", "value": "time-slicing",
                      "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def shared_pool_policies() -> dict[str, dict[str, Any]]:
    synthesis = synth_with(cluster={"cloud": "kind", "gpuPools": SHARED_POOLS}, teams=[_team("research", 2)])
    return {r.inputs["metadata"]["name"].removeprefix("mlplatform-"): r.inputs
            for r in synthesis.of_type("kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy")}


def shares(amount: int) -> dict[str, Any]:
    renamed = pod(gpus=None, tolerations=[GPU_TOLERATION])
    renamed["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu.shared"] = amount
    return renamed


SHARED_POOL_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("two renamed shares in one container", job(shares(2)), False),
    ("one renamed share", job(shares(1)), True),
    ("two GPUs selecting the time-sliced pool", pod(gpus=2, nodeSelector={"mlplatform.io/pool": "l4"}), False),
    ("two GPUs allowing the time-sliced pool by affinity", job(pod(gpus=2, affinity=affinity(
        "mlplatform.io/pool", "a100", "l4"))), False),
    ("two GPUs tolerating the shared flavor's taint", pod(gpus=2, tolerations=[GPU_TOLERATION, SHARING_TOLERATION]),
     False),
    ("one share of the time-sliced pool", pod(gpus=1, nodeSelector={"mlplatform.io/pool": "l4"},
                                              tolerations=[GPU_TOLERATION, SHARING_TOLERATION]), True),
    ("two whole GPUs on a100", pod(gpus=2, nodeSelector={"mlplatform.io/pool": "a100"}), True),
    # Kueue gives it no time-sliced flavor: it does not tolerate their taint.
    ("two GPUs, no pool chosen", job(pod(gpus=2)), True),
    ("three GPUs, more than a whole-GPU node", pod(gpus=3), False),
    ("two renamed shares in a JobSet's second template", in_jobset(CPU_POD, shares(2)), False),
    ("two GPUs selecting the time-sliced pool in a JobSet's second template",
     in_jobset(pod(gpus=2), pod(gpus=2, nodeSelector={"mlplatform.io/pool": "l4"})), False),
    ("one renamed share in each of a JobSet's templates", in_jobset(shares(1), shares(1)), True),
]


@pytest.mark.parametrize("case, obj, admitted", SHARED_POOL_CASES, ids=[c for c, _, _ in SHARED_POOL_CASES])
def test_more_than_one_share_per_container_is_refused_on_time_sliced_pools(shared_pool_policies, case, obj, admitted):
    policy = judging(shared_pool_policies, "gpu-request-fits-a-node", obj)
    decision = admit(shared_pool_policies[policy], obj, namespace("research"))
    assert decision.allowed is admitted, decision.failures
    if not admitted and "more than a whole-GPU node" not in case:
        # The API server reports the first failing check: this one, naming the pools.
        assert "on a time-sliced pool (l4, t4s)" in decision.failures[0], decision.failures
        assert "whole GPUs on another pool (a100)" in decision.failures[0]


def test_the_shared_pool_cases_are_valid_kubernetes_objects(upstream):
    objects = [obj for _, obj, _ in SHARED_POOL_CASES]
    assert check_manifests(objects, custom=schemas_of([yaml.safe_load(JOBSET_CRD.read_text())])).errors == []


# ---- ConfigMaps and Secrets a pod's envFrom reads ---------------------------------------------------------------

def source(kind: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": "settings", "namespace": "research"},
            "data": data}


# (case, object, admitted?) Issue 24: a key named NVIDIA_VISIBLE_DEVICES reached a container through envFrom,
# which the pod policy (judging env by name) never saw.
SOURCES: list[tuple[str, dict[str, Any], bool]] = [
    ("a ConfigMap of ordinary settings", source("ConfigMap", OMP_NUM_THREADS="4", FI_PROVIDER="efa"), True),
    ("a Secret of ordinary settings", source("Secret", TOKEN="c2VjcmV0"), True),
    ("an empty ConfigMap", {k: v for k, v in source("ConfigMap").items() if k != "data"}, True),
    ("a ConfigMap asking for every GPU", source("ConfigMap", NVIDIA_VISIBLE_DEVICES="all"), False),
    ("a Secret asking for driver capabilities", source("Secret", NVIDIA_DRIVER_CAPABILITIES="YWxs"), False),
]


@pytest.mark.parametrize("obj,admitted", [(o, a) for _, o, a in SOURCES], ids=[c for c, _, _ in SOURCES])
def test_configmaps_and_secrets_cannot_carry_device_variables_for_envfrom(policies, obj, admitted):
    decision = admit(policies["no-gpu-device-env-sources"], obj, namespace("research"))
    assert decision.judged and decision.allowed is admitted, decision.failures


def test_the_sources_policy_judges_every_write_of_configmaps_and_secrets(policies):
    (rule,) = policies["no-gpu-device-env-sources"]["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        [""], ["configmaps", "secrets"], ["CREATE", "UPDATE"])
    assert check_manifests([o for _, o, _ in SOURCES]).errors == []
