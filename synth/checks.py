"""Running the platform's rules over a synthesized stack, as the policy pack does over a preview."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from policies.rules import MANDATORY, RESOURCE_RULES, STACK_RULES, UNKNOWN, Resource, Rule
from synth.engine import UNKNOWN as UNKNOWN_TEXT
from synth.engine import Synthesis


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


def check(synthesis: Synthesis, levels: dict[str, str] | None = None) -> list[Violation]:
    levels = levels or {}
    resources = [Resource(r.type, r.urn, _with_unknowns(r.inputs)) for r in synthesis.resources if r.custom]

    def level(rule: Rule) -> str:
        return levels.get(rule.name, levels.get("all", rule.enforcement))

    violations = [Violation(rule, level(rule), resource.urn, message)
                  for rule in RESOURCE_RULES if level(rule) != "disabled"
                  for resource in resources
                  for message in rule.check(resource.type, resource.props, synthesis.stack)]
    violations += [Violation(rule, level(rule), urn, message)
                   for rule in STACK_RULES if level(rule) != "disabled"
                   for urn, message in rule.check(resources)]
    return violations
