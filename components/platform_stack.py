"""The cluster of a platform stack, as a team stack reaches it: by StackReference to the platform's outputs."""

from __future__ import annotations

import pulumi

from core import outputs
from core.provider import explicit_provider


class PlatformStackCluster(pulumi.ComponentResource):
    def __init__(self, name: str, platform_stack: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:PlatformStackCluster", name, None, opts)
        reference = pulumi.StackReference(f"{name}-outputs", stack_name=platform_stack,
                                          opts=pulumi.ResourceOptions(parent=self))
        # The platform's cluster, by the identity its provider carries (its name, for a platform deployed before
        # it exported one): a new kubeconfig for the same cluster replaces nothing.
        identity = pulumi.Output.all(reference.get_output(outputs.CLUSTER_IDENTITY),
                                     reference.require_output(outputs.CLUSTER_NAME)).apply(
            lambda ids: str(ids[0] or ids[1]))
        self.provider = explicit_provider(self, name, reference.require_output(outputs.KUBECONFIG), identity=identity)
        self.cluster_name = reference.require_output(outputs.CLUSTER_NAME)
        # Every team's budget and where monitoring runs, as the platform stack exported them.
        self.budgets = reference.require_output(outputs.TEAMS)
        self.monitoring_namespace = reference.require_output(outputs.MONITORING_NAMESPACE)
        self.register_outputs({"clusterName": self.cluster_name})
