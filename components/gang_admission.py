"""What the API server asks of multi-node work in team namespaces: whole nodes of one multi-node pool, a topology
requirement Kueue can place, and the team's queue.

Kueue admits work on a multi-node pool only with a topology assignment (its flavor names the cluster's Topology,
components/queues.py), so a job there that names no topology level would wait forever, and one that asks for
part of a node would strand the rest of a node whose fabric serves whole-node jobs. These policies say so when
the Job, JobSet or pod is submitted, each with what to change. They judge every pod template of the object:
a Pod's own, a Job's, and each replicated Job's of a JobSet.
"""

from __future__ import annotations

from typing import Literal

import pulumi
from pulumi_kubernetes.admissionregistration.v1 import NamedRuleWithOperationsArgs

from components.admission import JOBSET_VERSION, QUEUE_LABEL, Check, Policy, Subject, _cel, declare_policy
from config.queues import QueueLayout
from core.handle import ClusterHandle
from core.vocabulary import (DEFAULT_LOCAL_QUEUE, GPU_RESOURCE, JOBSET_GROUP, POOL_LABEL, PREFERRED_TOPOLOGY,
                             REQUIRED_TOPOLOGY, TEAM_LABEL, UNCONSTRAINED_TOPOLOGY)

TOPOLOGY_ANNOTATIONS = (REQUIRED_TOPOLOGY, PREFERRED_TOPOLOGY, UNCONSTRAINED_TOPOLOGY)
JOBSET_QUEUE_POLICY = "jobset-through-team-queue"


def gang_variables(layout: QueueLayout, levels: tuple[str, ...]) -> list[tuple[str, str]]:
    multi_node = {pool.name: pool.node_gpus for pool in layout.pools.values() if pool.multi_node}
    return [
        # Every pod template of the object, told apart by shape: a JobSet's replicated Jobs, a Job, a Pod.
        ("templates", "has(object.spec.replicatedJobs) ? "
                      "object.spec.replicatedJobs.map(r, r.template.spec.template) : "
                      "has(object.spec.template) ? [object.spec.template] : [object]"),
        # What a controller owns (a Job's pods, a JobSet's Jobs) was judged as its owner.
        ("owned", "has(object.metadata.ownerReferences) && "
                  "object.metadata.ownerReferences.exists(o, has(o.controller) && o.controller)"),
        ("multiNodePools", _cel(multi_node)),
        ("levels", _cel(list(levels))),
        ("labels", "has(object.metadata.labels) ? object.metadata.labels : {}"),
        ("team", f"has(namespaceObject.metadata.labels) && {_cel(TEAM_LABEL)} in namespaceObject.metadata.labels "
                 f"? namespaceObject.metadata.labels[{_cel(TEAM_LABEL)}] : ''"),
    ]


# CEL over one pod template `t`: the pool its nodeSelector picks, its annotations, its containers asking for GPUs.
_POOL = f"(has(t.spec.nodeSelector) && {_cel(POOL_LABEL)} in t.spec.nodeSelector ? t.spec.nodeSelector[{_cel(POOL_LABEL)}] : '')"
_ANNOTATIONS = "(has(t.metadata) && has(t.metadata.annotations) ? t.metadata.annotations : {})"
_GPU_CONTAINERS = (f"t.spec.containers.filter(c, has(c.resources) && has(c.resources.limits) && "
                   f"{_cel(GPU_RESOURCE)} in c.resources.limits)")
_ON_MULTI_NODE = f"{_POOL} in variables.multiNodePools"
_NAMES_TOPOLOGY = f"[{_cel(REQUIRED_TOPOLOGY)}, {_cel(PREFERRED_TOPOLOGY)}].exists(a, a in {_ANNOTATIONS})"


