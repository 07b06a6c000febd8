"""What the API server refuses and allows in team namespaces: CEL admission policies and the teams' extra rights.

Quotas and queues cap how much a team holds; these ValidatingAdmissionPolicies (built into Kubernetes, no
controller to run) keep each pod on the platform's lines: GPU nodes for GPU work, GPU work through the team's
queue, no system or foreign pools. Each message says what to change. They bind to every namespace that
carries the team label, team stacks' included; `enforcement` chooses Deny or Warn (both audited).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.admissionregistration.v1 import (
    MatchConditionArgs,
    MatchResourcesArgs,
    NamedRuleWithOperationsArgs,
    ValidatingAdmissionPolicyBindingSpecArgs,
    ValidatingAdmissionPolicySpecArgs,
    ValidationArgs,
    VariableArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, LabelSelectorRequirementArgs, ObjectMetaArgs

from core.vocabulary import (DEFAULT_LOCAL_QUEUE, GPU_TAINT, JOBSET_GROUP, KUEUE_NAMESPACE, KUEUE_SERVICE_ACCOUNT,
                             ML_PRIORITY_CLASSES, POOL_LABEL, SHARED_GPU_RESOURCE, SHARED_GPU_TAINT, TEAM_LABEL,
                             Taint)
from components.gpu_rules import SOURCE_LABEL
from components.kube import team_roles
from core.handle import ClusterHandle
from config.queues import QueueLayout

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# The JobSet API version the pinned JobSet serves (its chart's CRD at 0.12.0).
JOBSET_VERSION = "v1alpha2"
_AFFINITY = "variables.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
# The scheduling gate Kueue puts on every pod it manages and removes when the pod's workload is admitted.
KUEUE_GATE = "kueue.x-k8s.io/admission"
# Who Kueue is to the API server: its chart's controller-manager ServiceAccount.
KUEUE_USER = f"system:serviceaccount:{KUEUE_NAMESPACE}:{KUEUE_SERVICE_ACCOUNT}"
# A CEL predicate on a resource name `r`: whole GPUs, renamed time-sliced shares, MIG slices.
_IS_GPU = "(r == 'nvidia.com/gpu' || r.startsWith('nvidia.com/gpu.') || r.startsWith('nvidia.com/mig-'))"
# Environment variables by which NVIDIA's container toolkit hands a container devices or driver features
# (nvidia-container-toolkit internal/config/image: NVIDIA_VISIBLE_DEVICES and the variables that select GPUs,
# MIG control devices and IMEX channels, and the driver capabilities mounted with them). Under the device
# plugin's `envvar` strategy a container that sets NVIDIA_VISIBLE_DEVICES=all sees every GPU of its node.
NVIDIA_DEVICE_ENV = ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_MIG_CONFIG_DEVICES",
                     "NVIDIA_MIG_MONITOR_DEVICES", "NVIDIA_IMEX_CHANNELS")
# Pod-spec fields an UPDATE may change that decide where a pod runs, with the value their absence means. A
# gated pod may gain nodeSelector and affinity terms and lose gates, any pod may gain tolerations, and a
# suspended Job's template may change them all (Kubernetes' pod and Job update validation).
SCHEDULING_FIELDS = (("tolerations", "[]"), ("nodeSelector", "{}"), ("affinity", "{}"), ("schedulingGates", "[]"))


def _positive_gpus(resources: str) -> str:
    """A CEL predicate: the resource map asks for at least one GPU. The API server hands a policy quantities in
    canonical form, and refuses fractional or negative extended resources, so zero is always '0'."""
    return f"{resources}.exists(r, {_IS_GPU} && string({resources}[r]) != '0')"


def _cel(value: object) -> str:
    """A Python str, int, list or dict as a CEL literal."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
    if isinstance(value, bool) or not isinstance(value, (int, list, dict)):
        raise TypeError(f"no CEL literal for {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_cel(item) for item in value) + "]"
    return "{" + ", ".join(f"{_cel(k)}: {_cel(v)}" for k, v in sorted(value.items())) + "}"


@dataclass(frozen=True)
class Check:
    expression: str
    message: str
    # Evaluated for the message when present (the static message stays as a fallback).
    message_expression: str | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    checks: tuple[Check, ...]
    # Refused whatever the enforcement: what it catches can never run, and let through with a warning it would
    # only hold the team's queue quota until the scheduler or the device plugin fails it.
    always_deny: bool = False


def _field_or_empty(spec: str, field: str, empty: str) -> str:
    return f"(has({spec}.{field}) ? {spec}.{field} : {empty})"


def _scheduling_changed() -> str:
    """A CEL predicate on an UPDATE: a scheduling field of the pod, or of the Job's pod template, changes."""
    def differs(spec: str) -> str:
        return " || ".join(f"{_field_or_empty(f'object.{spec}', f, empty)} != "
                           f"{_field_or_empty(f'oldObject.{spec}', f, empty)}" for f, empty in SCHEDULING_FIELDS)
    return f"has(object.spec.template) ? ({differs('spec.template.spec')}) : ({differs('spec')})"


