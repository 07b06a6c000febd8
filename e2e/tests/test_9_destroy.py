"""`pulumi destroy` of the platform ends within its bound, and nothing of the stack remains."""

from __future__ import annotations

from e2e.lifecycle import Platform


def test_destroy_leaves_nothing(e2e: Platform):
    e2e.pulumi("destroy", "--yes", "--skip-preview", step="destroy")
    assert e2e.pulumi.resources() == []
    cluster = e2e.cluster
    left = [ns["metadata"]["name"] for ns in cluster.get("/api/v1/namespaces")["items"]
            if ns["metadata"]["name"] not in ("default", "kube-system", "kube-public", "kube-node-lease")]
    assert left == [], f"namespaces left (or stuck Terminating): {left}"
    crds = [c["metadata"]["name"] for c in cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]]
    assert crds == [], f"CRDs left: {crds}"
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations", "validatingadmissionpolicies",
                 "validatingadmissionpolicybindings"):
        left = [o["metadata"]["name"] for o in cluster.get(f"/apis/admissionregistration.k8s.io/v1/{kind}")["items"]]
        assert left == [], f"{kind} left: {left}"
