"""Pod Security `baseline` by admission policy where a team namespace enforces `privileged` to admit GKE's GPUDirect
pods (components/pod_security.py): the same verdicts as Pod Security on every baseline check, and beyond baseline
exactly what each pool's fabricPod gives, no more."""

from __future__ import annotations

import copy
import re
from typing import Any

import celpy
import pytest
import yaml

import versions
from components.pod_security import (BASELINE_CAPABILITIES, BASELINE_SYSCTLS, BASELINE_VERSION, CONNECT_POLICY,
                                     POLICY, SELINUX_TYPES, allowance)
from core.vocabulary import POOL_LABEL, TEAM_LABEL
from synth import PROJECT_DIR
from synth.engine import Synthesis
from synth.gomodule import ModuleUnavailable, module_dir
from synth.render import stack_synthesis
from synth.schema import check_manifests
from tests.cel import admit, evaluate
from tests.clouds.gke.test_fabric import HIGH, MEGA, ULTRA
from tests.clouds.gke.test_gke import gke_cluster
from tests.conftest import synth_with, team
from tests.pod_security_cases import BASELINE, FABRIC, FABRIC_POOLS, fabric_case, fabric_pods, on_fabric, pod

VAP = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicy"
BINDING = "kubernetes:admissionregistration.k8s.io/v1:ValidatingAdmissionPolicyBinding"
NAMESPACE = "kubernetes:core/v1:Namespace"


@pytest.fixture(scope="module")
def gke() -> Synthesis:
    """A GKE stack with the three GPUDirect fabrics: research may use them all, TCPX's and RDMA's pools dedicated
    to it; `secure` (restricted) and `web` may use the TCPXO pool."""
    return synth_with(cluster=gke_cluster(gpuPools=[MEGA, HIGH, ULTRA], multiNetworking=True),
                      teams=[team("research", 16, queue={"gpus": {"h100": 16}, "dedicatedPools": ["h100x", "h200"]}),
                             team("secure", 8, podSecurity="restricted"), team("web", 8)],
                      capacity={"allowOvercommit": True})


def policy_of(synthesis: Synthesis) -> dict[str, Any]:
    (policy,) = [r.inputs for r in synthesis.of_type(VAP) if r.inputs["metadata"]["name"] == f"mlplatform-{POLICY}"]
    return policy


@pytest.fixture(scope="module")
def policy(gke) -> dict[str, Any]:
    return policy_of(gke)


def namespace(name: str = "research") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, TEAM_LABEL: name,
                                                  "pod-security.kubernetes.io/enforce": "privileged"}}}


def in_research(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "namespace": "research"}}


@pytest.mark.parametrize("obj,admitted", [(o, a) for _, o, a in BASELINE], ids=[c for c, _, _ in BASELINE])
def test_baseline_as_pod_security_has_it(policy, obj, admitted):
    decision = admit(policy, in_research(obj), namespace())
    assert decision.judged and decision.allowed is admitted, decision.failures
    # Each refusal names the Pod Security check it stands in for.
    assert all("Pod Security baseline (" in f for f in decision.failures)


@pytest.mark.parametrize("pool,change,admitted", [case[1:] for case in FABRIC], ids=[case[0] for case in FABRIC])
def test_a_gpudirect_pod_gets_exactly_its_pools_fabric(policy, pool, change, admitted):
    decision = admit(policy, in_research(fabric_case(pool, change)), namespace())
    assert decision.allowed is admitted, decision.failures


def test_every_fabric_pool_is_in_the_table_as_its_fabric_pod_output(gke, policy):
    # The pools the policy reads are the stack's own pools' fabricPod outputs, as a team reads them.
    pools = {p["name"]: p["fabricPod"] for p in gke.outputs["gpuPools"] if p["fabricPod"]}
    assert pools == fabric_pods()
    for name in FABRIC_POOLS:
        assert admit(policy, in_research(on_fabric(name, pools[name])), namespace()).allowed