def _templates_scheduling_changed() -> str:
    """A CEL predicate on an UPDATE of a JobSet: a scheduling field of one of its pod templates changes. Never
    read on a CREATE, whose oldObject is null (the API server's CEL would absorb the errors of reading it in
    `CREATE || ...`; cel-python, which the tests evaluate with, fails on an error || error)."""
    def each(obj: str, field: str, empty: str) -> str:
        return f"{obj}.spec.replicatedJobs.map(r, {_field_or_empty('r.template.spec.template.spec', field, empty)})"
    changes = " || ".join(f"{each('object', f, empty)} != {each('oldObject', f, empty)}" for f, empty in SCHEDULING_FIELDS)
    return f"oldObject == null ? false : ({changes})"


def _unless_kueue(changed: str) -> str:
    return (f"(request.operation == 'UPDATE' && request.userInfo.username != {_cel(KUEUE_USER)} && "
            f"({changed}))")


def workload_match_conditions() -> list[tuple[str, str]]:
    """When the workload policies judge a request: every CREATE; an ephemeral container added to a pod; an
    UPDATE that moves a pod (or a Job's pods) elsewhere, unless Kueue makes it (it ungates pods and injects
    its flavors' node selectors, and must never be held up). Status updates and other edits are not judged.
    `subResource` is absent from the request of a main resource, hence has()."""
    return [("create-ephemeral-or-scheduling-update",
             "request.operation == 'CREATE' || "
             "(has(request.subResource) && request.subResource == 'ephemeralcontainers') || "
             f"{_unless_kueue(_scheduling_changed())}")]


def jobset_match_conditions() -> list[tuple[str, str]]:
    """When the workload policies judge a JobSet: its CREATE, and an UPDATE that moves the pods of one of its
    templates elsewhere, unless Kueue makes it. JobSet's webhook (v0.12.0, ValidateUpdate) keeps replicatedJobs
    immutable except while the JobSet is suspended or being suspended, when a template's labels, annotations,
    nodeSelector, tolerations and schedulingGates may change (for Kueue, which injects its flavor's there): so
    a member could move a suspended JobSet's pods as they could a suspended Job's."""
    return [("create-or-scheduling-update", f"request.operation == 'CREATE' || {_unless_kueue(_templates_scheduling_changed())}")]


def policy_variables(layout: QueueLayout, system_node_selector: Mapping[str, str],
                     system_taints: Sequence[Taint] = ()) -> list[tuple[str, str]]:
    """Named expressions every policy shares: the pod spec of a Pod or a Job, its GPU containers, its team."""
    shared = sorted(p.name for p in layout.pools.values() if p.shared)
    largest = {layout.pools[p].resource: 0 for p in layout.pools}
    for pool in layout.pools.values():
        largest[pool.resource] = max(largest[pool.resource], pool.node_gpus)
    username = "request.userInfo.username"
    return [
        # A Job's, Deployment's or StatefulSet's pods are its template's; told apart by shape, which needs no
        # apiVersion or kind in the object.
        ("spec", "has(object.spec.template) ? object.spec.template.spec : object.spec"),
        # What an UPDATE changes it from (nothing on a CREATE, whose oldObject is null).
        ("oldSpec", "oldObject == null ? {} : "
                    "(has(oldObject.spec.template) ? oldObject.spec.template.spec : oldObject.spec)"),
        ("containers", "variables.spec.containers + "
                       "(has(variables.spec.initContainers) ? variables.spec.initContainers : []) + "
                       "(has(variables.spec.ephemeralContainers) ? variables.spec.ephemeralContainers : [])"),
        # Containers asking for at least one GPU: a zero request reserves no GPU and makes no GPU work.
        ("gpuContainers", "variables.containers.filter(c, has(c.resources) && "
                          f"((has(c.resources.limits) && {_positive_gpus('c.resources.limits')}) || "
                          f"(has(c.resources.requests) && {_positive_gpus('c.resources.requests')})))"),
        ("requestsGpu", "size(variables.gpuContainers) > 0"),
        # A controller made this request: a ServiceAccount outside the object's namespace (the job controller
        # in kube-system, JobSet's, an operator's), or the controller manager running with its own credentials.
        # Team members and their namespaces' ServiceAccounts are never that.
        ("controllerRequest", f"{username} == 'system:kube-controller-manager' || "
                              f"({username}.startsWith('system:serviceaccount:') && "
                              f"!{username}.startsWith('system:serviceaccount:' + request.namespace + ':'))"),
        # Owned by a controller that went through the queue (a Job's pods, a JobSet's Jobs): an owner reference
        # anyone may write, so it counts when a controller creates the object, or when an update keeps the
        # owners the object was admitted with.
        ("controllerOwned", "has(object.metadata.ownerReferences) && "
                            "object.metadata.ownerReferences.exists(o, has(o.controller) && o.controller) && "
                            "(request.operation == 'UPDATE' ? (has(oldObject.metadata.ownerReferences) && "
                            "oldObject.metadata.ownerReferences == object.metadata.ownerReferences) : "
                            "variables.controllerRequest)"),
        ("labels", "has(object.metadata.labels) ? object.metadata.labels : {}"),
        ("team", f"has(namespaceObject.metadata.labels) && {_cel(TEAM_LABEL)} in namespaceObject.metadata.labels "
                 f"? namespaceObject.metadata.labels[{_cel(TEAM_LABEL)}] : ''"),
        # Node label pairs no team pod may ask for, and the pools dedicated to one team.
        ("systemNodes", _cel(sorted(f"{key}={value}" for key, value in system_node_selector.items()))),
        # The keys of the system pool's taints, which only the platform's controllers tolerate.
        ("systemTaintKeys", _cel(sorted({taint.key for taint in system_taints}))),
        # Node label keys that tell pools apart: the pool label, and those the system nodes are selected by.
        ("poolKeys", _cel(sorted({POOL_LABEL, *system_node_selector}))),
        ("dedicatedPools", _cel(dict(layout.dedicated))),
        # The most of each GPU resource one container may get on one node of any pool.
        ("largestNode", _cel(largest)),
        # Whether the pod may land on a pool whose device plugin gives a container one time-sliced share at most:
        # it asks for renamed shares, selects such a pool, or tolerates the taint of their Kueue flavors.
        ("onSharedPool", f"variables.containers.exists(c, has(c.resources) && has(c.resources.limits) && "
                         f"{_cel(SHARED_GPU_RESOURCE)} in c.resources.limits) || "
                         f"(has(variables.spec.nodeSelector) && {_cel(POOL_LABEL)} in variables.spec.nodeSelector && "
                         f"variables.spec.nodeSelector[{_cel(POOL_LABEL)}] in {_cel(shared)}) || "
                         f"(has(variables.spec.affinity) && has(variables.spec.affinity.nodeAffinity) && "
                         f"has({_AFFINITY}) && {_AFFINITY}.nodeSelectorTerms.exists(t, has(t.matchExpressions) && "
                         f"t.matchExpressions.exists(e, e.key == {_cel(POOL_LABEL)} && e.operator == 'In' && "
                         f"has(e.values) && e.values.exists(v, v in {_cel(shared)})))) || "
                         f"(has(variables.spec.tolerations) && variables.spec.tolerations.exists(t, has(t.key) && "
                         f"t.key == {_cel(SHARED_GPU_TAINT.key)}))"),
    ]


