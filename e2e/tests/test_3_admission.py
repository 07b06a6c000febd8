"""The team namespaces' admission policies (docs/admission.md), judged by the API
server itself: per policy, a team member submits a purpose-built violating object and a compliant one, Pods
and Jobs, with server-side dry-run (nothing is stored). The e2e stack is dev-like and sets no
`admission.enforcement`, so every policy warns (and audits): a violation draws the policy's own warning, and a
compliant object draws no warning at all (it also meets Pod Security `restricted`, whose warnings would
show)."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest

from components.admission import KUEUE_GATE, KUEUE_USER, QUEUE_LABEL
from core.vocabulary import GPU_TAINT, POOL_LABEL, TEAM_LABEL
from e2e.cluster import ApiError
from e2e.lifecycle import Platform

WORKLOAD_POLICIES = ("gpu-nodes-for-gpu-work", "gpu-limits-equal-requests", "gpu-work-through-team-queue",
                     "team-pools-only", "gpu-request-fits-a-node", "no-gpu-device-env", "team-priority-classes")
# Each workload policy has a JobSet form, judging every pod template of a JobSet.
POLICIES = (*WORKLOAD_POLICIES, *(f"{name}-jobsets" for name in WORKLOAD_POLICIES), "team-monitors",
            "team-monitor-labels", "team-network-policies-stay", "no-gpu-device-env-sources")
# The policies of multi-node work (components/gang_admission.py), judged by the API server in test_6_gangs.
GANG_POLICIES = ("multi-node-whole-nodes", "multi-node-names-its-topology", "jobset-through-team-queue")
# A member of each team, as its RoleBinding names the group (Pulumi.e2e.yaml's teams[].groups.edit).
MEMBERS = {"research": ("alice", "ml-research"), "inference": ("bob", "ml-inference")}
GPU_TOLERATION = {"key": GPU_TAINT.key, "operator": "Equal", "value": GPU_TAINT.value, "effect": GPU_TAINT.effect}


def gpu_pod(namespace: str = "research", *, gpus: int = 1, resource: str = "nvidia.com/gpu",
            pool: str = "a100") -> dict[str, Any]:
    """A compliant GPU pod: the team's queue, a pool it may use, an ML priority class, Pod Security
    `restricted` (docs/admission.md's example), GPUs in limits only."""
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


def as_deployment(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as a Deployment's template (restarting always, as a Deployment's pods must), carrying its labels."""
    spec = {key: value for key, value in pod["spec"].items() if key != "restartPolicy"}
    selector = {"app": "serve"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "serve", "namespace": pod["metadata"]["namespace"],
                         "labels": pod["metadata"]["labels"]},
            "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": selector}, "spec": spec}}}


def as_jobset(*pods: dict[str, Any]) -> dict[str, Any]:
    """A JobSet of one replicated Job per pod, each pod's spec its template, carrying the pods' labels."""
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "train", "namespace": pods[0]["metadata"]["namespace"],
                         "labels": {k: v for pod in pods for k, v in pod["metadata"]["labels"].items()}},
            "spec": {"replicatedJobs": [{"name": f"workers-{index}", "replicas": 1, "template": {"spec": {
                "backoffLimit": 0, "template": {"spec": pod["spec"]}}}} for index, pod in enumerate(pods)]}}


def changed(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """A copy with pod-spec fields set (None removes one); a Job's go into its template."""
    obj = copy.deepcopy(obj)
    target = obj["spec"]["template"]["spec"] if obj["kind"] != "Pod" else obj["spec"]
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


def with_env(obj: dict[str, Any], name: str, value: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    target = obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]
    target["containers"][0]["env"] = [{"name": name, "value": value}]
    return obj


def controlled_by(obj: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """The object naming JOB as its controller, as the job controller's pods do."""
    obj = copy.deepcopy(obj)
    name = job["metadata"]["name"]
    obj["metadata"]["labels"] = {"batch.kubernetes.io/job-name": name}
    obj["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                           "uid": job["metadata"]["uid"], "controller": True}]
    return obj


_names = itertools.count()


@pytest.fixture
def parked_job(e2e: Platform):
    """A real Job of research's that Kueue manages and never admits: its queue has no LocalQueue."""
    job = labelled(as_job(cpu_pod()), {QUEUE_LABEL: "nowhere"})
    job["metadata"]["name"] = f"parked-{next(_names)}"
    job["spec"]["suspend"] = True
    created = e2e.cluster.create(job)
    try:
        yield created
    finally:
        e2e.cluster.delete(job)


def test_a_gpu_pod_claiming_a_teams_job_as_controller_is_warned(e2e: Platform, parked_job: dict[str, Any]):
    # Kueue's pod webhook leaves a pod whose controller is a Job it manages to the Job's workload (and refuses
    # one whose Job does not exist); the queue policy counts the owner only when a controller creates the pod.
    assert warned_by(submit(e2e, controlled_by(gpu_pod(), parked_job))) == {"gpu-work-through-team-queue"}


SYSTEM_POOL = {POOL_LABEL: "system"}  # Pulumi.e2e.yaml's systemNodeLabels

# (id, object, the one policy it violates)
VIOLATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("cpu-pod-tolerating-the-gpu-taint", changed(cpu_pod(), tolerations=[GPU_TOLERATION]), "gpu-nodes-for-gpu-work"),
    ("cpu-job-tolerating-every-taint", as_job(changed(cpu_pod("inference"), tolerations=[{"operator": "Exists"}])),
     "gpu-nodes-for-gpu-work"),
    ("zero-gpu-pod-tolerating-the-gpu-taint", gpu_pod(gpus=0), "gpu-nodes-for-gpu-work"),
    ("cpu-deployment-tolerating-the-gpu-taint", as_deployment(changed(cpu_pod("inference"),
                                                                      tolerations=[GPU_TOLERATION])),
     "gpu-nodes-for-gpu-work"),
    ("gpu-pod-in-another-teams-queue", labelled(gpu_pod(), {QUEUE_LABEL: "inference"}),
     "gpu-work-through-team-queue"),
    ("cpu-pod-asking-every-gpu-by-environment", with_env(cpu_pod(), "NVIDIA_VISIBLE_DEVICES", "all"),
     "no-gpu-device-env"),
    ("job-asking-driver-capabilities-by-environment",
     as_job(with_env(gpu_pod("inference", pool="t4", resource="nvidia.com/gpu.shared"), "NVIDIA_DRIVER_CAPABILITIES",
                     "all")), "no-gpu-device-env"),
    ("cpu-pod-completing-a-device-variable-by-envfrom-prefix",
     changed(cpu_pod(), containers=[{**cpu_pod()["spec"]["containers"][0], "envFrom": [
         {"prefix": "NVIDIA_", "configMapRef": {"name": "settings"}}]}]), "no-gpu-device-env"),
    # Issue 24: envFrom turns every key into a variable, so the keys are judged where they are written; a
    # Secret's stringData is merged into its data before any policy sees it.
    ("configmap-asking-every-gpu", {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "settings", "namespace": "research"},
                                    "data": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "no-gpu-device-env-sources"),
    ("secret-asking-driver-capabilities-by-stringdata",
     {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "settings", "namespace": "inference"},
      "stringData": {"NVIDIA_DRIVER_CAPABILITIES": "all"}}, "no-gpu-device-env-sources"),
    ("gpu-job-in-another-teams-queue", as_job(labelled(gpu_pod("inference"), {QUEUE_LABEL: "research"})),
     "gpu-work-through-team-queue"),
    # A Job: a bare pod naming its node is refused outright (below).
    ("job-with-node-name", as_job(changed(gpu_pod(), nodeName="a100-0", nodeSelector=None)), "team-pools-only"),
    ("pod-selecting-the-system-pool", changed(cpu_pod(), nodeSelector=SYSTEM_POOL), "team-pools-only"),
    ("job-requiring-the-system-pool", as_job(changed(cpu_pod("inference"),
                                                     affinity=required_affinity(POOL_LABEL, "system"))),
     "team-pools-only"),
    ("pod-with-a-system-priority-class", changed(cpu_pod(), priorityClassName="system-cluster-critical"),
     "team-priority-classes"),
]

# What can never run: refused even where the policies only warn (the policy and a piece of its message).
NEVER_RUNS: list[tuple[str, dict[str, Any], str]] = [
    # The largest nodes are the h100 pool's 8 GPUs.
    ("pod-asking-more-gpus-than-a-node-has", gpu_pod(gpus=9), "more GPUs than any node offers"),
    ("job-asking-a-gpu-resource-no-pool-has", as_job(gpu_pod("inference", resource="nvidia.com/mig-1g.10gb")),
     "a GPU resource no pool has"),
    # Issue 24: the t4 device plugin gives a container one share at most (failRequestsGreaterThanOne).
    ("job-asking-two-time-sliced-shares",
     as_job(gpu_pod("inference", gpus=2, resource="nvidia.com/gpu.shared", pool="t4")),
     "more than one GPU on a time-sliced pool (t4, l4)"),
    ("pod-asking-two-gpus-on-the-time-sliced-pool", gpu_pod(gpus=2, pool="t4"),
     "more than one GPU on a time-sliced pool (t4, l4)"),
]
# And team monitors whose series would pass for the platform's kube-state-metrics or GPU scrapes.
ALWAYS_DENIED = {"gpu-request-fits-a-node", "gpu-request-fits-a-node-jobsets", "team-monitor-labels"}

COMPLIANT: list[tuple[str, dict[str, Any]]] = [
    ("cpu-pod", cpu_pod()),
    ("cpu-job", as_job(cpu_pod("inference"))),
    ("gpu-pod-in-its-teams-queue", gpu_pod()),
    ("gpu-pod-in-the-default-queue", labelled(gpu_pod(), {QUEUE_LABEL: "default"})),
    # docs/queues.md: the `default` LocalQueue is the one "Kueue gives any job that names no queue".
    ("gpu-pod-without-a-queue-label", labelled(gpu_pod(), {})),
    ("gpu-job-on-time-sliced-gpus", as_job(gpu_pod("inference", resource="nvidia.com/gpu.shared", pool="t4"))),
    ("gpu-pod-as-large-as-a-node", gpu_pod(gpus=4)),
    ("gpu-deployment-on-time-sliced-gpus",
     as_deployment(gpu_pod("inference", resource="nvidia.com/gpu.shared", pool="t4"))),
    ("gpu-pod-requiring-its-pool", changed(gpu_pod(), nodeSelector=None,
                                           affinity=required_affinity(POOL_LABEL, "a100"))),
    ("gpu-pod-with-ml-serving-priority", changed(gpu_pod("inference"), priorityClassName="ml-serving")),
    ("configmap-of-ordinary-settings", {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": "settings", "namespace": "research"},
                                       "data": {"OMP_NUM_THREADS": "4"}}),
]


def test_every_policy_warns_and_audits_in_team_namespaces(e2e: Platform):
    # Dev-like stack without admission.enforcement: Warn + Audit (Deny + Audit is for prod).
    bindings = {b["metadata"]["name"]: b["spec"] for b in
                e2e.cluster.get("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings")["items"]}
    # Pod Security baseline where a team namespace's labels do not enforce it: test_7_pod_security.py.
    # And exec into a GPUDirect daemon there (test_7_pod_security.py).
    for guarded in ("mlplatform-team-pod-security", "mlplatform-team-gpudirect-daemon-connect"):
        assert bindings.pop(guarded)["validationActions"] == ["Deny", "Audit"], guarded
    assert set(bindings) == {f"mlplatform-{name}" for name in POLICIES + GANG_POLICIES}
    for name, spec in bindings.items():
        denied = name.removeprefix("mlplatform-") in ALWAYS_DENIED
        assert spec["validationActions"] == (["Deny", "Audit"] if denied else ["Warn", "Audit"]), name
        assert spec["matchResources"]["namespaceSelector"] == {
            "matchExpressions": [{"key": TEAM_LABEL, "operator": "Exists"}]}


@pytest.mark.parametrize("obj,policy", [(o, p) for _, o, p in VIOLATIONS], ids=[i for i, _, _ in VIOLATIONS])
def test_a_violation_draws_its_policys_warning(e2e: Platform, obj: dict[str, Any], policy: str):
    warnings = submit(e2e, obj)
    assert warned_by(warnings) == {policy}, warnings


@pytest.mark.parametrize("obj,message", [(o, m) for _, o, m in NEVER_RUNS], ids=[i for i, _, _ in NEVER_RUNS])
def test_what_can_never_run_is_refused_even_where_policies_warn(e2e: Platform, obj: dict[str, Any], message: str):
    # Let through with a warning, Kueue would admit it and it would hold the team's quota until the scheduler or
    # the device plugin failed it.
    with pytest.raises(ApiError) as refused:
        submit(e2e, obj)
    body = json.loads(refused.value.body)["message"]
    assert "mlplatform-gpu-request-fits-a-node" in body and message in body, body


@pytest.mark.parametrize("obj", [o for _, o in COMPLIANT], ids=[i for i, _ in COMPLIANT])
def test_a_compliant_object_draws_no_warning(e2e: Platform, obj: dict[str, Any]):
    assert submit(e2e, obj) == []


# Issue 24: JobSets, judged over every template when they are submitted, by each policy's JobSet form; in each,
# only the second template breaks the rule. (case, JobSet, policy, refused even where the policies warn?)
JOBSETS: list[tuple[str, dict[str, Any], str | None, bool]] = [
    ("jobset-whose-second-template-runs-cpu-work-on-gpu-nodes",
     as_jobset(gpu_pod(), changed(cpu_pod(), tolerations=[GPU_TOLERATION])), "gpu-nodes-for-gpu-work-jobsets", False),
    ("jobset-whose-second-template-picks-the-system-pool",
     as_jobset(gpu_pod(), changed(cpu_pod(), nodeSelector=SYSTEM_POOL)), "team-pools-only-jobsets", False),
    ("jobset-whose-second-template-asks-more-gpus-than-a-node-has", as_jobset(gpu_pod(), gpu_pod(gpus=9)),
     "gpu-request-fits-a-node-jobsets", True),
    ("compliant-jobset-of-a-cpu-and-a-gpu-template", as_jobset(cpu_pod(), gpu_pod()), None, False),
]


@pytest.mark.parametrize("obj,policy,refused", [(o, p, r) for _, o, p, r in JOBSETS], ids=[i for i, *_ in JOBSETS])
def test_a_jobset_is_judged_over_every_template_when_submitted(e2e: Platform, obj: dict[str, Any], policy: str | None,
                                                               refused: bool):
    # As a member of the team, through the JobSet role the platform aggregates into `edit`.
    if refused:
        with pytest.raises(ApiError) as error:
            submit(e2e, obj)
        assert f"mlplatform-{policy}" in json.loads(error.value.body)["message"]
        return
    assert warned_by(submit(e2e, obj)) == ({policy} if policy else set())


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


# A pod Kueue never ungates: its queue has no LocalQueue, and it holds a gate of its own besides. Gated pods
# may gain node selectors and affinity terms and lose gates by an update; any pod may gain tolerations.
HOLD_GATE = "mlplatform.io/e2e-hold"


@pytest.fixture
def held_pod(e2e: Platform):
    pod = labelled(changed(cpu_pod(), schedulingGates=[{"name": HOLD_GATE}]), {QUEUE_LABEL: "nowhere"})
    # A name of its own: Kueue's finalizer keeps a deleted pod a moment.
    pod["metadata"]["name"] = f"held-{next(_names)}"
    e2e.cluster.create(pod)

    def gated_by_kueue() -> dict[str, Any] | None:
        stored = e2e.cluster.get(e2e.cluster.path_of(pod))
        gates = [g["name"] for g in stored["spec"].get("schedulingGates", [])]
        return stored if KUEUE_GATE in gates else None

    try:
        yield e2e.cluster.wait("the held pod gated by Kueue", gated_by_kueue, timeout=30)
    finally:
        e2e.cluster.delete(pod)


def update(e2e: Platform, stored: dict[str, Any], user: str, groups: list[str], **spec: Any) -> list[str]:
    """Update the stored pod's spec fields with dryRun=All as USER; the API server's warnings."""
    path = e2e.cluster.path_of(stored) + "?dryRun=All"
    answer, warnings = e2e.cluster.request_as("PUT", path, changed(stored, **spec), user=user, groups=groups)
    assert answer["kind"] == "Pod"
    return warnings


@pytest.mark.parametrize("what,spec,policy", [
    ("a CPU pod given the GPU toleration", {"tolerations": "add-gpu"}, "gpu-nodes-for-gpu-work"),
    ("a gated pod moved onto the system pool", {"nodeSelector": SYSTEM_POOL}, "team-pools-only"),
    ("Kueue's gate removed by a team member", {"schedulingGates": "drop-kueue"}, "gpu-work-through-team-queue"),
], ids=["toleration", "node-selector", "kueue-gate"])
def test_an_update_that_moves_a_pod_is_judged_but_never_kueues(e2e: Platform, held_pod: dict[str, Any], what: str,
                                                               spec: dict[str, Any], policy: str):
    fields = dict(spec)
    if fields.get("tolerations") == "add-gpu":
        fields["tolerations"] = [*held_pod["spec"].get("tolerations", []), GPU_TOLERATION]
    if fields.get("schedulingGates") == "drop-kueue":
        fields["schedulingGates"] = [g for g in held_pod["spec"]["schedulingGates"] if g["name"] != KUEUE_GATE]
    member, group = MEMBERS["research"]
    assert warned_by(update(e2e, held_pod, member, [group], **fields)) == {policy}, what
    # The same update from Kueue's ServiceAccount (its admission: ungating, injecting a flavor's node
    # selector) is not judged: the policies' match conditions leave Kueue alone.
    assert update(e2e, held_pod, KUEUE_USER, []) == []
    assert warned_by(update(e2e, held_pod, KUEUE_USER, [], **fields)) == set()



def service_monitor(**endpoint: Any) -> dict[str, Any]:
    """A ServiceMonitor of research's own service, with the limits a team monitor states."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "trainer", "namespace": "research"},
            "spec": {"selector": {"matchLabels": {"app": "trainer"}}, "sampleLimit": 10000, "targetLimit": 20,
                     "endpoints": [{"port": "metrics", **endpoint}]}}


MONITORS: list[tuple[str, dict[str, Any], bool]] = [
    ("its-own-service", service_monitor(), False),
    ("prometheus-token-file", service_monitor(bearerTokenFile="/var/run/secrets/kubernetes.io/serviceaccount/token"),
     True),
    ("honor-labels-off", service_monitor(honorLabels=False), False),
    ("a-label-of-its-own-by-relabeling",
     service_monitor(relabelings=[{"sourceLabels": ["__meta_kubernetes_pod_label_team"], "targetLabel": "team"}]),
     False),
    ("every-namespace",
     {**service_monitor(), "spec": {**service_monitor()["spec"], "namespaceSelector": {"any": True}}}, True),
    ("no-limits", {**service_monitor(), "spec": {k: v for k, v in service_monitor()["spec"].items()
                                                 if k not in ("sampleLimit", "targetLimit")}}, True),
]


@pytest.mark.parametrize("monitor,warned", [(m, w) for _, m, w in MONITORS], ids=[i for i, _, _ in MONITORS])
def test_team_monitors_are_judged(e2e: Platform, monitor: dict[str, Any], warned: bool):
    # A team member may declare monitors (the edit role's aggregated rights); the API server judges them.
    assert warned_by(submit(e2e, monitor)) == ({"team-monitors"} if warned else set())


# Monitors whose series would pass for the platform's own kube-state-metrics or GPU scrape, which the GPU rules
# and GPU cost read: refused even where the policies only warn. (case, monitor, a piece of the message)
FORGING_MONITORS: list[tuple[str, dict[str, Any], str]] = [
    ("honor-labels", service_monitor(honorLabels=True), "honorLabels: true"),
    ("job-by-relabeling", service_monitor(relabelings=[{"targetLabel": "job", "replacement": "kube-state-metrics"}]),
     "may not write job"),
    ("node-label-by-relabeling", service_monitor(relabelings=[{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                               "targetLabel": "node"}]), "may not write job"),
    ("platform-source-by-metric-relabeling", service_monitor(metricRelabelings=[
        {"sourceLabels": ["exported_mlplatform_source"], "targetLabel": "mlplatform_source"}]), "mlplatform_source"),
]


@pytest.mark.parametrize("monitor,message", [(m, t) for _, m, t in FORGING_MONITORS],
                         ids=[i for i, _, _ in FORGING_MONITORS])
def test_a_team_monitor_forging_the_platforms_series_is_refused(e2e: Platform, monitor: dict[str, Any],
                                                                 message: str):
    with pytest.raises(ApiError) as refused:
        submit(e2e, monitor)
    body = json.loads(refused.value.body)["message"]
    assert "mlplatform-team-monitor-labels" in body and message in body, body


def test_prometheus_stamps_team_series_with_their_namespace(e2e: Platform):
    (prometheus,) = e2e.cluster.get("/apis/monitoring.coreos.com/v1/prometheuses")["items"]
    assert prometheus["spec"]["enforcedNamespaceLabel"] == "namespace"
    excluded = {(e["resource"], e["namespace"]) for e in prometheus["spec"]["excludedFromEnforcement"]}
    assert ("servicemonitors", prometheus["metadata"]["namespace"]) in excluded
    assert not {ns for _, ns in excluded} & set(MEMBERS)
    # And every scrape but the platform's kube-state-metrics and GPU ones is marked as another's.
    (scrape_class,) = prometheus["spec"]["scrapeClasses"]
    assert scrape_class["default"] is True
    assert {"targetLabel": "mlplatform_source", "replacement": "other", "action": "replace"} in scrape_class[
        "relabelings"]


@pytest.mark.parametrize("method", ["DELETE", "PUT"])
def test_a_team_member_changing_the_platforms_network_policy_is_judged(e2e: Platform, method: str):
    # Teams' edit role may write NetworkPolicies (to add their own); the platform's default deny is not theirs.
    path = "/apis/networking.k8s.io/v1/namespaces/research/networkpolicies/default-deny-ingress"
    stored = e2e.cluster.get(path)
    opened = {**stored, "spec": {**stored["spec"], "ingress": [{}]}}
    user, group = MEMBERS["research"]
    _, warnings = e2e.cluster.request_as(method, path + "?dryRun=All", opened if method == "PUT" else None,
                                         user=user, groups=[group])
    assert warned_by(warnings) == {"team-network-policies-stay"}, warnings
    # The stack's deployer, in no team's group, is not judged: `pulumi up` and `destroy` manage these.
    _, warnings = e2e.cluster.request_as(method, path + "?dryRun=All", opened if method == "PUT" else None,
                                         user="deployer", groups=["system:masters"])
    assert warned_by(warnings) == set(), warnings
