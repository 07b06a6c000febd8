"""JobSet (kubernetes-sigs/jobset): multi-node training as one object, admitted by Kueue as one gang.

A JobSet is a group of indexed Jobs with a headless Service, so that the pods of a distributed run (a torchrun
of N nodes) find each other by stable names; Kueue's `jobset.x-k8s.io/jobset` integration queues the whole
JobSet as one Workload, admitted all at once or not at all. The controller runs like Kueue's: on the system
pool, two replicas that both serve its webhooks, and webhooks that fail closed only in team namespaces.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.admissionregistration.v1 import MutatingWebhookPatchArgs, ValidatingWebhookPatchArgs
from pulumi_kubernetes.meta.v1 import ObjectMetaPatchArgs

from components import sizing
from components.kube import helm_release, platform_namespace
from components.queues import TEAM_NAMESPACES
from core.handle import ClusterHandle
from core.vocabulary import JOBSET_NAMESPACE
from versions import JOBSET, JOBSET_IMAGE, JOBSET_IMAGE_TAG

RELEASE = "jobset"
# The chart's webhooks (templates/webhook/manifests.yaml at 0.12.0), per configuration: its JobSet defaulting
# and validation, and the pod webhooks that place and check the pods of JobSets. The chart gives them no
# namespaceSelector and no value to set one, so the platform patches one in after the release.
WEBHOOKS = {
    "jobset-mutating-webhook-configuration": ("mutate-jobset-x-k8s-io-v1alpha2-jobset.x-k8s.io",
                                              "mutate--v1-pod.x-k8s.io"),
    "jobset-validating-webhook-configuration": ("validate-jobset-x-k8s-io-v1alpha2-jobset.x-k8s.io",
                                                "validate--v1-pod.x-k8s.io"),
}
# The chart's controller pods (its jobset.controller.selectorLabels), for spreading the replicas.
CONTROLLER_LABELS = {"app.kubernetes.io/name": "jobset", "app.kubernetes.io/instance": RELEASE,
                     "app.kubernetes.io/component": "controller"}


def jobset_values(cluster: ClusterHandle) -> dict[str, Any]:
    return {
        "image": {"repository": JOBSET_IMAGE, "tag": JOBSET_IMAGE_TAG, "pullPolicy": "IfNotPresent"},
        "controller": {
            # Its webhooks fail closed for JobSets and their pods: one restart or drained node must not stop
            # them. Both replicas serve the webhooks; leader election picks the one that reconciles.
            "replicas": 2,
            "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
            # The chart has no topologySpreadConstraints value; a preferred anti-affinity spreads the same way.
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                   "labelSelector": {"matchLabels": CONTROLLER_LABELS}}}]}},
            **cluster.system_placement(),
            "resources": sizing.JOBSET_CONTROLLER.resources(),
        },
    }


class JobSets(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, cluster: ClusterHandle, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:jobset:JobSets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        namespace = platform_namespace(f"{name}-namespace", JOBSET_NAMESPACE, component="jobset",
                                       pod_security="restricted", opts=child)
        self.release = helm_release(f"{name}-jobset", chart=JOBSET, namespace=namespace,
                                    values=jobset_values(cluster), release_name=RELEASE,
                                    local_charts=cluster.local_charts, opts=child)
        # Scoped as Kueue's job webhooks are (components/queues.py): a JobSet controller outage blocks JobSets
        # and their pods in team namespaces only. A server-side apply patch of the field the chart leaves unset:
        # Helm's upgrades keep it (a three-way merge leaves fields its manifests never set), and the controller's
        # certificate rotator updates only each webhook's caBundle. Forced: the API server defaults an unset
        # namespaceSelector to {} (everything), owned by whoever created the configuration (the release).
        after_release = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.release]))
        forced = {"pulumi.com/patchForce": "true"}
        selector = k8s.meta.v1.LabelSelectorPatchArgs(match_expressions=[
            k8s.meta.v1.LabelSelectorRequirementPatchArgs(**e) for e in TEAM_NAMESPACES["matchExpressions"]])
        (mutating, mutating_hooks), (validating, validating_hooks) = WEBHOOKS.items()
        k8s.admissionregistration.v1.MutatingWebhookConfigurationPatch(
            f"{name}-mutating-webhooks-scope", metadata=ObjectMetaPatchArgs(name=mutating, annotations=forced),
            webhooks=[MutatingWebhookPatchArgs(name=hook, namespace_selector=selector) for hook in mutating_hooks],
            opts=after_release)
        k8s.admissionregistration.v1.ValidatingWebhookConfigurationPatch(
            f"{name}-validating-webhooks-scope", metadata=ObjectMetaPatchArgs(name=validating, annotations=forced),
            webhooks=[ValidatingWebhookPatchArgs(name=hook, namespace_selector=selector)
                      for hook in validating_hooks],
            opts=after_release)
        self.register_outputs({"namespace": JOBSET_NAMESPACE})