# The variables of one pod spec, each defined from those before it. A JobSet has a pod spec per replicated Job,
# so its checks bind them per template (per_template).
POD_VARIABLES = ("spec", "containers", "gpuContainers", "requestsGpu", "onSharedPool")
_POD_VARIABLE = re.compile(r"\bvariables\.(" + "|".join(POD_VARIABLES) + r")\b")
# What an UPDATE changes a pod spec from.
_OLD_SPEC = re.compile(r"\bvariables\.oldSpec\b")


def jobset_variables(workload_variables: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The workload variables for a JobSet: its pod templates' specs in place of one pod spec (what derives from
    a pod spec is bound per template in each check), and the rest (labels, owners, team, pools) as they are."""
    return [
        # dyn(): the checks read pod specs untyped, as they read a Pod's or Job's (whose shape-dependent `spec`
        # has no one type). Typed by the JobSet CRD's schema, a template's containers, initContainers and
        # ephemeralContainers would be three types (named by their paths), which CEL's list `+` refuses: the
        # API server's type check would warn of every check that reads variables.containers.
        ("specs", "dyn(object.spec.replicatedJobs.map(r, r.template.spec.template.spec))"),
        *((name, expression) for name, expression in workload_variables
          if name not in POD_VARIABLES and name != "oldSpec"),
    ]


def per_template(expression: str, definitions: Mapping[str, str]) -> str:
    """A check written over one pod spec (variables.spec and what derives from it) as the same check over every
    pod template of a JobSet: each template's spec bound to `spec`, and each pod variable the check uses bound,
    from its own definition, by a one-element list's all() (the API server's CEL has no cel.bind)."""
    used: set[str] = set()
    pending = _POD_VARIABLE.findall(expression)
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending += _POD_VARIABLE.findall(definitions[name]) if name != "spec" else []
    def local(text: str) -> str:
        return _POD_VARIABLE.sub(r"\1", text)
    body = local(expression)
    for name in reversed(POD_VARIABLES[1:]):
        if name in used:
            body = f"[{local(definitions[name])}].all({name}, {body})"
    return f"variables.specs.all(spec, {body})"


def jobset_policies(policies: list[Policy], definitions: Mapping[str, str]) -> list[Policy]:
    """The workload policies over every pod template of a JobSet, with the same messages. Left out: the checks
    that compare an UPDATE's pod spec with the old one (Kueue's gate, which Kueue puts on pods, never on a
    JobSet's templates)."""
    def check(c: Check) -> Check:
        if c.message_expression and _POD_VARIABLE.search(c.message_expression):
            raise ValueError(f"a message reading one pod spec has no JobSet form: {c.message_expression}")
        return replace(c, expression=per_template(c.expression, definitions))
    return [replace(p, name=f"{p.name}-jobsets",
                    checks=tuple(check(c) for c in p.checks if not _OLD_SPEC.search(c.expression)))
            for p in policies]


