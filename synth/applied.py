"""Checks over everything a stack applies: its own objects and every object its Helm releases render.

- schemas: built-in objects against kubernetes-validate's strict schemas for the pinned Kubernetes version,
  custom resources against the CRDs the stack itself installs, or the cluster does (`check_schemas`);
- the CRDs' own CEL rules (`x-kubernetes-validations`), evaluated with cel-python for every custom resource,
  naming each rule it cannot evaluate (`check_cel`);
- placement: every workload that is not a per-node GPU agent pinned to the system pool by its own
  nodeSelector, every GPU agent able to land on every GPU pool, and every workload that can land nowhere,
  with why (`check_placement`);
- mounts: every pod volume mounted, every file an argument names under a mount (`check_mounts`).

The pod-spec policy rules run over the rendered objects in `synth.checks.check_rendered`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from core.outputs import PlatformOutputs, is_platform
from core.quantity import parse_quantity
from core.vocabulary import CPU_POOL, EFA_LABEL, POOL_LABEL, SIMULATED_GPU_NODE_LABELS
from policies.rules import GPU_AGENT_CHARTS, gpu_fabric_agent_pool
from versions import GKE_NETWORKING_API
from synth.engine import Synthesis
from synth.gomodule import ModuleUnavailable, module_dir
from synth.render import CHART_ANNOTATION, RELEASE_ANNOTATION, Rendering
from synth.schema import SchemaReport, check_manifests, describe, known_fields, schemas_of

WORKLOAD_KINDS = frozenset({"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"})
# Pods the Prometheus operator makes from these custom resources; their spec carries the pod's placement.
OPERATOR_POD_KINDS = frozenset({("monitoring.coreos.com", "Prometheus"), ("monitoring.coreos.com", "Alertmanager")})


def crds_of(rendering: Rendering, own: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The CRDs the stack installs, and those the cluster provides for the stack's own objects."""
    own = own or []
    return [*(obj for obj in [*rendering.objects(), *own] if obj.get("kind") == "CustomResourceDefinition"),
            *cluster_crds(own)]


# API groups whose CRDs the cluster itself installs (no chart of ours carries them), by the Go module that
# publishes them: GKE's multi-networking API.
CLUSTER_CRD_MODULES = {"networking.gke.io": GKE_NETWORKING_API}


