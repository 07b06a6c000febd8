"""Pod Security `baseline` by the platform's admission policy (components/pod_security.py), judged by the real API
server. The table's pods (tests/pod_security_cases.py), created with server-side dry-run, must get the same
verdict in a namespace whose Pod Security enforces baseline (the API server's own) as in a team namespace that
enforces `privileged`, which the policy `pulumi up` deployed guards. GKE's GPUDirect pods cannot run here, but
the policy built for GKE's three fabrics can be judged: it is declared for a namespace of this test's own."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from components.admission import Policy, Subject
from components.pod_security import ENFORCE_LABEL, POLICY, allowance, daemon_connect, pod_security
from core.vocabulary import TEAM_LABEL
from e2e.cluster import ApiError, ClusterError
from e2e.lifecycle import Platform
from tests.pod_security_cases import BASELINE, FABRIC, fabric_case, fabric_pods, pod

BASELINE_NAMESPACE = "e2e-baseline"
POLICY_NAMESPACE = "e2e-privileged-team"
FABRIC_NAMESPACE = "e2e-gpudirect"
FABRIC_LABEL = "e2e.mlplatform.io/gpudirect"
FABRIC_POLICY = "e2e-gpudirect-pod-security"
FABRIC_CONNECT_POLICY = "e2e-gpudirect-daemon-connect"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
_names = itertools.count()


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def declared(policy: Policy, subject: Subject, name: str, selector: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy and a binding as objects, as components/admission.py declare_policy declares them."""
    rules = [{"apiGroups": pulumi.get(r, "api_groups"), "apiVersions": pulumi.get(r, "api_versions"),
              "operations": pulumi.get(r, "operations"), "resources": pulumi.get(r, "resources")}
             for r in subject.rules]
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": rules},
                  "matchConditions": [{"name": n, "expression": e} for n, e in subject.match_conditions],
                  "variables": [{"name": n, "expression": e} for n, e in subject.variables],
                  "validations": [{"expression": c.expression, "message": c.message} for c in policy.checks]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": selector}}},
    ]


def create(e2e: Platform, obj: dict[str, Any], namespace_name: str) -> str | None:
    """None if the API server admits the pod (dry run: nothing is stored), else its refusal."""
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace_name
    try:
        e2e.cluster.request("POST", e2e.cluster.path_of(obj, collection=True) + "?dryRun=All", obj)
    except ApiError as refused:
        assert refused.status in (400, 403, 422), refused
        return str(refused)
    return None


def refused_by_policy(refusal: str | None, policy: str) -> bool:
    return refusal is not None and f"ValidatingAdmissionPolicy '{policy}'" in refusal


@pytest.fixture(scope="module")
def namespaces(e2e: Platform) -> Iterator[None]:
    fabrics = {pool: allowance(f) for pool, f in fabric_pods().items()}
    made: list[dict[str, Any]] = [
        namespace(BASELINE_NAMESPACE, {ENFORCE_LABEL: "baseline"}),
        # A team namespace enforcing less than baseline, as a GPUDirect team's does.
        namespace(POLICY_NAMESPACE, {TEAM_LABEL: POLICY_NAMESPACE, ENFORCE_LABEL: "privileged"}),
        namespace(FABRIC_NAMESPACE, {FABRIC_LABEL: "true", ENFORCE_LABEL: "privileged"}),
        *declared(*pod_security(fabrics), FABRIC_POLICY, {"matchLabels": {FABRIC_LABEL: "true"}}),
        *declared(*daemon_connect(fabrics), FABRIC_CONNECT_POLICY, {"matchLabels": {FABRIC_LABEL: "true"}}),
    ]
    try:
        for obj in made:
            e2e.cluster.create(obj)
        # The API server's policy informers take a moment: wait until each guarded namespace refuses a host
        # folder, by its policy.
        host_folder = pod(volumes=[{"name": "etc", "hostPath": {"path": "/etc"}}])
        for name, policy in ((POLICY_NAMESPACE, f"mlplatform-{POLICY}"), (FABRIC_NAMESPACE, FABRIC_POLICY)):
            e2e.cluster.wait(f"{policy} judging pods in {name}", lambda: refused_by_policy(
                create(e2e, host_folder, name), policy) or None, timeout=60)
        yield
    finally:
        for obj in reversed(made):
            try:
                e2e.cluster.delete(obj)
            except ApiError as gone:
                if gone.status != 404:
                    raise

        # Gone before the next test file: their pods' Kueue finalizers need Kueue, which destroy removes.
        def absent(obj: dict[str, Any]) -> bool:
            try:
                e2e.cluster.get(e2e.cluster.path_of(obj))
            except ApiError as gone:
                if gone.status == 404:
                    return True
                raise
            return False

        e2e.cluster.wait("the test's namespaces deleted", lambda: all(
            absent(obj) for obj in made if obj["kind"] == "Namespace") or None, timeout=120)


