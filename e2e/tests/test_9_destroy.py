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
    # Helm installs kube-prometheus-stack's and JobSet's CRDs from their crds/ folders, and never deletes those:
    # deleting a CRD deletes every object of it in the cluster, teams' ServiceMonitors and JobSets and other
    # operators' included. They are the one thing left, and they must hold nothing of the stack.
    crds = cluster.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")["items"]
    kept = [c for c in crds if c["spec"]["group"] in ("monitoring.coreos.com", "jobset.x-k8s.io")]
    assert [c["metadata"]["name"] for c in crds if c not in kept] == []
    for crd in kept:
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
        objects = cluster.get(f"/apis/{crd['spec']['group']}/{version}/{crd['spec']['names']['plural']}")["items"]
        assert objects == [], f"{crd['metadata']['name']} still holds {[o['metadata']['name'] for o in objects]}"
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations", "validatingadmissionpolicies",
                 "validatingadmissionpolicybindings"):
        left = [o["metadata"]["name"] for o in cluster.get(f"/apis/admissionregistration.k8s.io/v1/{kind}")["items"]]
        assert left == [], f"{kind} left: {left}"