def _forbidden(key: str, value: str) -> str:
    return (f"(({key} + '=' + {value}) in variables.systemNodes || ({key} == {_cel(POOL_LABEL)} && "
            f"{value} in variables.dedicatedPools && variables.dedicatedPools[{value}] != variables.team))")


def team_policies(layout: QueueLayout) -> list[Policy]:
    priority_classes = [p.name for p in ML_PRIORITY_CLASSES]
    largest = ", ".join(f"{p.resource} {p.node_gpus} on pool {p.name}" for p in layout.pools.values()) or "no GPU pools"
    dedicated = ", ".join(f"{pool} to {team}" for pool, team in sorted(layout.dedicated.items())) or "none"
    affinity = _AFFINITY
    shared = ", ".join(p.name for p in layout.pools.values() if p.shared) or "none"
    whole = ", ".join(p.name for p in layout.pools.values() if not p.shared) or "none"
    device_env = _cel(list(NVIDIA_DEVICE_ENV))
    return [
        Policy("gpu-nodes-for-gpu-work", (Check(
            "!has(variables.spec.tolerations) || variables.requestsGpu || !variables.spec.tolerations.exists(t, "
            f"(has(t.key) && t.key == {_cel(GPU_TAINT.key)}) || "
            "(!has(t.key) && has(t.operator) && t.operator == 'Exists'))",
            f"This pod tolerates the GPU nodes' taint ({GPU_TAINT}), or every taint, but asks for no GPU, so it "
            "would hold an expensive GPU node for CPU work. Remove that toleration, or request a GPU in "
            "resources.limits (nvidia.com/gpu: 1)."),)),
        Policy("gpu-limits-equal-requests", (Check(
            "variables.gpuContainers.all(c, has(c.resources.limits) && "
            f"c.resources.limits.exists(r, {_IS_GPU}) && (!has(c.resources.requests) || "
            f"c.resources.requests.all(r, !{_IS_GPU} || "
            "(r in c.resources.limits && string(c.resources.requests[r]) == string(c.resources.limits[r])))))",
            "A container asks for GPUs in resources.requests without the same number in resources.limits. GPUs "
            "are never shared beyond what they advertise: set the GPUs in resources.limits (requests then "
            "default to them), or make requests equal limits."),)),
        Policy("gpu-work-through-team-queue", (
            Check(
                # What a controller owns (a Job's pods, a JobSet's Jobs) went through the queue as its owner;
                # an owner reference written by a team member proves nothing (Kueue skips such a pod too).
                "!variables.requestsGpu || variables.controllerOwned || "
                f"({_cel(QUEUE_LABEL)} in variables.labels && variables.labels[{_cel(QUEUE_LABEL)}] in "
                f"[variables.team, {_cel(DEFAULT_LOCAL_QUEUE)}])",
                f"GPU work in a team namespace goes through the team's Kueue queue: label it {QUEUE_LABEL}: "
                f"<team> (or leave the label off for the namespace's {DEFAULT_LOCAL_QUEUE!r} queue), or run it as "
                "a Job whose pods the queue admits. An owner reference counts only on what a controller creates.",
                # string(): a messageExpression must be typed string, and variables are dyn.
                f"'GPU work in a team namespace goes through the team\\'s Kueue queue: label it {QUEUE_LABEL}: ' "
                f"+ string(variables.team) + ' (or leave the label off for the namespace\\'s {DEFAULT_LOCAL_QUEUE} "
                "queue), or run it as a Job whose pods the queue admits. An owner reference counts only on what "
                "a controller creates.'"),
            Check(
                # Kueue removes its gate when it admits the pod; its own updates are never judged.
                "request.operation != 'UPDATE' || !has(variables.oldSpec.schedulingGates) || "
                f"!variables.oldSpec.schedulingGates.exists(g, g.name == {_cel(KUEUE_GATE)}) || "
                "(has(variables.spec.schedulingGates) && "
                f"variables.spec.schedulingGates.exists(g, g.name == {_cel(KUEUE_GATE)}))",
                f"The scheduling gate {KUEUE_GATE} is Kueue's: it removes it when the team's queue admits the "
                "pod. Leave it in spec.schedulingGates; the pod starts once its queue has room."),
        )),
        Policy("team-pools-only", (
            Check("!has(variables.spec.nodeName)",
                  "spec.nodeName puts a pod on a node past the scheduler, the GPU taint and the team's queue. "
                  f"Remove it; to choose a GPU pool, use nodeSelector {POOL_LABEL}: <pool>."),
            Check("!has(variables.spec.nodeSelector) || !variables.spec.nodeSelector.exists(k, "
                  f"{_forbidden('k', 'variables.spec.nodeSelector[k]')})",
                  "The nodeSelector picks the system pool, where the platform's controllers run, or a GPU pool "
                  f"dedicated to another team (dedicated: {dedicated}). Select a GPU pool your team may use "
                  f"({POOL_LABEL}: <pool>), or none for CPU work."),
            Check(f"!has(variables.spec.affinity) || !has(variables.spec.affinity.nodeAffinity) || "
                  f"!has({affinity}) || !{affinity}.nodeSelectorTerms.exists(t, has(t.matchExpressions) && "
                  "t.matchExpressions.exists(e, e.operator == 'In' && has(e.values) && "
                  f"e.values.exists(v, {_forbidden('e.key', 'v')})))",
                  "The required node affinity allows the system pool or a GPU pool dedicated to another team "
                  f"(dedicated: {dedicated}). Name only GPU pools your team may use."),
            # Every other operator on a pool key allows whatever it does not list: NotIn and DoesNotExist the
            # system pool and other teams' pools (NotIn: [t4] is every pool but t4), Exists every pool, Gt and
            # Lt whatever compares. Only In says which pools, and the check above judges its values. A term
            # that names no pool key is judged by what else keeps pods off those pools: GPU pods get their
            # pool from Kueue's flavor (nodeLabels, injected as a nodeSelector that every term is ANDed with),
            # and pods without GPUs may not tolerate the GPU nodes' taint.
            Check(f"!has(variables.spec.affinity) || !has(variables.spec.affinity.nodeAffinity) || "
                  f"!has({affinity}) || {affinity}.nodeSelectorTerms.all(t, !has(t.matchExpressions) || "
                  "t.matchExpressions.all(e, !(e.key in variables.poolKeys) || e.operator == 'In'))",
                  f"The required node affinity uses NotIn, Exists, DoesNotExist, Gt or Lt on {POOL_LABEL} (or on "
                  "the system nodes' labels), which allows every pool it does not list, the system pool and other "
                  f"teams' dedicated pools among them (dedicated: {dedicated}). Use operator In with the GPU pools "
                  "your team may use."),
            Check("!has(variables.spec.tolerations) || !variables.spec.tolerations.exists(t, has(t.key) && "
                  "t.key in variables.systemTaintKeys)",
                  "The pod tolerates the system pool's taint, which keeps team work off the nodes where the "
                  "platform's controllers run. Remove that toleration: CPU work runs on the CPU pool without any "
                  f"toleration, GPU work on a GPU pool ({POOL_LABEL}: <pool>) by its GPU request."),
            # matchFields selects nodes by metadata.name, the only field it supports (Kubernetes' node affinity
            # validation): spec.nodeName through the scheduler, onto any node, the system pool's included.
            Check(f"!has(variables.spec.affinity) || !has(variables.spec.affinity.nodeAffinity) || "
                  f"!has({affinity}) || {affinity}.nodeSelectorTerms.all(t, !has(t.matchFields) || "
                  "size(t.matchFields) == 0)",
                  "The required node affinity picks nodes by name (matchFields on metadata.name), which can put a "
                  "pod on the system pool or another team's dedicated pool. Remove matchFields; to choose a GPU "
                  f"pool, use nodeSelector {POOL_LABEL}: <pool> or a matchExpressions term with operator In."),
        )),
        Policy("gpu-request-fits-a-node", (
            # The time-sliced pools' check first: the API server reports the first check that fails.
            Check("!variables.onSharedPool || variables.gpuContainers.all(c, !has(c.resources.limits) || "
                  f"c.resources.limits.all(r, !{_IS_GPU} || "
                  "!quantity(string(c.resources.limits[r])).isGreaterThan(quantity('1'))))",
                  f"A container asks for more than one GPU on a time-sliced pool ({shared}): its device plugin "
                  "gives a container one share at most (failRequestsGreaterThanOne) and would fail the pod. Ask "
                  f"for one share per container ({SHARED_GPU_RESOURCE} or nvidia.com/gpu: 1), or for whole GPUs "
                  f"on another pool ({whole}), without selecting the time-sliced pool or tolerating "
                  f"{SHARED_GPU_TAINT.key}."),
            Check("variables.gpuContainers.all(c, !has(c.resources.limits) || c.resources.limits.all(r, "
                  f"!{_IS_GPU} || (r in variables.largestNode && !quantity(string(c.resources.limits[r]))"
                  ".isGreaterThan(quantity(string(variables.largestNode[r]))))))",
                  f"A container asks for more GPUs than any node offers, or a GPU resource no pool has (largest "
                  f"nodes: {largest}), so it could never be scheduled. Ask for at most that many per pod and "
                  "spread larger work over several pods (a Job with parallelism, a JobSet)."),
        ), always_deny=True),
        Policy("no-gpu-device-env", (
            Check(f"variables.containers.all(c, !has(c.env) || c.env.all(e, !(e.name in {device_env})))",
                  f"A container sets {', '.join(NVIDIA_DEVICE_ENV)}: NVIDIA's container runtime would read it to "
                  "hand the container GPUs or driver features beyond what the pod asked for. Remove it and ask for "
                  "GPUs in resources.limits (nvidia.com/gpu: 1); the device plugin then sets what the container "
                  "needs."),
            # envFrom takes every key of a ConfigMap or Secret as a variable, PREFIX + key. A key that is itself a
            # device variable is refused where the ConfigMap or Secret is written (no-gpu-device-env-sources);
            # a prefix that begins one of their names could complete it from an innocent key (NVIDIA_ and
            # VISIBLE_DEVICES), and any other prefix never can.
            Check("variables.containers.all(c, !has(c.envFrom) || c.envFrom.all(s, !has(s.prefix) || "
                  f"s.prefix == '' || !{device_env}.exists(n, n.startsWith(s.prefix))))",
                  "An envFrom prefix begins the name of a variable by which NVIDIA's container runtime hands a "
                  f"container GPUs ({', '.join(NVIDIA_DEVICE_ENV)}), so a ConfigMap's or Secret's keys could "
                  "complete it. Use a prefix that does not begin with NVIDIA_ (or none), and ask for GPUs in "
                  "resources.limits."),
        )),
        Policy("team-priority-classes", (Check(
            f"!has(variables.spec.priorityClassName) || variables.spec.priorityClassName in {_cel(priority_classes)}",
            f"Team workloads use the ML priority classes ({', '.join(priority_classes)}); the system-* classes "
            "belong to the platform, whose pods they would preempt. Set spec.priorityClassName to one of them, "
            "or leave it unset."),)),
    ]