@pytest.mark.parametrize("obj,admitted", [(o, a) for _, o, a in BASELINE], ids=[c for c, _, _ in BASELINE])
def test_the_policy_agrees_with_pod_security_baseline(e2e: Platform, namespaces: None, obj: dict[str, Any],
                                                      admitted: bool):
    by_pod_security = create(e2e, obj, BASELINE_NAMESPACE)
    by_policy = create(e2e, obj, POLICY_NAMESPACE)
    assert (by_pod_security is None, by_policy is None) == (admitted, admitted), (by_pod_security, by_policy)
    if not admitted:
        assert 'violates PodSecurity "baseline' in str(by_pod_security), by_pod_security
        assert refused_by_policy(by_policy, f"mlplatform-{POLICY}"), by_policy


@pytest.mark.parametrize("pool,change,admitted", [case[1:] for case in FABRIC], ids=[case[0] for case in FABRIC])
def test_a_gpudirect_pod_gets_exactly_its_pools_fabric(e2e: Platform, namespaces: None, pool: str, change: Any,
                                                     admitted: bool):
    refusal = create(e2e, fabric_case(pool, change), FABRIC_NAMESPACE)
    assert (refusal is None) is admitted, refusal
    if not admitted:
        assert refused_by_policy(refusal, FABRIC_POLICY), refusal
    # Pod Security baseline refuses every one of Google's pods: what the policy stands in for.
    assert create(e2e, fabric_case(pool, None), BASELINE_NAMESPACE) is not None


@pytest.mark.parametrize("pool", sorted(fabric_pods()))
def test_the_job_controller_creates_an_indexed_jobs_gpudirect_pods(e2e: Platform, namespaces: None, pool: str):
    # A multi-node JobSet's pods are an Indexed Job's, which the Job controller makes with its completion index
    # in every container's environment, the daemon's too: the policy must admit them as the controller writes
    # them, not only as a team writes the template. No node is of the pool here, so the pods stay Pending.
    template = fabric_case(pool, None)
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": f"gpudirect-{pool}", "namespace": FABRIC_NAMESPACE},
           "spec": {"completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0,
                    "template": {"spec": {**template["spec"], "restartPolicy": "Never"}}}}
    e2e.cluster.create(job)
    pods = f"/api/v1/namespaces/{FABRIC_NAMESPACE}/pods?labelSelector=batch.kubernetes.io/job-name%3D{job['metadata']['name']}"
    try:
        def created() -> list[dict[str, Any]] | None:
            found = e2e.cluster.get(pods)["items"]
            return found if len(found) == 2 else None

        def refusals() -> list[str]:
            events = e2e.cluster.get(f"/api/v1/namespaces/{FABRIC_NAMESPACE}/events")["items"]
            return [e["message"] for e in events if e.get("reason") == "FailedCreate"
                    and e["involvedObject"]["name"] == job["metadata"]["name"]]

        try:
            made = e2e.cluster.wait(f"the Job controller creating {pool}'s pods", created, timeout=60)
        except ClusterError:
            raise AssertionError(f"no pods; the Job controller's refusals: {refusals()}") from None
        # The controller's own additions, the daemon's included, were there when the policy judged the pods.
        for made_pod in made:
            containers = made_pod["spec"]["containers"] + made_pod["spec"].get("initContainers", [])
            assert all("JOB_COMPLETION_INDEX" in {e["name"] for e in c.get("env", [])} for c in containers)
    finally:
        e2e.cluster.request("DELETE", e2e.cluster.path_of(job), {"propagationPolicy": "Foreground"})


def test_the_gpudirect_policy_type_checks_without_a_warning(e2e: Platform, namespaces: None):
    def checked() -> dict[str, Any] | None:
        status = e2e.cluster.get(f"{ADMISSION}/validatingadmissionpolicies/{FABRIC_POLICY}").get("status") or {}
        return status.get("typeChecking")

    assert e2e.cluster.wait(f"{FABRIC_POLICY} type-checked", checked, timeout=60).get("expressionWarnings") is None