def cluster_crds(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cluster-provided CRDs of the groups `objects` use; none for a module that cannot be had here."""
    return _cluster_crds(objects)[0]


def _cluster_crds(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The CRDs, and why each group's could not be had (no Go, no proxy): its objects are then reported as
    having no schema, with that reason, never passed."""
    groups = {str(obj.get("apiVersion", "")).split("/")[0] for obj in objects}
    crds: list[dict[str, Any]] = []
    missing: dict[str, str] = {}
    for group, (module, version) in CLUSTER_CRD_MODULES.items():
        if group in groups:
            try:
                crds += copy.deepcopy(_module_crds(module_dir(module, version) / "config" / "crds", group))
            except ModuleUnavailable as exc:
                missing[group] = str(exc)
    return crds, missing


@cache
def _module_crds(folder: Path, group: str) -> list[dict[str, Any]]:
    return [crd for path in sorted(folder.glob(f"{group}_*.yaml")) for crd in yaml.safe_load_all(path.read_text())
            if crd]


def _identity(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    metadata = obj.get("metadata") or {}
    return obj.get("apiVersion"), obj.get("kind"), metadata.get("namespace"), metadata.get("name")


def _merge(live: Any, patch: Any) -> Any:
    """`patch` applied to `live` as server-side apply merges them: maps key by key, lists of named items (the
    list-map key `name` of webhooks, containers, ...) item by name, anything else replaced."""
    if isinstance(live, dict) and isinstance(patch, dict):
        return {**live, **{key: _merge(live.get(key), value) for key, value in patch.items()}}
    named = isinstance(live, list) and isinstance(patch, list) and all(
        isinstance(item, dict) and "name" in item for item in [*live, *patch])
    if named:
        updates = {item["name"]: item for item in patch}
        merged = [_merge(item, updates[item["name"]]) if item["name"] in updates else item for item in live]
        known = {item["name"] for item in live}
        return merged + [item for item in patch if item["name"] not in known]
    return copy.deepcopy(patch)


def applied_objects(synthesis: Synthesis, rendering: Rendering) -> list[dict[str, Any]]:
    """Everything `pulumi up` applies to the cluster: the stack's own objects, then the charts', with the fields
    the stack patches into them (a patch of an object nothing creates would fail, and is left out)."""
    patches: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for patch in synthesis.patches():
        patches.setdefault(_identity(patch), []).append(patch)
    rendered = []
    for obj in rendering.objects():
        for patch in patches.get(_identity(obj), []):
            obj = _merge(obj, {k: v for k, v in patch.items() if k != "metadata"})
        rendered.append(obj)
    return [*synthesis.manifests(), *rendered]


def origin(obj: Mapping[str, Any]) -> str:
    """`<release> (<chart>)` for a rendered object, `stack` for one the program declares itself."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    release = annotations.get(RELEASE_ANNOTATION)
    return f"{release.split('/')[-1]} ({annotations[CHART_ANNOTATION]})" if release else "stack"


def chart_of_object(obj: Mapping[str, Any]) -> str | None:
    chart = ((obj.get("metadata") or {}).get("annotations") or {}).get(CHART_ANNOTATION)
    return chart.rsplit("-", 1)[0] if isinstance(chart, str) else None


# ---- schemas ----------------------------------------------------------------------------------------------
def check_schemas(synthesis: Synthesis, rendering: Rendering) -> SchemaReport:
    objects = applied_objects(synthesis, rendering)
    # Against the schemas of the minor the stack's cluster runs, which an EKS cluster picks for itself.
    report = check_manifests(objects, custom=schemas_of(crds_of(rendering, synthesis.manifests())),
                             kubernetes_version=PlatformOutputs.read(synthesis.outputs).kubernetes_version)
    missing = _cluster_crds(synthesis.manifests())[1]
    report.unchecked = [f"{name} ({missing[group]})" if (group := _group_of(name)) in missing else name
                        for name in report.unchecked]
    return report


def _group_of(described: str) -> str:
    # describe() writes "<apiVersion> <kind> <namespace/name>".
    return described.split(" ", 1)[0].split("/")[0]


# ---- CEL --------------------------------------------------------------------------------------------------
@dataclass
class CelReport:
    evaluated: int = 0
    failures: list[str] = field(default_factory=list)
    # Rules cel-python cannot evaluate (a Kubernetes CEL library function it lacks), each with the reason.
    unevaluated: list[str] = field(default_factory=list)
    # Transition rules (`oldSelf`): the API server evaluates them on updates only, never on create.
    update_only: int = 0


def _validations(schema: Any, value: Any, path: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(path, rule, the value it judges as `self`) for every x-kubernetes-validations rule that applies."""
    if not isinstance(schema, dict) or value is None:
        return
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule, value
    properties = schema.get("properties") or {}
    if isinstance(value, dict):
        for key, item in value.items():
            sub = properties.get(key, schema.get("additionalProperties") if key not in properties else None)
            yield from _validations(sub, item, f"{path}.{key}")
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _validations(schema.get("items"), item, f"{path}[{index}]")


def _kubernetes_functions() -> dict[str, Any]:
    """The Kubernetes CEL library functions our CRDs' rules and admission policies use that cel-python lacks
    (k8s.io/apiserver pkg/cel/library: strings `split`, regex `find`, the quantity library's `quantity`,
    `compareTo`, `isGreaterThan`, `isLessThan`); any other missing one leaves its rule named unevaluated."""
    from celpy import celtypes

    def split(text: Any, separator: Any) -> Any:
        return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(separator))])

    def find(text: Any, pattern: Any) -> Any:
        match = re.search(str(pattern), str(text))
        return celtypes.StringType(match.group(0) if match else "")

    def quantity(text: Any) -> _Quantity:
        return _Quantity(parse_quantity(str(text)))

    def compare_to(left: _Quantity, right: _Quantity) -> Any:
        return celtypes.IntType((left.value > right.value) - (left.value < right.value))

    def is_greater_than(left: _Quantity, right: _Quantity) -> Any:
        return celtypes.BoolType(left.value > right.value)

    def is_less_than(left: _Quantity, right: _Quantity) -> Any:
        return celtypes.BoolType(left.value < right.value)

    return {"split": split, "find": find, "quantity": quantity, "compareTo": compare_to,
            "isGreaterThan": is_greater_than, "isLessThan": is_less_than}