def test_each_fabric_gives_the_pods_own_containers_only_what_google_s_pods_need():
    # From Google's test pods (clouds/gke/fabric.py): libraries and gIB read-only, TCPXO's aperture devices
    # writable (its LLCM maps them), IPC_LOCK on TCPX only; the daemon's /sys and /proc/sys are the daemon's.
    granted = {pool: allowance(fabric) for pool, fabric in fabric_pods().items()}
    assert {pool: (a.mounts, a.writable, a.capabilities) for pool, a in granted.items()} == {
        "h100x": (("gpudirect-nvidia-lib",), (), ("IPC_LOCK",)),
        "h100": (("gpudirect-nvidia-lib", "gpudirect-aperture-devices"), ("gpudirect-aperture-devices",), ()),
        "h200": (("gpudirect-nvidia-lib", "gpudirect-gib"), (), ())}
    assert {pool: a.daemon_capabilities for pool, a in granted.items()} == {
        "h100x": ("NET_ADMIN",), "h100": ("NET_ADMIN", "NET_BIND_SERVICE"), "h200": ()}
    assert granted["h200"].daemon_image == "" and granted["h100"].daemon_image == versions.GPUDIRECT_TCPXO_DAEMON_IMAGE


def ephemeral(obj: dict[str, Any], **container: Any) -> dict[str, Any]:
    debugged = copy.deepcopy(obj)
    debugged["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "busybox:1.36", **container}]
    return debugged


@pytest.mark.parametrize("container,admitted", [
    ({}, True),
    ({"volumeMounts": [{"name": "gpudirect-sys", "mountPath": "/sys"}]}, False),
    ({"volumeMounts": [{"name": "gpudirect-nvidia-lib", "mountPath": "/nccl", "readOnly": True}]}, False),
    ({"securityContext": {"capabilities": {"add": ["IPC_LOCK"]}}}, False),
    ({"securityContext": {"privileged": True}}, False),
    ({"targetContainerName": "nccl"}, True),
    # Into the daemon's processes, and through /proc the host folders they hold, as shareProcessNamespace would.
    ({"targetContainerName": "tcpx-daemon"}, False),
], ids=["plain", "the node's /sys", "the node's NCCL", "the fabric's capability", "privileged", "targeting NCCL",
        "targeting the daemon"])
def test_an_ephemeral_container_gets_baseline_only(policy, container, admitted):
    # `kubectl debug` on a GPUDirect pod: the pool's share is for the pod's own containers.
    stored = in_research(on_fabric("h100x"))
    decision = admit(policy, ephemeral(stored, **container), namespace(), old=stored,
                     sub_resource="ephemeralcontainers")
    assert decision.judged and decision.allowed is admitted, decision.failures


def test_an_update_is_judged_as_pod_security_judges_one(policy):
    # Only a new image, or a container added: a stored pod's other updates (a finalizer's removal, Kueue's
    # ungating) go through even when the policy has changed since the pod was admitted.
    stored = in_research(pod(hostNetwork=True))
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"stage": "eval"}
    relabelled["metadata"]["finalizers"] = []
    assert not admit(policy, relabelled, namespace(), old=stored).judged
    reimaged = copy.deepcopy(stored)
    reimaged["spec"]["containers"][0]["image"] = "busybox:1.36"
    assert not admit(policy, reimaged, namespace(), old=stored).allowed
    plain = in_research(on_fabric("h100"))
    swapped = copy.deepcopy(plain)
    swapped["spec"]["initContainers"][0]["image"] = "busybox:1.36"
    # The daemon's container on another image loses the daemon's share.
    assert not admit(policy, swapped, namespace(), old=plain).allowed


@pytest.mark.parametrize("options,admitted", [
    ({"container": "tcpx-daemon", "command": ["sh"]}, False), ({"container": "tcpxo-daemon"}, False),
    ({"container": "nccl", "command": ["sh"]}, True), ({"command": ["sh"]}, True)],
    ids=["TCPX's daemon", "TCPXO's daemon", "the pod's own", "no container named"])