@pytest.mark.parametrize("container,admitted", [
    ({}, True), ({"securityContext": {"privileged": True}}, False),
    ({"securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}, False),
], ids=["plain", "privileged", "SYS_PTRACE"])
def test_an_ephemeral_container_is_judged_as_pod_security_judges_it(e2e: Platform, namespaces: None,
                                                                     container: dict[str, Any], admitted: bool):
    # `kubectl debug`: the pods/ephemeralcontainers subresource, on a stored pod of each namespace.
    verdicts = []
    for name in (BASELINE_NAMESPACE, POLICY_NAMESPACE):
        stored = copy.deepcopy(pod())
        # A name of its own per case: a deleted pod lingers while Kueue removes its finalizer.
        stored["metadata"].update(name=f"debugged-{next(_names)}", namespace=name)
        # Never scheduled: it only has to be stored.
        stored["spec"]["schedulingGates"] = [{"name": "e2e.mlplatform.io/hold"}]
        e2e.cluster.create(stored)
        try:
            debugged = e2e.cluster.get(e2e.cluster.path_of(stored))
            debugged["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36", **container}]
            try:
                e2e.cluster.request("PUT", e2e.cluster.path_of(stored) + "/ephemeralcontainers?dryRun=All", debugged)
                verdicts.append(None)
            except ApiError as refused:
                verdicts.append(str(refused))
        finally:
            e2e.cluster.request("DELETE", e2e.cluster.path_of(stored), {"gracePeriodSeconds": 0})
    assert [v is None for v in verdicts] == [admitted, admitted], verdicts
    if not admitted:
        assert refused_by_policy(verdicts[1], f"mlplatform-{POLICY}"), verdicts[1]


@pytest.fixture
def stored_gpudirect_pod(e2e: Platform, namespaces: None) -> Iterator[dict[str, Any]]:
    """TCPXO's pod as its fabricPod has it, stored in the GPUDirect namespace, never scheduled."""
    stored = fabric_case("h100", lambda p: p["spec"].__setitem__("schedulingGates", [{"name": "e2e.mlplatform.io/hold"}]))
    stored["metadata"].update(name="gpudirect", namespace=FABRIC_NAMESPACE)
    e2e.cluster.create(stored)
    try:
        yield stored
    finally:
        e2e.cluster.request("DELETE", e2e.cluster.path_of(stored), {"gracePeriodSeconds": 0})


@pytest.mark.parametrize("target,admitted", [("nccl", True), ("tcpxo-daemon", False)])
def test_no_ephemeral_container_joins_the_daemons_processes(e2e: Platform, stored_gpudirect_pod: dict[str, Any],
                                                           target: str, admitted: bool):
    debugged = e2e.cluster.get(e2e.cluster.path_of(stored_gpudirect_pod))
    debugged["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36",
                                                "targetContainerName": target}]
    try:
        e2e.cluster.request("PUT", e2e.cluster.path_of(stored_gpudirect_pod) + "/ephemeralcontainers?dryRun=All",
                            debugged)
        refusal = None
    except ApiError as refused:
        refusal = str(refused)
    assert (refusal is None) is admitted, refusal
    if not admitted:
        assert refused_by_policy(refusal, FABRIC_POLICY), refusal


def test_no_exec_reaches_the_daemon(e2e: Platform, stored_gpudirect_pod: dict[str, Any]):
    # The API server judges a CONNECT before it looks for the pod's node: an unscheduled pod is enough.
    def exec_into(container: str) -> str:
        try:
            e2e.cluster.request("POST", e2e.cluster.path_of(stored_gpudirect_pod) +
                                f"/exec?container={container}&command=sh&stdout=true", None)
        except ApiError as refused:
            return str(refused)
        raise AssertionError(f"exec into {container} of a pod on no node went through")

    e2e.cluster.wait(f"{FABRIC_CONNECT_POLICY} judging exec", lambda: refused_by_policy(
        exec_into("tcpxo-daemon"), FABRIC_CONNECT_POLICY) or None, timeout=60)
    assert not refused_by_policy(exec_into("nccl"), FABRIC_CONNECT_POLICY)