def gang_policies(layout: QueueLayout, levels: tuple[str, ...]) -> list[Policy]:
    pools = ", ".join(f"{p.name} ({p.node_gpus} GPUs per node)" for p in layout.pools.values() if p.multi_node)
    listed = ", ".join(levels)
    per_node = "variables.multiNodePools[" + _POOL + "]"
    return [
        Policy("multi-node-whole-nodes", (Check(
            f"variables.owned || variables.templates.all(t, !({_ON_MULTI_NODE}) || (size({_GPU_CONTAINERS}) == 1 "
            f"&& int(string({_GPU_CONTAINERS}[0].resources.limits[{_cel(GPU_RESOURCE)}])) == {per_node}))",
            f"Pods on a multi-node pool take whole nodes: one container of each pod asks for all of its node's "
            f"GPUs in resources.limits ({GPU_RESOURCE}; multi-node pools: {pools}). A node's fabric serves the "
            "whole node, and a part left over would strand the rest: ask for every GPU of the node per pod, and "
            "more pods for more GPUs, or use another pool for smaller work."),)),
        Policy("multi-node-names-its-topology", (
            Check(f"variables.owned || variables.templates.all(t, !({_ON_MULTI_NODE}) || "
                  f"{_cel(list(TOPOLOGY_ANNOTATIONS))}.exists(a, a in {_ANNOTATIONS}))",
                  f"Kueue admits work on a multi-node pool ({pools}) only by the network topology: annotate the "
                  f"pod template with {REQUIRED_TOPOLOGY}: <level> to start all its pods within one domain of that "
                  f"level (levels, broadest first: {listed}), or {PREFERRED_TOPOLOGY}: <level> to let it spread "
                  f"when one domain lacks room (or {UNCONSTRAINED_TOPOLOGY}: \"true\" for single-node work)."),
            Check(f"variables.owned || variables.templates.all(t, [{_cel(REQUIRED_TOPOLOGY)}, "
                  f"{_cel(PREFERRED_TOPOLOGY)}].all(a, !(a in {_ANNOTATIONS}) || "
                  f"{_ANNOTATIONS}[a] in variables.levels))",
                  f"The topology level names no level of the cluster's topology. Name one of: {listed} "
                  "(broadest first; kubernetes.io/hostname keeps all pods on one node)."),
            Check(f"variables.owned || variables.templates.all(t, !({_NAMES_TOPOLOGY}) || {_ON_MULTI_NODE})",
                  f"A topology requirement places pods on a multi-node pool: set the pod template's nodeSelector "
                  f"{POOL_LABEL} to one of {pools or 'none (this cluster has no multi-node pool)'}."),
        )),
        Policy(JOBSET_QUEUE_POLICY, (Check(
            f"!({_cel(QUEUE_LABEL)} in variables.labels) || "
            f"variables.labels[{_cel(QUEUE_LABEL)}] in [variables.team, {_cel(DEFAULT_LOCAL_QUEUE)}]",
            f"A JobSet in a team namespace goes through the team's Kueue queue: label it {QUEUE_LABEL}: <team>, "
            f"or leave the label off for the namespace's {DEFAULT_LOCAL_QUEUE!r} queue.",
            f"'A JobSet in a team namespace goes through the team\\'s Kueue queue: label it {QUEUE_LABEL}: ' + "
            f"string(variables.team) + ', or leave the label off for the namespace\\'s {DEFAULT_LOCAL_QUEUE} "
            "queue.'"),)),
    ]


class GangAdmission(pulumi.ComponentResource):
    """The multi-node policies, bound to every team namespace of every platform stack: where the cluster has no
    multi-node pool, they refuse topology requirements, which no queue there could admit."""

    def __init__(self, name: str, cluster: ClusterHandle, layout: QueueLayout, *,
                 enforcement: Literal["deny", "warn"], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlplatform:admission:GangAdmission", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        variables = tuple(gang_variables(layout, cluster.topology_levels))
        rules = [NamedRuleWithOperationsArgs(api_groups=[group], api_versions=[version], operations=["CREATE"],
                                             resources=[resource])
                 for group, version, resource in (("", "v1", "pods"), ("batch", "v1", "jobs"),
                                                  (JOBSET_GROUP, JOBSET_VERSION, "jobsets"))]
        policies = gang_policies(layout, cluster.topology_levels)
        for policy in policies:
            # The queue rule is about JobSets alone (the team policies judge Pods and Jobs): matched to JobSets
            # only, its expression type-checks against the kind it reads.
            subject = Subject(rules=tuple(rules[-1:] if policy.name == JOBSET_QUEUE_POLICY else rules),
                              match_conditions=(), variables=variables)
            declare_policy(f"{name}-{policy.name}", policy, subject, enforcement=enforcement, opts=child)
        self.register_outputs({"policies": [f"mlplatform-{p.name}" for p in policies]})
