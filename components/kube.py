"""Small helpers for what several components declare the same way: their namespace and their Helm release."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import weakref
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.helm.v3 import RepositoryOptsArgs
from pulumi_kubernetes.core.v1 import ResourceQuotaSpecArgs, ScopedResourceSelectorRequirementArgs, ScopeSelectorArgs
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from versions import KUBERNETES_VERSION, Chart
from core.vocabulary import PLATFORM_LABEL

CRITICAL_PODS = "15000"


@dataclass(frozen=True)
class DaemonSetRef:
    """Where a per-node agent runs, so that monitoring can tell when it is down."""

    namespace: str
    name: str


@dataclass(frozen=True)
class GpuMetricsSource:
    """The Service that serves DCGM metrics (NVIDIA's exporter, or a simulation of it), for monitoring to scrape."""

    namespace: str
    selector: dict[str, str]
    port: str


class KubernetesObject(pulumi.CustomResource):
    """A custom resource with fields beside `spec` (Kueue's WorkloadPriorityClass has a top-level `value`),
    which apiextensions.CustomResource cannot express; the provider applies it the same way."""

    def __init__(self, resource_name: str, *, api_version: str, kind: str, name: str, fields: dict[str, Any],
                 opts: pulumi.ResourceOptions) -> None:
        super().__init__(f"kubernetes:{api_version}:{kind}", resource_name,
                         {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **fields}, opts)


def pod_security_labels(enforce: str, *, warn: str = "restricted") -> dict[str, str]:
    # Pinned to the cluster's minor version, so that a control-plane upgrade cannot tighten a policy unseen.
    version = f"v{KUBERNETES_VERSION}"
    labels = {"pod-security.kubernetes.io/enforce": enforce, "pod-security.kubernetes.io/enforce-version": version}
    for mode in ("warn", "audit"):
        labels |= {f"pod-security.kubernetes.io/{mode}": warn, f"pod-security.kubernetes.io/{mode}-version": version}
    return labels


def platform_namespace(resource_name: str, name: str, *, component: str, pod_security: str,
                       opts: pulumi.ResourceOptions,
                       critical_priority_classes: Sequence[str] = ()) -> k8s.core.v1.Namespace:
    """A namespace for one of the platform's own components, declared (not left to Helm) so its labels are ours.

    `critical_priority_classes` are the system-*-critical classes its pods run at. Kubernetes lets a cluster
    limit those to kube-system unless a ResourceQuota in the namespace allows them ("Limit Priority Class
    consumption by default"), and GKE does: without the quota, their pods are refused.
    """
    namespace = k8s.core.v1.Namespace(
        resource_name,
        metadata=ObjectMetaArgs(name=name, labels={PLATFORM_LABEL: component} | pod_security_labels(
            pod_security, warn=pod_security)),
        opts=opts,
    )
    if critical_priority_classes:
        _GUARD_RAILS[namespace] = k8s.core.v1.ResourceQuota(
            f"{resource_name}-critical-pods",
            metadata=ObjectMetaArgs(name="critical-pods", namespace=name, labels={PLATFORM_LABEL: component}),
            spec=ResourceQuotaSpecArgs(
                # A permission more than a limit: as many pods as GKE's largest Standard cluster has nodes.
                hard={"pods": CRITICAL_PODS},
                scope_selector=ScopeSelectorArgs(match_expressions=[ScopedResourceSelectorRequirementArgs(
                    scope_name="PriorityClass", operator="In", values=sorted(critical_priority_classes))])),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace])),
        )
    return namespace


# What admits the pods of each platform namespace besides the namespace itself (its critical-pods quota): a
# release into it waits for them, or its pods are refused until the controllers retry.
_GUARD_RAILS: weakref.WeakKeyDictionary[k8s.core.v1.Namespace, pulumi.Resource] = weakref.WeakKeyDictionary()


# What a team's `edit` and `view` groups may do with a kind the platform installs, aggregated into Kubernetes'
# built-in roles (bound in every team namespace) rather than given by a binding of its own.
TEAM_VERBS = {"edit": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
              "view": ["get", "list", "watch"]}


def team_roles(name: str, what: str, *, api_group: str, resources: Sequence[str],
                opts: pulumi.ResourceOptions) -> None:
    """ClusterRoles `mlplatform-<what>-edit` and `-view` (resources `<name>-<what>-edit`, `-view`), aggregated
    into `edit` and `view`."""
    for role, verbs in TEAM_VERBS.items():
        k8s.rbac.v1.ClusterRole(
            f"{name}-{what}-{role}",
            metadata=ObjectMetaArgs(name=f"mlplatform-{what}-{role}", labels={
                f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"}),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[api_group], resources=list(resources), verbs=verbs)],
            opts=opts)


def helm_release(resource_name: str, *, chart: Chart, namespace: k8s.core.v1.Namespace | str,
                 values: dict[str, Any], release_name: str | None = None, skip_crds: bool = False,
                 local_charts: str | None = None, opts: pulumi.ResourceOptions) -> k8s.helm.v3.Release:
    """A Helm release of a pinned chart (`versions.py`), into a namespace the platform owns (or kube-system).

    `local_charts` (the ClusterHandle's) is a folder holding the chart at its pin, for clusters that reach no
    chart repository."""
    owned = isinstance(namespace, k8s.core.v1.Namespace)
    local = str(Path(local_charts) / f"{chart.name}-{chart.version}") if local_charts else None
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name or resource_name,
        # Helm takes an OCI chart as one reference, a repository chart as a name in a repository.
        chart=local or (f"{chart.repository}/{chart.name}" if chart.is_oci else chart.name),
        version=chart.version,
        repository_opts=None if chart.is_oci or local else RepositoryOptsArgs(repo=chart.repository),
        namespace=namespace.metadata.name if owned else namespace,
        values=values,
        cleanup_on_fail=True,
        # A chart whose CRDs another release installs (Helm never upgrades a crds/ folder) skips its own.
        skip_crds=skip_crds or None,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            depends_on=[namespace, *([_GUARD_RAILS[namespace]] if namespace in _GUARD_RAILS else [])] if owned
            else [])),
    )
