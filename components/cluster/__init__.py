"""Cluster components: each creates (or adopts) a cluster and ends in a ClusterHandle."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s


def explicit_provider(cluster: pulumi.ComponentResource, name: str, kubeconfig: pulumi.Input[str],
                      ready: list[pulumi.Resource] | None = None, **settings: object) -> k8s.Provider:
    """The Kubernetes provider every resource on this cluster goes through; the default one is never used.

    `ready` is what must exist before anything is installed (nodes to run it, the network add-ons).
    """
    return k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig, enable_server_side_apply=True,
                        opts=pulumi.ResourceOptions(parent=cluster, depends_on=ready or []), **settings)