@dataclass(frozen=True)
class _Quantity:
    """A value of the Kubernetes CEL quantity library (k8s.io/apiserver pkg/cel/library/quantity.go), which
    compares quantities in any form the API server accepts (1k, 500m, 2Gi)."""

    value: Decimal


@cache
def _cel_environment() -> Any:
    """One cel-python environment for every expression: building one (its parser) costs more than compiling a
    rule, and it holds nothing a compile or an evaluation changes."""
    import celpy

    return celpy.Environment()


@cache
def cel_program(rule: str) -> Any:
    """A compiled CEL expression, with the Kubernetes library functions cel-python lacks."""
    environment = _cel_environment()
    return environment.program(environment.compile(rule), functions=_kubernetes_functions())


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """The value with its schema's defaults filled in: the API server defaults an object before it validates."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        filled = {key: copy.deepcopy(sub["default"]) for key, sub in properties.items()
                  if "default" in sub and key not in value}
        return {key: with_defaults(properties.get(key) or {}, item) for key, item in (value | filled).items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [with_defaults(schema["items"], item) for item in value]
    return value


def create_rule_results(schema: Mapping[str, Any], obj: Any) -> Iterator[tuple[str, dict[str, Any], bool | Exception]]:
    """(path, rule, whether it holds, or why it could not be evaluated) for every x-kubernetes-validations rule a
    create meets, over the object defaulted as the API server defaults it. Transition rules (oldSelf) apply
    to updates only and are left out."""
    from celpy.adapter import json_to_cel

    for path, rule, value in _validations(schema, with_defaults(schema, obj), ""):
        if "oldSelf" in rule["rule"]:
            continue
        try:
            result = cel_program(rule["rule"]).evaluate({"self": json_to_cel(copy.deepcopy(value))})
        except Exception as exc:  # noqa: BLE001 (cel-python raises many kinds; each is reported by rule)
            result = exc
        yield path, rule, result if isinstance(result, Exception) else bool(result)


def check_cel(objects: list[dict[str, Any]], crds: list[dict[str, Any]]) -> CelReport:
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            if (schema := (version.get("schema") or {}).get("openAPIV3Schema")) is not None:
                schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    report = CelReport()
    unevaluable: set[str] = set()
    for obj in map(known_fields, objects):
        schema = schemas.get((obj.get("apiVersion"), obj.get("kind")))
        if schema is None:
            continue
        report.update_only += sum("oldSelf" in rule["rule"] for _, rule, _ in _validations(schema, obj, ""))
        for path, rule, result in create_rule_results(schema, obj):
            expression = rule["rule"]
            where = f"{describe(obj)} {path or '(top level)'}"
            if isinstance(result, Exception):
                if expression not in unevaluable:
                    unevaluable.add(expression)
                    report.unevaluated.append(f"{expression!r} ({where}): {type(result).__name__}: {result}")
                continue
            report.evaluated += 1
            if not result:
                message = rule.get("message") or rule.get("messageExpression") or expression
                report.failures.append(f"{where}: {message} (rule {expression!r})")
    return report


# ---- placement --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    name: str
    labels: Mapping[str, str]
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect)


@dataclass
class PlacementReport:
    checked: int = 0
    # Warnings: each says what is wrong, why it matters and what to change.
    problems: list[str] = field(default_factory=list)
    # Errors: workloads (not DaemonSets) that can land on no pool, so their pods would stay Pending.
    unplaceable: list[str] = field(default_factory=list)


# Labels the kubelet puts on every node (kubernetes.io/docs/reference/labels-annotations-taints).
WELL_KNOWN_NODE_LABELS = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}


def _taint(taint: str) -> tuple[str, str, str]:
    """("key", "value", "Effect") of "key=value:Effect"."""
    key_value, _, effect = taint.rpartition(":")
    key, _, value = key_value.partition("=")
    return key, value, effect


def pools_of(synthesis: Synthesis) -> tuple[Pool, dict[str, str], list[Pool]]:
    """The system pool (with the selector platform workloads must carry) and the GPU pools of the stack, with
    the labels their nodes carry."""
    outputs = PlatformOutputs.read(synthesis.outputs)
    selector = dict(outputs.system_node_selector)
    # kind's stand-in GPU nodes carry the labels the fake GPU operator's agents select.
    extra = SIMULATED_GPU_NODE_LABELS if outputs.cloud == "kind" else {}
    gpu_pools = []
    for pool in outputs.gpu_pools:
        gpu_pools.append(Pool(pool.name, WELL_KNOWN_NODE_LABELS | dict(pool.labels) | extra,
                              tuple(_taint(t) for t in pool.taints)))
    return Pool("system", WELL_KNOWN_NODE_LABELS | selector, tuple(_taint(t) for t in outputs.system_taints)), \
        selector, gpu_pools


def _pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = obj.get("kind")
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    spec = obj.get("spec") or {}
    if (group, kind) in OPERATOR_POD_KINDS:
        return spec
    if kind not in WORKLOAD_KINDS:
        return None
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    return (spec.get("template") or {}).get("spec")


def _expression_holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = str(expression.get("key")), expression.get("operator"), expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    return False  # Gt/Lt on labels we do not set


def _tolerates(tolerations: list[Any], taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for toleration in tolerations:
        if not isinstance(toleration, dict) or toleration.get("effect") not in (None, "", effect):
            continue
        operator = toleration.get("operator") or "Equal"
        if not toleration.get("key") and operator == "Exists":
            return True
        if toleration.get("key") == key and (operator == "Exists" or toleration.get("value", "") == value):
            return True
    return False


def why_not(spec: Mapping[str, Any], pool: Pool) -> str | None:
    """Why the pod cannot land on a node of the pool (the labels and taints the platform gives it), or None."""
    selector = spec.get("nodeSelector") or {}
    mismatched = {key: value for key, value in selector.items() if pool.labels.get(key) != value}
    if mismatched:
        return f"its nodeSelector {mismatched} matches no {pool.name} node"
    terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms"))
    if terms and not any(all(_expression_holds(e, pool.labels) for e in term.get("matchExpressions") or [])
                         for term in terms):
        return f"its required node affinity matches no {pool.name} node"
    for taint in pool.taints:
        if taint[2] in ("NoSchedule", "NoExecute") and not _tolerates(spec.get("tolerations") or [], taint):
            return f"it does not tolerate the {pool.name} taint {taint[0]}={taint[1]}:{taint[2]}"
    return None


def is_gpu_agent(obj: Mapping[str, Any]) -> bool:
    """A per-node GPU agent: a DaemonSet of one of the GPU agent charts."""
    return obj.get("kind") == "DaemonSet" and chart_of_object(obj) in GPU_AGENT_CHARTS


# GPU agents of a feature some GPU pools have, by the node label those pools carry (EFA pools' nodes carry
# EFA_LABEL).
FEATURE_AGENT_LABELS = {"aws-efa-k8s-device-plugin": EFA_LABEL}


# Untainted general-purpose nodes, where teams' CPU work runs (the CPU pool of kind, EKS and GKE; on an existing
# cluster, whatever nodes carry no taint).
CPU_NODES = Pool(CPU_POOL, WELL_KNOWN_NODE_LABELS | {POOL_LABEL: CPU_POOL}, ())


def check_placement(synthesis: Synthesis, rendering: Rendering) -> PlacementReport:
    report = PlacementReport()
    system, selector, gpu_pools = pools_of(synthesis)
    if not is_platform(synthesis.outputs):
        return report  # a team stack: its cluster's pools are another stack's
    for obj in applied_objects(synthesis, rendering):
        spec = _pod_spec(obj)
        if spec is None or (obj.get("spec") or {}).get("replicas") == 0:
            continue  # not a workload, or one that runs no pod (the fake operator's gpu-operator placeholder)
        report.checked += 1
        name = f"{origin(obj)}: {obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        reasons = {pool.name: why_not(spec, pool) for pool in (system, CPU_NODES, *gpu_pools)}
        nowhere = "; ".join(f"{pool}: {why}" for pool, why in reasons.items())
        if (fabric_pool := gpu_fabric_agent_pool(obj)) is not None:
            # A GKE GPU network agent serves the one multi-node pool it is named for, on that pool's nodes.
            report.problems += [
                f"{name} is the GPU network agent of pool {pool.name} but cannot run there: {reasons[pool.name]}, "
                "so the pool's pods find no NCCL plugin. To change: clouds/gke/fabric.py"
                for pool in gpu_pools if pool.name == fabric_pool and reasons[pool.name]]
            continue
        if all(reasons.values()) and obj["kind"] == "DaemonSet":
            report.problems.append(
                f"{name} runs on no pool ({nowhere}). That is right for an agent of nodes the platform does not "
                "make (a feature it leaves off); otherwise those nodes go without it. To change: give the pool's "
                "nodes the label it selects, or its chart's values (components/) a nodeSelector of a pool")
            continue
        if all(reasons.values()):
            report.unplaceable.append(
                f"{name} can land on no pool ({nowhere}), so its pods would stay Pending. To change: give it a "
                f"nodeSelector {selector} and no toleration it lacks, in its chart's values (components/)")
            continue
        if is_gpu_agent(obj):
            # An agent of a feature only some pools have (EFA) must reach the pools whose nodes carry it.
            feature = FEATURE_AGENT_LABELS.get(chart_of_object(obj) or "")
            served = [pool for pool in gpu_pools if feature is None or feature in pool.labels]
            report.problems += [
                f"{name} is a GPU agent but cannot run on GPU pool {pool.name}: {reasons[pool.name]}, so that "
                "pool's nodes go without it (their GPUs unadvertised or unmeasured). To change: add the pool's "
                "taint to its tolerations and its labels to its node affinity, in its chart's values "
                "(components/gpu.py, components/monitoring.py)" for pool in served if reasons[pool.name]]
            continue
        own = spec.get("nodeSelector") or {}
        if any(own.get(key) != value for key, value in selector.items()):
            landing = [pool for pool, why in reasons.items() if why is None]
            where = f" (here: the {' or '.join(landing)} pool{'s' if len(landing) > 1 else ''})"
            report.problems.append(
                f"{name} has no nodeSelector {selector}: it may land on any node it tolerates{where}, not the "
                "system pool by choice; on a GPU node it would take room from jobs and keep the pool from scaling "
                "to zero. To change: set that nodeSelector in its chart's values (components/); where the chart "
                "has no value for it, this is a known gap of the chart")
    return report


# ---- volumes and the files arguments name -----------------------------------------------------------------
# Volumes an upstream chart declares for a container it leaves out of this workload, with why that is harmless:
# (chart, kind, workload, volume).
UNMOUNTED_BY_DESIGN = {
    # fake-gpu-operator 0.2.0's status-exporter/_helpers.tpl gives the DaemonSet and the template Deployment one
    # volume list; only the DaemonSet has the init container (hostpath-init) that mounts the script.
    ("fake-gpu-operator", "Deployment", "nvidia-dcgm-exporter", "hostpath-init-script"),
}
# An absolute path in an argument: a whole argument (`-f /etc/x.csv`) or a flag's value (`--config=/x.yaml`).
_ARGUMENT_PATH = re.compile(r"(?:^|=)(/[^\s,;:=]+)$")


def _backed(path: str, mounts: list[str]) -> bool:
    return any(path == mount or path.startswith(mount.rstrip("/") + "/") for mount in mounts)


def check_mounts(objects: list[dict[str, Any]]) -> list[str]:
    """Every pod volume mounted by some container, and every file path a container's arguments name under one of
    its mounts: a volume nothing mounts is usually a mount a values list replaced (Helm replaces lists whole),
    and the program then reads whatever the image holds at that path instead of what we configured."""
    problems: list[str] = []
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None or "containers" not in spec:
            continue  # not a workload, or the operator's Prometheus (whose pods the operator assembles)
        name = f"{origin(obj)}: {obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        mounted = {mount["name"] for container in containers for mount in container.get("volumeMounts") or []}
        for volume in spec.get("volumes") or []:
            if (volume["name"] not in mounted and (chart_of_object(obj), obj["kind"], obj["metadata"]["name"],
                                                   volume["name"]) not in UNMOUNTED_BY_DESIGN):
                problems.append(f"{name}: volume {volume['name']} is mounted by no container")
        for container in containers:
            mounts = [mount["mountPath"] for mount in container.get("volumeMounts") or []]
            # The command's first word is the program, a file of the image.
            words = [*(container.get("command") or [])[1:], *(container.get("args") or [])]
            for word in words:
                match = _ARGUMENT_PATH.search(str(word))
                if match and not _backed(match.group(1), mounts):
                    problems.append(f"{name}: container {container['name']} is given {match.group(1)} "
                                    f"({word}), which none of its mounts holds: it reads the image's own file")
    return problems


# ---- all of them ------------------------------------------------------------------------------------------
@dataclass
class AppliedReport:
    schemas: SchemaReport
    cel: CelReport
    placement: PlacementReport
    requests: dict[str, PoolRequests]
    mounts: list[str] = field(default_factory=list)
    # Helm releases whose objects were not rendered, so none of the checks above saw them.
    unrendered: tuple[str, ...] = ()

    @property
    def broken(self) -> bool:
        """What the API server would refuse (a schema error, a failed CEL rule), or pods that could never run."""
        return bool(self.schemas.errors or self.cel.failures or self.placement.unplaceable)

    def summary(self) -> list[str]:
        lines = [f"Applied objects: {len(self.schemas.checked)} pass their strict schemas, "
                 f"{len(self.schemas.errors)} fail, {len(self.schemas.unchecked)} have no schema; CEL rules of "
                 f"their CRDs: {self.cel.evaluated} hold, {len(self.cel.failures)} fail, "
                 f"{len(self.cel.unevaluated)} cannot be evaluated offline, {self.cel.update_only} apply to "
                 "updates only"]
        lines += [f"  schema: {error}" for error in self.schemas.errors]
        lines += [f"  no schema: {name}" for name in self.schemas.unchecked]
        lines += [f"  CEL: {failure}" for failure in self.cel.failures]
        lines += [f"  CEL not evaluated: {rule}" for rule in self.cel.unevaluated]
        lines += self.not_run()
        lines.append(f"Placement: {self.placement.checked} workloads, {len(self.placement.problems)} warnings (under "
                     f"Warnings), {len(self.placement.unplaceable)} errors (can land nowhere)")
        lines += self.not_run()
        lines += [f"  ERROR {problem}" for problem in self.placement.unplaceable]
        lines.append(f"Mounts: {len(self.mounts)} volumes or argument files without a mount")
        lines += [f"  {problem}" for problem in self.mounts]
        lines += self.not_run()
        if self.requests:
            lines.append("Requests per pool (long-running platform pods):")
            lines += [f"  {pool:<12} {requests}" for pool, requests in self.requests.items()]
            lines += self.not_run()
        return lines

    def not_run(self) -> list[str]:
        """The line a check's result gets where some of what it should have seen was never rendered."""
        return [f"  DID NOT RUN over the releases not rendered: {', '.join(self.unrendered)} (see Warnings)"
                ] if self.unrendered else []


