"""`pulumi preview` with the policy pack, `pulumi up`, a preview that must show no changes, and what the API
server then holds: the real engine, provider and API server, its CEL type checker included."""

from __future__ import annotations

from typing import Any

from core.vocabulary import TEAM_LABEL
from e2e.cluster import has_condition
from e2e.lifecycle import Platform

TEAMS = ("research", "inference")  # vision's namespaces come from its own stack


def test_preview_with_the_policy_pack_passes(e2e: Platform):
    # A mandatory violation fails the preview (exit 1); advisory ones are only listed.
    done = e2e.pulumi("preview", "--policy-pack", "policies", step="preview")
    assert "Loading policy packs...: done" in done.stdout


def test_up_creates_the_platform(e2e: Platform):
    e2e.pulumi("up", "--yes", "--skip-preview", step="up")
    outputs = e2e.pulumi.outputs()
    assert outputs["cloud"] == "existing" and outputs["clusterName"] == "e2e"


def test_a_second_preview_shows_no_changes(e2e: Platform):
    # A perpetual diff would replace or update something on every deploy.
    e2e.pulumi("preview", "--expect-no-changes", "--diff", step="preview")


def items(e2e: Platform, path: str) -> list[dict[str, Any]]:
    return e2e.cluster.get(path)["items"]


def test_team_namespaces_have_their_guard_rails(e2e: Platform):
    namespaces = {ns["metadata"]["name"]: ns for ns in items(e2e, "/api/v1/namespaces")}
    for team in TEAMS:
        labels = namespaces[team]["metadata"]["labels"]
        assert labels[TEAM_LABEL] == team
        assert labels["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")
        quota = items(e2e, f"/api/v1/namespaces/{team}/resourcequotas")
        hard = {key for q in quota for key in q["spec"]["hard"]}
        assert {"requests.nvidia.com/gpu", "requests.cpu", "requests.memory"} <= hard
        assert items(e2e, f"/api/v1/namespaces/{team}/limitranges")
        policies = items(e2e, f"/apis/networking.k8s.io/v1/namespaces/{team}/networkpolicies")
        assert any(p["spec"].get("podSelector") == {} and "Ingress" in p["spec"]["policyTypes"] for p in policies)
        bindings = items(e2e, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{team}/rolebindings")
        assert {b["roleRef"]["name"] for b in bindings} >= {"edit"}


def test_every_crd_is_established(e2e: Platform):
    crds = items(e2e, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    assert {c["spec"]["group"] for c in crds} >= {"kueue.x-k8s.io", "monitoring.coreos.com"}
    assert [c["metadata"]["name"] for c in crds if not has_condition(c, "Established")] == []


def test_every_cluster_queue_is_active(e2e: Platform):
    queues = items(e2e, "/apis/kueue.x-k8s.io/v1beta2/clusterqueues")
    assert {q["metadata"]["name"] for q in queues} >= set(TEAMS)
    e2e.cluster.wait("every ClusterQueue Active", lambda: all(
        has_condition(q, "Active") for q in items(e2e, "/apis/kueue.x-k8s.io/v1beta2/clusterqueues")) or None,
        timeout=60)


def test_the_api_server_type_checks_every_admission_policy_without_a_warning(e2e: Platform):
    # The real CEL type checker (cel-python, which the offline tests use, has none): a policy whose expression
    # does not type-check against the resources it matches carries a warning in its status.
    path = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    policies = items(e2e, path)
    assert policies, "the platform installs admission policies"

    def checked() -> bool | None:
        found = items(e2e, path)
        return all("typeChecking" in (p.get("status") or {}) for p in found) or None

    e2e.cluster.wait("every ValidatingAdmissionPolicy type-checked", checked, timeout=60)
    warnings = {p["metadata"]["name"]: p["status"]["typeChecking"].get("expressionWarnings")
                for p in items(e2e, path)}
    assert {name: w for name, w in warnings.items() if w} == {}


def test_a_new_api_server_address_replaces_nothing(e2e: Platform):
    """The same cluster reached by another address (a DNS endpoint toggled, an IP moved) is an update of the
    provider, never a replacement of it and of every resource on the cluster (clusterIdentifier)."""
    import json

    kubeconfig = e2e.cluster.kubeconfig
    original = kubeconfig.read_text()
    assert "https://127.0.0.1:" in original
    kubeconfig.write_text(original.replace("https://127.0.0.1:", "https://localhost:"))
    try:
        done = e2e.pulumi("preview", "--json", step="preview")
    finally:
        kubeconfig.write_text(original)
    steps = json.loads(done.stdout).get("steps") or []
    replaced = [s["urn"] for s in steps if s.get("op") in ("replace", "create-replacement", "delete-replaced")]
    assert replaced == []
    assert any(s["urn"].endswith("pulumi:providers:kubernetes::e2e-k8s") and s.get("op") == "update" for s in steps)