def test_no_exec_or_attach_reaches_a_gpudirect_daemon(gke, options, admitted):
    # A shell in the daemon's container would hold its capabilities and host folders without being the daemon.
    (connect,) = [r.inputs for r in gke.of_type(VAP)
                  if r.inputs["metadata"]["name"] == f"mlplatform-{CONNECT_POLICY}"]
    assert [(r["resources"], r["operations"]) for r in connect["spec"]["matchConstraints"]["resourceRules"]] == [
        (["pods/exec", "pods/attach"], ["CONNECT"])]
    (check,) = connect["spec"]["validations"]
    assert bool(evaluate(check["expression"], {"object": celpy.json_to_cel(
        {"kind": "PodExecOptions", "apiVersion": "v1", **options})})) is admitted
    (binding,) = [r.inputs for r in gke.of_type(BINDING)
                  if r.inputs["metadata"]["name"] == f"mlplatform-{CONNECT_POLICY}"]
    assert binding["spec"]["validationActions"] == ["Deny", "Audit"]


def test_the_policy_guards_every_team_namespace_that_enforces_less_than_baseline(gke, policy, local_synth):
    # Pods and their ephemeral containers, on every stack, always refused (it stands in for an enforcement).
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert [(r["resources"], r["operations"]) for r in rules] == [(["pods", "pods/ephemeralcontainers"],
                                                                   ["CREATE", "UPDATE"])]
    assert policy["spec"]["failurePolicy"] == "Fail"
    (binding,) = [r.inputs for r in gke.of_type(BINDING) if r.inputs["metadata"]["name"] == f"mlplatform-{POLICY}"]
    assert binding["spec"]["validationActions"] == ["Deny", "Audit"]
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": TEAM_LABEL, "operator": "Exists"},
        {"key": "pod-security.kubernetes.io/enforce", "operator": "NotIn", "values": ["baseline", "restricted"]}]
    assert [r.inputs["spec"]["failurePolicy"] for r in local_synth.of_type(VAP)
            if r.inputs["metadata"]["name"] == f"mlplatform-{POLICY}"] == ["Fail"]