def validation_actions(enforcement: Literal["deny", "warn"]) -> list[str]:
    return ["Deny", "Audit"] if enforcement == "deny" else ["Warn", "Audit"]


# Monitors teams may declare in their namespaces, so that Prometheus scrapes their own services.
MONITOR_RESOURCES = ["servicemonitors", "podmonitors"]
# The most a team monitor may take in: samples per scrape of one target, and targets per monitor. Past them
# Prometheus drops the whole scrape (up == 0), so one team's exporter cannot fill its memory.
TEAM_MONITOR_SAMPLE_LIMIT = 50_000
TEAM_MONITOR_TARGET_LIMIT = 100
# Target labels the platform's rules and Prometheus's own workings rest on: GPU and cost series join on
# node, pod and namespace, `mlplatform_source` says whether a series comes from the platform's own scrape of
# kube-state-metrics or the GPU exporters (components/gpu_rules.py: the only series the GPU rules read), and
# `__*__` labels choose what is scraped and how (__address__, __scheme__, __metrics_path__, __param_*) or rename
# series (__name__). Other labels (gpu, UUID, exported_*) are the team's to use: the rules never read a series
# without the platform's mark, whatever else it says. jobLabel stays allowed: it takes a Kubernetes label's value,
# which a Service's name already gives (never a value with ':', as the GPU scrape's job has), and no rule trusts
# `job` without the mark. honorTimestamps too: a team's samples at times of its choosing are still its own.
RESERVED_TARGET_LABELS = f"^(job|namespace|node|pod|container|{SOURCE_LABEL}|__.*)$"
RESERVED_NAMES = f"job, namespace, node, pod, container, {SOURCE_LABEL} or any __*__ label"


