"""The cluster of a platform stack, as a team stack reaches it: by StackReference to the platform's outputs."""

from __future__ import annotations

import pulumi
from pulumi.runtime.sync_await import _sync_await

from config.errors import PROJECT, ConfigError, stack_file
from core import outputs
from core.provider import explicit_provider

# What a team stack reads of its platform stack: all a deployed platform exports.
NEEDED = (outputs.CLUSTER_NAME, outputs.KUBECONFIG, outputs.TEAMS, outputs.MONITORING_NAMESPACE)


def check_deployed(platform_stack: str, stack: str, exported: dict[str, object] | None) -> None:
    """ConfigError for a team stack previewed before its platform stack was deployed: the platform has no
    outputs yet, and the SDK's require_output would stop the program with a bare KeyError and a traceback."""
    if missing := [name for name in NEEDED if (exported or {}).get(name) is None]:
        raise ConfigError(f"{stack_file(stack)}: {PROJECT}:platformStack: {platform_stack} has no "
                          f"{', '.join(missing)} output: it is not deployed yet. Deploy it first (`pulumi up "
                          f"--stack {platform_stack}`, or a push to main), then preview or deploy {stack}")


class PlatformStackCluster(pulumi.ComponentResource):
    def __init__(self, name: str, platform_stack: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:cluster:PlatformStackCluster", name, None, opts)
        reference = pulumi.StackReference(f"{name}-outputs", stack_name=platform_stack,
                                          opts=pulumi.ResourceOptions(parent=self))
        # Checked before anything is declared on the platform's cluster, as the SDK's own synchronous invokes
        # wait for their answer: raised from an apply instead, the error would fail every resource waiting on
        # those outputs, each with its own traceback.
        check_deployed(platform_stack, pulumi.get_stack(), _sync_await(reference.outputs.future()))
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
        # The cluster's GPU pools as described (their NCCL settings among them).
        self.gpu_pools = reference.get_output(outputs.GPU_POOLS)
        self.register_outputs({"clusterName": self.cluster_name})
