"""The one synth pipeline: `make synth`, `make review`, `make diff` and `make bench` all run a stack through it,
so that no two of them can disagree about what a stack declares, renders, or breaks.

synthesize (the real program, offline) -> delivery checks -> render every Helm release -> the policy rules over
our objects and the rendered ones -> schemas, CRD rules and placement over everything applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth import PROJECT_DIR, delivery, synthesize
from synth.applied import AppliedReport, check_applied
from synth.checks import Violation, check, check_rendered
from synth.engine import Synthesis
from synth.output import write
from synth.render import Rendering, kubernetes_version, render_stack, unrendered_warnings

CHECKS_FILE = "checks.json"


@dataclass
class Result:
    synthesis: Synthesis
    rendering: Rendering
    violations: list[Violation]
    applied: AppliedReport | None

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.mandatory]

    @property
    def failed(self) -> bool:
        """A mandatory rule broken, or an applied object that fails its schema or a CRD's rule."""
        return bool(self.mandatory) or bool(self.applied and self.applied.broken)

    def checks(self) -> dict[str, Any]:
        """What the checks found, as `make review` reads it back from the synth's output."""
        return {"violations": [str(v) for v in self.violations], "mandatory": len(self.mandatory),
                "advisory": len(self.violations) - len(self.mandatory),
                "broken": bool(self.applied and self.applied.broken)}


def run(stack: str, *, levels: dict[str, str] | None = None, config: dict[str, str] | None = None,
        project_dir: Path = PROJECT_DIR, render: bool = True, out_dir: Path | None = None) -> Result:
    """Synthesize `stack` and run every check; with `out_dir`, write it out (manifests, rendered objects, plan,
    and what the checks found). `render=False` skips Helm (the benchmark's synthetic stacks)."""
    synthesis = synthesize(stack, config=config, project_dir=project_dir)
    if config is None:
        synthesis.warnings.extend(delivery.check(stack, project_dir))
    rendering = render_stack(synthesis) if render else Rendering(kubernetes_version(synthesis))
    synthesis.warnings.extend(unrendered_warnings(rendering))
    violations = check(synthesis, levels) + check_rendered(rendering, synthesis, levels)
    applied = check_applied(synthesis, rendering) if render else None
    if applied is not None:
        synthesis.warnings.extend(f"placement: {problem}" for problem in applied.placement.problems)
    result = Result(synthesis, rendering, violations, applied)
    if out_dir is not None:
        write(synthesis, out_dir, rendering)
        (out_dir / CHECKS_FILE).write_text(json.dumps(result.checks(), indent=2, sort_keys=True) + "\n")
    return result
