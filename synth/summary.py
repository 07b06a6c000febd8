"""The short human summary `make synth` prints: what the stack declares, its GPU capacity and the quotas on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from core.outputs import PlatformOutputs, TeamOutputs, is_team
from core.vocabulary import ROOT_COHORT
from policies.rules import RESOURCE_RULES, STACK_RULES
from synth.applied import AppliedReport
from synth.checks import Violation
from synth.engine import Synthesis
from synth.render import HOOK_ANNOTATION, Rendering


def _sharing(sharing: dict) -> str:
    if sharing.get("timeSlicing"):
        return f"time-slicing x{sharing['timeSlicing']['replicas']}"
    return f"MIG {sharing['migStrategy']}" if sharing.get("migStrategy") != "none" else "none"


def _team_stack(outputs: TeamOutputs) -> list[str]:
    budget = outputs.budget
    return [f"Team {outputs.team} on cluster {outputs.cluster_name!r}: namespaces {', '.join(outputs.namespaces)}; "
            f"budget {budget.gpus if budget else None} GPU, cpu {budget.cpu if budget else None}, "
            f"memory {budget.memory if budget else None}"]


def _platform_stack(outputs: PlatformOutputs) -> list[str]:
    lines = []
    pools = outputs.gpu_pools
    lines.append(f"GPU pools: {len(pools)}, up to {outputs.gpu_capacity} schedulable GPUs")
    for pool in pools:
        lines.append(f"  {pool.name:<12} {pool.accelerator:<22} {pool.min_nodes}-{pool.max_nodes} nodes "
                     f"x {pool.gpus_per_node} GPU, {'spot' if pool.spot else 'on-demand'}, "
                     f"taints {', '.join(pool.taints)}, sharing {_sharing(dict(pool.sharing))}")
    teams = outputs.teams
    guaranteed = sum(team.guaranteed_gpus for team in teams.values())
    lines.append(f"Team GPUs guaranteed: {guaranteed} of {outputs.gpu_capacity} GPUs; each team may borrow "
                 "idle GPUs of its cohort, and the GPUs no team is guaranteed, up to its ceiling")
    rest = ", ".join(f"{pool} {gpus}" for pool, gpus in outputs.unguaranteed_gpus.items())
    lines.append(f"  Kueue Cohort {ROOT_COHORT!r} (above every team cohort) holds the GPUs no team is guaranteed: "
                 f"{rest or 'none'}")
    for name, team in sorted(teams.items()):
        guarantee = ", ".join(f"{pool} {gpus}" for pool, gpus in team.guarantee.items()) or "none"
        own_stack = " (its own stack)" if team.own_stack else ""
        lines.append(f"  {name:<24} {team.guaranteed_gpus} GPU guaranteed ({guarantee}), ceiling {team.gpus} GPU, "
                     f"cpu {team.cpu}, memory {team.memory}{own_stack}")
    return lines


def _rendering(rendering: Rendering) -> list[str]:
    if not rendering.releases and not rendering.unavailable:
        return []
    total = len(rendering.objects())
    lines = [f"Helm releases rendered offline for Kubernetes {rendering.kubernetes_version}: {total} objects "
             "(rendered/)"]
    for name, release in sorted(rendering.releases.items()):
        kinds = Counter(obj["kind"] for obj in release.objects)
        hooks = sum(HOOK_ANNOTATION in (obj["metadata"].get("annotations") or {}) for obj in release.objects)
        workloads = sum(kinds[kind] for kind in ("Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob"))
        chart = f"{release.chart.name}-{release.chart.version}"
        lines.append(f"  {name:<24} {chart:<30} {len(release.objects):4d} "
                     f"objects: {workloads} workloads, {kinds['CustomResourceDefinition']} CRDs, {hooks} hooks")
    lines += [f"  {name:<24} NOT RENDERED (see Warnings)" for name in sorted(rendering.unavailable)]
    return lines


def summarize(synthesis: Synthesis, out_dir: Path, violations: list[Violation],
              rendering: Rendering | None = None, applied: AppliedReport | None = None) -> str:
    stack_outputs = TeamOutputs.read(synthesis.outputs) if is_team(synthesis.outputs) else \
        PlatformOutputs.read(synthesis.outputs)
    kind = (f"team stack of {stack_outputs.team}" if isinstance(stack_outputs, TeamOutputs)
            else f"{stack_outputs.cloud} cluster")
    lines = [f"Stack {synthesis.stack}: {kind} {stack_outputs.cluster_name!r}, "
             f"{len(synthesis.resources)} resources, synthesized offline into {out_dir}/",
             f"  {len(synthesis.manifests())} Kubernetes manifests, {len(synthesis.releases())} Helm releases, "
             "plan.json"]
    lines.append("Resources by type:")
    for type_, count in sorted(Counter(r.type for r in synthesis.resources).items()):
        lines.append(f"  {count:4d}  {type_}")

    lines += _rendering(rendering) if rendering is not None else []
    lines += applied.summary() if applied is not None else []
    lines += (_team_stack(stack_outputs) if isinstance(stack_outputs, TeamOutputs)
              else _platform_stack(stack_outputs))
    # A warning ending in ":" introduces those after it (the placeholders' heading) and is not one itself.
    count = sum(not warning.endswith(":") for warning in synthesis.warnings)
    lines.append(f"Warnings: {count}" if synthesis.warnings else "Warnings: none")
    lines += [f"  {warning}" for warning in synthesis.warnings]
    mandatory = sum(v.mandatory for v in violations)
    lines.append(f"Policies: {len(RESOURCE_RULES) + len(STACK_RULES)} rules, {mandatory} mandatory and "
                 f"{len(violations) - mandatory} advisory violations")
    lines += [f"  {violation}" for violation in violations]
    return "\n".join(lines)
