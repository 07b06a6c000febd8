"""The short human summary `make synth` prints: what the stack declares, its GPU capacity and the quotas on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from policies.rules import RESOURCE_RULES, STACK_RULES
from synth.checks import Violation
from synth.engine import Synthesis
from synth.output import helm_releases, manifests
from synth.render import HOOK_ANNOTATION, Rendering


def _sharing(sharing: dict) -> str:
    if sharing.get("timeSlicing"):
        return f"time-slicing x{sharing['timeSlicing']['replicas']}"
    return f"MIG {sharing['migStrategy']}" if sharing.get("migStrategy") != "none" else "none"


def _team_stack(outputs: dict) -> list[str]:
    budget = outputs.get("budget") or {}
    return [f"Team {outputs['team']} on cluster {outputs.get('clusterName')!r}: namespaces "
            f"{', '.join(outputs.get('namespaces', []))}; budget {budget.get('gpus')} GPU, cpu {budget.get('cpu')}, "
            f"memory {budget.get('memory')}"]


def _platform_stack(outputs: dict) -> list[str]:
    lines = []
    pools = outputs.get("gpuPools", [])
    lines.append(f"GPU pools: {len(pools)}, up to {outputs.get('gpuCapacity', 0)} schedulable GPUs")
    for pool in pools:
        lines.append(f"  {pool['name']:<12} {pool['accelerator']:<22} {pool['minNodes']}-{pool['maxNodes']} nodes "
                     f"x {pool['gpusPerNode']} GPU, {'spot' if pool['spot'] else 'on-demand'}, "
                     f"taints {', '.join(pool['taints'])}, sharing {_sharing(pool['sharing'])}")
    teams = outputs.get("teams", {})
    quota_gpus = sum(team["gpus"] for team in teams.values())
    lines.append(f"Team GPU quotas: {quota_gpus} of {outputs.get('gpuCapacity', 0)} GPUs")
    for name, team in sorted(teams.items()):
        lines.append(f"  {name:<24} {team['gpus']} GPU, cpu {team['cpu']}, memory {team['memory']}"
                     + (" (its own stack)" if team.get("ownStack") else ""))
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
    for name, why in sorted(rendering.unavailable.items()):
        lines.append(f"  {name:<24} NOT RENDERED: {why}")
    return lines


def summarize(synthesis: Synthesis, out_dir: Path, violations: list[Violation],
              rendering: Rendering | None = None) -> str:
    outputs = synthesis.outputs
    kind = f"team stack of {outputs['team']}" if "team" in outputs else f"{outputs.get('cloud', '?')} cluster"
    lines = [f"Stack {synthesis.stack}: {kind} {outputs.get('clusterName', '?')!r}, "
             f"{len(synthesis.resources)} resources, synthesized offline into {out_dir}/",
             f"  {len(manifests(synthesis))} Kubernetes manifests, {len(helm_releases(synthesis))} Helm releases, "
             "plan.json"]
    lines.append("Resources by type:")
    for type_, count in sorted(Counter(r.type for r in synthesis.resources).items()):
        lines.append(f"  {count:4d}  {type_}")

    lines += _rendering(rendering) if rendering is not None else []
    lines += _team_stack(outputs) if "team" in outputs else _platform_stack(outputs)
    lines.append("Warnings:" if synthesis.warnings else "Warnings: none")
    lines += [f"  {warning}" for warning in synthesis.warnings]
    mandatory = sum(v.mandatory for v in violations)
    lines.append(f"Policies: {len(RESOURCE_RULES) + len(STACK_RULES)} rules, {mandatory} mandatory and "
                 f"{len(violations) - mandatory} advisory violations")
    lines += [f"  {violation}" for violation in violations]
    return "\n".join(lines)
