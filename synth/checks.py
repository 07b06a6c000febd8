"""Running the platform's rules over a synthesized stack, as the policy pack does over a preview."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from core.outputs import PlatformOutputs
from policies.rules import (GPU_AGENT_CHARTS, MANDATORY, RESOURCE_RULES, STACK_RULES, UNKNOWN, Resource, ResourceRule,
                            Rule, resource_rules)
from synth.engine import Synthesis, UNKNOWN as UNKNOWN_TEXT
from synth.render import CHART_ANNOTATION, RELEASE_ANNOTATION, Rendering


@dataclass(frozen=True)
class Violation:
    rule: Rule
    enforcement: str
    urn: str
    message: str

    @property
    def mandatory(self) -> bool:
        return self.enforcement == MANDATORY

    def __str__(self) -> str:
        return f"[{self.enforcement}] {self.rule.name}: {self.urn}: {self.message}"


def _with_unknowns(value: Any) -> Any:
    """The synth's inputs as a preview hands them to a rule: unknown values as the rules' UNKNOWN marker."""
    if isinstance(value, dict):
        return {key: _with_unknowns(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_unknowns(item) for item in value]
    return UNKNOWN if value == UNKNOWN_TEXT else value


def enforcement_levels(path: Path | None) -> dict[str, str]:
    """Rule name -> level from a policy config file, in the format of `pulumi preview --policy-pack-config`."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the policy config: {exc}") from None
    levels = {}
    known = {rule.name for rule in (*RESOURCE_RULES, *STACK_RULES)} | {"all"}
    for name, setting in document.items():
        level = setting.get("enforcementLevel") if isinstance(setting, dict) else setting
        if name not in known or level not in ("mandatory", "advisory", "disabled"):
            raise ConfigError(f"{path}: {name}: expected one of the rules ({', '.join(sorted(known))}) set to "
                              f"mandatory, advisory or disabled, got {setting!r}")
        levels[name] = level
    return levels


def _rules(synthesis: Synthesis) -> tuple[ResourceRule, ...]:
    """The resource rules as they apply to this stack (its monitoring namespace holds node agents)."""
    return resource_rules(PlatformOutputs.read(synthesis.outputs).monitoring_namespace)


def check(synthesis: Synthesis, levels: dict[str, str] | None = None) -> list[Violation]:
    levels = levels or {}
    resources = [Resource(r.type, r.urn, _with_unknowns(r.inputs)) for r in synthesis.resources if r.custom]

    def level(rule: Rule) -> str:
        return levels.get(rule.name, levels.get("all", rule.enforcement))

    violations = [Violation(rule, level(rule), resource.urn, message)
                  for rule in _rules(synthesis) if level(rule) != "disabled"
                  for resource in resources
                  for message in rule.check(resource.type, resource.props, synthesis.stack)]
    violations += [Violation(rule, level(rule), urn, message)
                   for rule in STACK_RULES if level(rule) != "disabled"
                   for urn, message in rule.check(resources)]
    return violations


def _resource_type(obj: dict[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return f"kubernetes:{api_version if '/' in api_version else 'core/' + api_version}:{obj.get('kind')}"


def check_rendered(rendering: Rendering, synthesis: Synthesis,
                   levels: dict[str, str] | None = None) -> list[Violation]:
    """The resource rules over every object the Helm releases render: a `pulumi preview` with the policy pack
    sees only a Release's inputs, so this is where the charts' own workloads are judged. The per-node GPU
    agents' charts may tolerate the GPU taint, as their Releases may."""
    levels = levels or {}
    violations = []
    for obj in rendering.objects():
        annotations = obj["metadata"]["annotations"]
        chart = annotations[CHART_ANNOTATION].rsplit("-", 1)[0]
        metadata = obj["metadata"]
        where = (f"{annotations[RELEASE_ANNOTATION].split('/')[-1]} ({annotations[CHART_ANNOTATION]}): "
                 f"{obj.get('kind')} {metadata.get('namespace') or '_cluster'}/{metadata.get('name')}")
        for rule in _rules(synthesis):
            level = levels.get(rule.name, levels.get("all", rule.enforcement))
            if level == "disabled" or (rule.name == "only-gpu-agents-tolerate-gpu-taint"
                                       and chart in GPU_AGENT_CHARTS):
                continue
            violations += [Violation(rule, level, where, message)
                           for message in rule.check(_resource_type(obj), obj, synthesis.stack)]
    return violations