def check_applied(synthesis: Synthesis, rendering: Rendering) -> AppliedReport:
    own = synthesis.manifests()
    return AppliedReport(check_schemas(synthesis, rendering),
                         check_cel(applied_objects(synthesis, rendering), crds_of(rendering, own)),
                         check_placement(synthesis, rendering), requests_per_pool(synthesis, rendering),
                         check_mounts(applied_objects(synthesis, rendering)), tuple(sorted(rendering.unavailable)))


# ---- requests per pool ------------------------------------------------------------------------------------
@dataclass
class PoolRequests:
    """What the platform's long-running pods request of a pool: pods placed once (Deployments, StatefulSets,
    the operator's Prometheus and Alertmanager), and DaemonSet pods on every node of the pool."""

    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)
    pods: int = 0
    per_node_cpu: Decimal = Decimal(0)
    per_node_memory: Decimal = Decimal(0)

    def __str__(self) -> str:
        return (f"cpu {_cores(self.cpu)}, memory {_mebibytes(self.memory)} for {self.pods} pods; "
                f"per node (DaemonSets) cpu {_cores(self.per_node_cpu)}, memory {_mebibytes(self.per_node_memory)}")


def _cores(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _mebibytes(value: Decimal) -> str:
    return f"{int(value / 2**20)}Mi"


def _pod_requests(obj: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    if (group, obj.get("kind")) in OPERATOR_POD_KINDS:
        containers: list[Any] = [{"resources": spec.get("resources") or {}}]
    else:
        containers = list(spec.get("containers") or [])
    cpu = memory = Decimal(0)
    for container in containers:
        requests = (container.get("resources") or {}).get("requests") or {}
        cpu += parse_quantity(str(requests.get("cpu", "0")))
        memory += parse_quantity(str(requests.get("memory", "0")))
    return cpu, memory


def requests_per_pool(synthesis: Synthesis, rendering: Rendering) -> dict[str, PoolRequests]:
    if not is_platform(synthesis.outputs):
        return {}
    system, _, gpu_pools = pools_of(synthesis)
    totals = {pool.name: PoolRequests() for pool in (system, CPU_NODES, *gpu_pools)}
    for obj in applied_objects(synthesis, rendering):
        spec = _pod_spec(obj)
        if spec is None or obj.get("kind") in ("Job", "CronJob", "Pod"):
            continue  # Jobs (the charts' hooks) come and go
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        if not isinstance(replicas, int) or replicas == 0:
            continue
        cpu, memory = _pod_requests(obj, spec)
        pools = [pool for pool in (system, CPU_NODES, *gpu_pools) if why_not(spec, pool) is None]
        if obj.get("kind") == "DaemonSet":
            for pool in pools:
                totals[pool.name].per_node_cpu += cpu
                totals[pool.name].per_node_memory += memory
        elif pools:
            total = totals[pools[0].name]
            total.cpu, total.memory, total.pods = total.cpu + cpu * replicas, total.memory + memory * replicas, \
                total.pods + replicas
    return totals