def monitor_variables() -> list[tuple[str, str]]:
    return [
        ("endpoints", "has(object.spec.endpoints) ? object.spec.endpoints : "
                      "(has(object.spec.podMetricsEndpoints) ? object.spec.podMetricsEndpoints : [])"),
        ("relabelings", "variables.endpoints.map(e, (has(e.relabelings) ? e.relabelings : []) + "
                        "(has(e.metricRelabelings) ? e.metricRelabelings : []))"),
        ("copiedLabels", "(has(object.spec.targetLabels) ? object.spec.targetLabels : []) + "
                         "(has(object.spec.podTargetLabels) ? object.spec.podTargetLabels : [])"),
    ]


def monitor_policies() -> list[Policy]:
    """What a team's ServiceMonitor or PodMonitor may ask of the platform's Prometheus: to scrape its own
    namespace's pods, with its own credentials (team-monitors), into series that say truthfully where they come
    from (team-monitor-labels)."""
    reserved = _cel(RESERVED_TARGET_LABELS)
    return [Policy("team-monitors", (
        Check("variables.endpoints.all(e, !has(e.bearerTokenFile) && (!has(e.tlsConfig) || "
              "(!has(e.tlsConfig.caFile) && !has(e.tlsConfig.certFile) && !has(e.tlsConfig.keyFile))))",
              "bearerTokenFile and tlsConfig caFile/certFile/keyFile name files on Prometheus's own disk, such as "
              "its ServiceAccount token, which Prometheus would send to your pods. Use Secrets of your namespace: "
              "bearerTokenSecret or authorization.credentials, and tlsConfig ca/cert/keySecret."),
        Check("!has(object.spec.namespaceSelector) || ((!has(object.spec.namespaceSelector.any) || "
              "!object.spec.namespaceSelector.any) && (!has(object.spec.namespaceSelector.matchNames) || "
              "object.spec.namespaceSelector.matchNames.all(n, n == request.namespace)))",
              "A team monitor scrapes its own namespace only: remove namespaceSelector (or name only this "
              "namespace in matchNames)."),
        Check(f"has(object.spec.sampleLimit) && object.spec.sampleLimit > 0 && "
              f"object.spec.sampleLimit <= {TEAM_MONITOR_SAMPLE_LIMIT} && has(object.spec.targetLimit) && "
              f"object.spec.targetLimit > 0 && object.spec.targetLimit <= {TEAM_MONITOR_TARGET_LIMIT}",
              f"A team monitor says how much it takes in: set spec.sampleLimit (samples per scrape, 1 to "
              f"{TEAM_MONITOR_SAMPLE_LIMIT}) and spec.targetLimit (targets, 1 to {TEAM_MONITOR_TARGET_LIMIT})."),
    )),
        # Always Deny, whatever the enforcement: a monitor let through with a warning would already have written
        # series that pass for the platform's, and the GPU usage rules, the GPU alerts and every team's GPU cost
        # would count them (a team lowering its own bill, or hiding a node's failing GPUs).
        Policy("team-monitor-labels", (
            Check("variables.endpoints.all(e, !has(e.honorLabels) || !e.honorLabels)",
                  "honorLabels: true lets the scraped pod set job, namespace, node, pod and mlplatform_source "
                  "itself, and so pass its series off as another team's or the platform's. Remove it (or set it "
                  "to false): labels your exporter sets that clash with the target's are kept as exported_*."),
            Check(f"variables.relabelings.all(rs, rs.all(r, (!has(r.action) || "
                  f"!(r.action in ['labelmap', 'LabelMap'])) && (!has(r.targetLabel) || "
                  f"(!r.targetLabel.matches({reserved}) && !r.targetLabel.contains('$')))))",
                  f"relabelings and metricRelabelings may not write {RESERVED_NAMES} (their targetLabel), "
                  "which say where a series comes from and what is scraped, nor use action labelmap or a "
                  "templated targetLabel, which can write any of them. Write labels of other names (team, "
                  "model, gpu...)."),
            Check(f"variables.copiedLabels.all(l, !l.matches({reserved}))",
                  f"targetLabels and podTargetLabels may not name {RESERVED_NAMES}: Prometheus would copy the "
                  "Service's or pod's label of that name onto your series in place of the target's own. Copy "
                  "labels of other names."),
            Check("!has(object.spec.scrapeClass)",
                  "A team monitor uses Prometheus's default scrape class, which marks its series as a team's: "
                  "remove spec.scrapeClass."),
        ), always_deny=True),
    ]