def labels_of(synthesis: Synthesis) -> dict[str, dict[str, str]]:
    return {r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"] for r in synthesis.of_type(NAMESPACE)}


def test_only_a_baseline_team_that_may_use_a_gpudirect_pool_enforces_privileged(gke, local_synth):
    labels = labels_of(gke)
    enforced = {name: labels[name]["pod-security.kubernetes.io/enforce"] for name in ("research", "secure", "web")}
    # web may use the TCPXO pool, which research is guaranteed but does not keep to itself.
    assert enforced == {"research": "privileged", "secure": "restricted", "web": "privileged"}
    # Still warned and audited at restricted, as every team namespace is.
    assert labels["research"]["pod-security.kubernetes.io/warn"] == "restricted"
    # A stack without GPUDirect pools keeps its teams' own levels.
    assert {v["pod-security.kubernetes.io/enforce"] for n, v in labels_of(local_synth).items()
            if TEAM_LABEL in v} == {"baseline", "restricted"}


def test_a_namespace_stops_enforcing_baseline_only_once_the_policy_is_in_place(gke):
    # Created after the policy and its binding, deleted before them.
    (component,) = gke.of_type("mlplatform:podsecurity:TeamPodSecurity")
    guards = {r.urn for r in gke.children_of(component.urn)}
    namespaces = {r.inputs["metadata"]["name"]: set(r.depends_on) for r in gke.of_type(NAMESPACE)}
    # The two policies (pods, and exec into a daemon) and their bindings.
    assert len(guards) == 4 and all(guards <= namespaces[team] for team in ("research", "web", "secure"))


def test_gcp_devs_research_namespace_admits_its_gpudirect_pods_and_nothing_more():
    # The done-when of multi-node training on gcp-dev: research's two-node gang on the A3 Mega pool, admitted by
    # Kueue, is no longer refused at pod creation; its namespace admits Google's pods and refuses the rest.
    gcp_dev = stack_synthesis("gcp-dev")
    assert not [w for w in gcp_dev.warnings if "refused at creation" in w]
    assert labels_of(gcp_dev)["research"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (h100,) = [p for p in gcp_dev.outputs["gpuPools"] if p["name"] == "h100"]
    gang_pod = in_research(on_fabric("h100", h100["fabricPod"]))
    assert admit(policy_of(gcp_dev), gang_pod, namespace()).allowed
    gang_pod["spec"]["volumes"].append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    assert not admit(policy_of(gcp_dev), gang_pod, namespace()).allowed


def test_a_restricted_team_that_may_use_a_gpudirect_pool_is_warned(gke):
    (warning,) = [w for w in gke.warnings if "refused at creation" in w]
    assert warning.startswith("mlplatform:teams[1].podSecurity: the team may use multi-node pool 'h100'")
    assert "Set podSecurity: baseline" in warning


def test_the_cases_are_valid_kubernetes_pods(upstream):
    objects = [in_research(o) for _, o, _ in BASELINE] + [in_research(fabric_case(p, c)) for _, p, c, _ in FABRIC]
    report = check_manifests(objects)
    assert report.errors == [] and report.unchecked == []


def test_the_policy_is_read_from_the_pod_security_the_namespaces_pin():
    # pod_security_labels pins the namespaces' Pod Security to the cluster's minor version: a bump must re-read
    # the checks (and the e2e API server's version, whose Pod Security make e2e compares the policy with).
    assert BASELINE_VERSION == versions.KUBERNETES_VERSION == "1.34"
    assert versions.POD_SECURITY_ADMISSION[1] == "v0" + versions.E2E_KUBERNETES[2:]


def _go_strings(source: str, variable: str) -> set[str]:
    body = re.search(rf"{variable}\s*=\s*[\w.]+\((.*?)\)", source, re.S)
    assert body, variable
    return set(re.findall(r'"([^"]*)"', body.group(1)))


def test_the_allowed_values_are_pod_security_admissions_own():
    # Read from the module's Go source at the pin (Go's module proxy, cached outside the repo).
    try:
        folder = module_dir(*versions.POD_SECURITY_ADMISSION) / "policy"
    except ModuleUnavailable as absent:
        pytest.skip(f"needs {versions.POD_SECURITY_ADMISSION[0]} from Go's module proxy: {absent}")
    capabilities = (folder / "check_capabilities_baseline.go").read_text()
    assert _go_strings(capabilities, "capabilities_allowed_1_0") == set(BASELINE_CAPABILITIES)
    sysctls = (folder / "check_sysctls.go").read_text()
    newest = set().union(*(_go_strings(sysctls, f"sysctlsAllowedV1Dot{v}") for v in ("0", "27", "29", "32")))
    assert newest == set(BASELINE_SYSCTLS) and "MinimumVersion: api.MajorMinorVersion(1, 32)" in sysctls
    selinux = (folder / "check_seLinuxOptions.go").read_text()
    assert _go_strings(selinux, "selinuxAllowedTypes1_31") == set(SELINUX_TYPES)
    # No baseline check is left out (restricted's are the other files).
    baseline = {re.search(r'ID:\s+"?(\w+)', p.read_text()).group(1) for p in folder.glob("check_*.go")  # type: ignore[union-attr]
                if not p.name.endswith("_test.go") and "api.LevelBaseline" in p.read_text()}
    assert len(baseline) == 12, baseline


def test_docs_say_how_a_gpudirect_pod_passes():
    page = (PROJECT_DIR / "docs" / "multi-node.md").read_text()
    assert "## Pod Security on GPUDirect pools" in page and f"mlplatform-{POLICY}" in page
    assert POOL_LABEL in page
