"""Running the platform's rules over a synthesized stack, as the policy pack does over a preview."""

from __future__ import annotations

from dataclasses import dataclass

from policies.rules import RESOURCE_RULES, ResourceRule
from synth.engine import Synthesis


@dataclass(frozen=True)
class Violation:
    rule: ResourceRule
    urn: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule.enforcement}] {self.rule.name}: {self.urn}: {self.message}"


def check(synthesis: Synthesis, rules: tuple[ResourceRule, ...] = RESOURCE_RULES) -> list[Violation]:
    return [Violation(rule, resource.urn, message)
            for resource in synthesis.resources if resource.custom
            for rule in rules
            for message in rule.check(resource.type, resource.inputs)]