def env_source_policies() -> list[Policy]:
    """What a ConfigMap or Secret of a team namespace may hold: no key a pod's envFrom would turn into one of
    NVIDIA's device variables. The API server merges a Secret's stringData into its data before any policy
    judges it; the kubelet makes variables of a ConfigMap's data only, never of its binaryData."""
    return [Policy("no-gpu-device-env-sources", (Check(
        f"!has(object.data) || !object.data.exists(k, k in {_cel(list(NVIDIA_DEVICE_ENV))})",
        f"A key of this ConfigMap or Secret is named {', '.join(NVIDIA_DEVICE_ENV)}: a pod taking it with "
        "envFrom would have NVIDIA's container runtime hand it GPUs or driver features beyond what it asked for. "
        "Rename the key; pods ask for GPUs in resources.limits (nvidia.com/gpu: 1)."),))]


def network_policy_policies() -> list[Policy]:
    return [Policy("team-network-policies-stay", (Check(
        "!request.userInfo.groups.exists(g, g in variables.teamGroups)",
        "This NetworkPolicy is the platform's (it carries the mlplatform.io/team label): it keeps other "
        "namespaces out of the team's pods and lets Prometheus in. A team member may not change or delete it; "
        "add NetworkPolicies of your own (without that label) to allow more."),))]


@dataclass(frozen=True)
class Subject:
    """What a group of policies judges: resources and operations, when, and the variables they share."""
    rules: tuple[NamedRuleWithOperationsArgs, ...]
    match_conditions: tuple[tuple[str, str], ...]
    variables: tuple[tuple[str, str], ...]


