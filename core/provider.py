"""Cluster components: each creates (or adopts) a cluster and ends in a ClusterHandle."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_kubernetes as k8s
import yaml


def exec_kubeconfig(name: str, server: str, certificate_authority: str | None,
                    user_exec: dict[str, object]) -> str:
    """A kubeconfig whose user runs a credential plugin (aws eks get-token, gke-gcloud-auth-plugin): it
    authenticates as whoever runs it and holds no credentials itself. Without a certificate authority the
    server's certificate is checked against the system's trusted CAs."""
    cluster: dict[str, str] = {"server": server}
    if certificate_authority is not None:
        cluster["certificate-authority-data"] = certificate_authority
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": cluster}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                   **user_exec}}}],
    }, sort_keys=False)


def explicit_provider(cluster: pulumi.ComponentResource, name: str, kubeconfig: pulumi.Input[str],
                      ready: Sequence[pulumi.Resource] | None = None, *, identity: pulumi.Input[str],
                      context: str | None = None, delete_unreachable: bool | None = None) -> k8s.Provider:
    """The Kubernetes provider every resource on this cluster goes through; the default one is never used.

    `ready` is what must exist before anything is installed (nodes to run it, the network add-ons).

    `identity` names the cluster itself (its ARN, its GKE id, its name where nothing else does). Without it the
    provider replaces itself, and with it every namespace, PVC and release on the cluster, whenever the
    kubeconfig's server or CA changes or is unknown in a preview (pulumi-kubernetes' DiffConfig, provider.go at
    v4.25.0): a DNS endpoint toggled, a control-plane IP moved, a CA rotated. With it, only a new identity
    replaces it; setting it on an existing stack replaces nothing ("to make on-boarding less risky").
    """
    return k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig, enable_server_side_apply=True, context=context,
                        delete_unreachable=delete_unreachable, cluster_identifier=identity,
                        opts=pulumi.ResourceOptions(parent=cluster, depends_on=ready or []))