def subjects(layout: QueueLayout, system_node_selector: Mapping[str, str],
             team_groups: Mapping[str, list[str]],
             system_taints: Sequence[Taint] = ()) -> list[tuple[Subject, list[Policy]]]:
    workloads = Subject(
        # Pods, and what makes pods from one template (Jobs, Deployments, StatefulSets) so that a bad one is
        # refused when it is submitted rather than when its controller fails to create its pods; updates only
        # as the match conditions say, so that Kueue's own updates (admission, preemption) are never held.
        rules=(NamedRuleWithOperationsArgs(api_groups=[""], api_versions=["v1"], operations=["CREATE", "UPDATE"],
                                           resources=["pods", "pods/ephemeralcontainers"]),
               NamedRuleWithOperationsArgs(api_groups=["batch"], api_versions=["v1"],
                                           operations=["CREATE", "UPDATE"], resources=["jobs"]),
               NamedRuleWithOperationsArgs(api_groups=["apps"], api_versions=["v1"],
                                           operations=["CREATE", "UPDATE"], resources=["deployments", "statefulsets"])),
        match_conditions=tuple(workload_match_conditions()),
        variables=tuple(policy_variables(layout, system_node_selector, system_taints)))
    # JobSets, judged over every pod template so that a bad one is refused when it is submitted rather than when
    # the JobSet controller fails to create its Jobs; updates only as jobset_match_conditions() says.
    jobsets = Subject(
        rules=(NamedRuleWithOperationsArgs(api_groups=[JOBSET_GROUP], api_versions=[JOBSET_VERSION],
                                           operations=["CREATE", "UPDATE"], resources=["jobsets"]),),
        match_conditions=tuple(jobset_match_conditions()),
        variables=tuple(jobset_variables(workloads.variables)))
    monitors = Subject(
        rules=(NamedRuleWithOperationsArgs(api_groups=["monitoring.coreos.com"], api_versions=["v1"],
                                           operations=["CREATE", "UPDATE"], resources=MONITOR_RESOURCES),),
        match_conditions=(), variables=tuple(monitor_variables()))
    # The platform's NetworkPolicies in a team namespace, changed or deleted by a member of that team's groups
    # (teams' `edit` may write NetworkPolicies, to add their own). The deployer and controllers are left alone.
    network_policies = Subject(
        rules=(NamedRuleWithOperationsArgs(api_groups=["networking.k8s.io"], api_versions=["v1"],
                                           operations=["UPDATE", "DELETE"], resources=["networkpolicies"]),),
        match_conditions=(("the-platforms", "has(oldObject.metadata.labels) && "
                                            f"{_cel(TEAM_LABEL)} in oldObject.metadata.labels"),),
        variables=(("teamGroups", f"request.namespace in {_cel(dict(team_groups))} ? "
                                  f"{_cel(dict(team_groups))}[request.namespace] : []"),))
    # Every write of a ConfigMap or Secret, whoever makes it: the platform's own (nccl-<pool>, kube-root-ca.crt)
    # never carry such a key.
    env_sources = Subject(
        rules=(NamedRuleWithOperationsArgs(api_groups=[""], api_versions=["v1"], operations=["CREATE", "UPDATE"],
                                           resources=["configmaps", "secrets"]),),
        match_conditions=(), variables=())
    definitions = dict(workloads.variables)
    return [(workloads, team_policies(layout)), (jobsets, jobset_policies(team_policies(layout), definitions)),
            (monitors, monitor_policies()),
            (network_policies, network_policy_policies()), (env_sources, env_source_policies())]


class TeamAdmission(pulumi.ComponentResource):
    def __init__(self, name: str, cluster: ClusterHandle, layout: QueueLayout, *,
                 enforcement: Literal["deny", "warn"], team_groups: Mapping[str, list[str]] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        """`team_groups`: the groups with `edit` in each team namespace the platform makes."""
        super().__init__("mlplatform:admission:TeamAdmission", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        names: list[str] = []
        for subject, policies in subjects(layout, cluster.system_node_selector, team_groups or {},
                                          cluster.system_taints):
            for policy in policies:
                declare_policy(f"{name}-{policy.name}", policy, subject, enforcement=enforcement, opts=child)
                names.append(f"mlplatform-{policy.name}")

        # Teams' edit group may declare monitors of their own services; Prometheus discovers monitors in every
        # namespace, and team NetworkPolicies let it in.
        team_roles(name, "monitors", api_group="monitoring.coreos.com", resources=MONITOR_RESOURCES, opts=child)
        self.register_outputs({"policies": names})


def declare_policy(resource_name: str, policy: Policy, subject: Subject, *, enforcement: Literal["deny", "warn"],
                   opts: pulumi.ResourceOptions, namespace_selector: LabelSelectorArgs | None = None) -> None:
    """A ValidatingAdmissionPolicy judging `subject`, bound to every team namespace (or those
    `namespace_selector` selects)."""
    full_name = f"mlplatform-{policy.name}"
    vap = k8s.admissionregistration.v1.ValidatingAdmissionPolicy(
        resource_name,
        metadata=ObjectMetaArgs(name=full_name),
        spec=ValidatingAdmissionPolicySpecArgs(
            failure_policy="Fail",
            match_constraints=MatchResourcesArgs(resource_rules=list(subject.rules)),
            match_conditions=[MatchConditionArgs(name=n, expression=e) for n, e in subject.match_conditions]
            or None,
            variables=[VariableArgs(name=n, expression=e) for n, e in subject.variables],
            validations=[ValidationArgs(expression=c.expression, message=c.message,
                                        message_expression=c.message_expression)
                         for c in policy.checks],
        ),
        opts=opts)
    k8s.admissionregistration.v1.ValidatingAdmissionPolicyBinding(
        f"{resource_name}-binding",
        metadata=ObjectMetaArgs(name=full_name),
        spec=ValidatingAdmissionPolicyBindingSpecArgs(
            policy_name=full_name,
            validation_actions=validation_actions("deny" if policy.always_deny else enforcement),
            match_resources=MatchResourcesArgs(namespace_selector=namespace_selector or LabelSelectorArgs(
                match_expressions=[LabelSelectorRequirementArgs(key=TEAM_LABEL, operator="Exists")]))),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[vap])))
