"""`make review BASE=<git rev>`: the pull-request comment, leading with what a reviewer must not miss.

Per stack, first: resources to replace or delete (in red), GPU capacity and team quota changes, chart version
bumps, and the policy results of the new code; then, folded, the whole offline preview (`make diff`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.outputs import PlatformOutputs, is_platform
from synth import PROJECT_DIR
from synth.diff import StackDiff, plan_diff, platform_of, rendered_diff, synthesize_revisions
from synth.engine import HELM_RELEASE

CHANGED_MARKER = "<!-- changed stacks: "
# The first line of our pull-request comment: the workflow edits the comment that starts with it, never the
# preview comments pulumi/actions posts as the same bot (each starts with its own heading).
COMMENT_MARKER = "<!-- mlplatform offline preview -->"
# GitHub refuses a comment body over 65,536 characters; room is left for the note that says what was cut.
COMMENT_LIMIT = 65_000


def _outputs(plan: dict[str, Any]) -> PlatformOutputs | None:
    outputs = plan.get("outputs", {})
    return PlatformOutputs.read(outputs) if is_platform(outputs) else None


def _pools(plan: dict[str, Any]) -> dict[str, int]:
    outputs = _outputs(plan)
    return {pool.name: pool.schedulable_gpus for pool in outputs.gpu_pools} if outputs else {}


def _quotas(plan: dict[str, Any]) -> dict[str, int]:
    outputs = _outputs(plan)
    return {name: team.gpus for name, team in outputs.teams.items()} if outputs else {}


def _changes(before: dict[str, int], after: dict[str, int], what: str) -> list[str]:
    return [f"{what} {name}: {before.get(name, 'none')} -> {after.get(name, 'none')} GPUs"
            for name in sorted(before.keys() | after.keys()) if before.get(name) != after.get(name)]


def _charts(plan: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: f"{r['inputs'].get('chart')} {r['inputs'].get('version')}" for r in plan["resources"]
            if r["type"] == HELM_RELEASE}


def capacity_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """GPU capacity per pool, team GPU quotas, and chart versions, where they change."""
    lines = []
    old, new = _outputs(before), _outputs(after)
    old_total, new_total = old and old.gpu_capacity, new and new.gpu_capacity
    if old_total != new_total:
        lines.append(f"GPU capacity: {old_total} -> {new_total} schedulable GPUs")
    lines += _changes(_pools(before), _pools(after), "GPU pool")
    lines += _changes(_quotas(before), _quotas(after), "team quota")
    old_charts, new_charts = _charts(before), _charts(after)
    lines += [f"chart of {name}: {old_charts[name]} -> {new_charts[name]} (see the rendered objects below)"
              for name in sorted(old_charts.keys() & new_charts.keys()) if old_charts[name] != new_charts[name]]
    return lines


def red(diff: StackDiff) -> list[str]:
    """Replacements and deletions as lines a ```diff block shows in red."""
    return ([f"- REPLACE {old['type']} {old['name']} -> {new['name']}" for old, new in diff.replaced]
            + [f"- DELETE  {r['type']} {r['name']}" for r in diff.deleted])


def policy_lines(checks: dict[str, Any]) -> list[str]:
    """What `make synth` found, as its pipeline wrote it: the rules over our objects and the rendered ones."""
    if not checks:
        return ["policies: not checked (the synth wrote no results)"]
    lines = [f"policies: {checks['mandatory']} mandatory and {checks['advisory']} advisory violations"]
    if checks.get("broken"):
        lines.append("applied objects: some fail their schema or a CRD's rule (see `make synth`)")
    return lines + [f"  {v}" for v in checks["violations"]]


Rendered = tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]


def stack_section(stack: str, before: dict[str, Any] | str | None, after: dict[str, Any] | str | None,
                  rendered: Rendered | None = None, checks: dict[str, Any] | None = None) -> list[str]:
    if isinstance(after, str) or after is None:
        return [f"### {stack}", "", f"**does not synthesize**: {after}" if after else "removed from the repo", ""]
    if not isinstance(before, dict):
        return [f"### {stack}", "", f"new stack: {len(after['resources'])} resources to create", "",
                *policy_lines(checks or {}), ""]
    diff = plan_diff(stack, before, after)
    lines = [f"### {stack}", ""]
    if removed := red(diff):
        lines += ["```diff", *removed, "```", ""]
    lines += [f"- {line}" for line in capacity_lines(before, after)]
    lines += [f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}" for line in policy_lines(checks or {})]
    lines += ["", f"<details><summary>{diff.render().splitlines()[0]}</summary>", "", "```", diff.render(), "```",
              "", "</details>", ""]
    # What a chart bump (or new values) changes in the objects the releases apply.
    if rendered and (objects := rendered_diff(*rendered)):
        lines += [f"<details><summary>{objects[0].strip()}</summary>", "", "```", *objects, "```", "",
                  "</details>", ""]
    return lines


def review(base: str, stacks: list[str], head: Path = PROJECT_DIR) -> str:
    revisions = synthesize_revisions(base, stacks, head)
    before, after = revisions.before, revisions.after
    lines = [COMMENT_MARKER, f"## Offline preview against `{base}`", "",
             "Replacements and deletions first, then GPU capacity, team quotas, chart bumps and policy results; "
             "every change is folded under each stack.", ""]
    changed = {stack for stack in after.keys() & before.keys() if changes(before[stack], after[stack])}
    for stack in sorted(before.keys() | after.keys()):
        section = stack_section(stack, before.get(stack), after.get(stack), revisions.rendered.get(stack),
                                revisions.checks.get(stack))
        platform = platform_of(stack, head)
        if platform in changed:
            section[2:2] = [f"> Previewed against `{platform}` as deployed: this pull request also changes "
                            f"`{platform}`, which the team stack sees only once it is deployed.", ""]
        lines += section
    # For the workflow (the team previews' note), invisible on the pull request.
    lines.append(f"{CHANGED_MARKER}{json.dumps(sorted(changed))} -->")
    return "\n".join(lines)


def comment(text: str, limit: int = COMMENT_LIMIT) -> str:
    """The review cut to fit one pull-request comment: whole lines, open code blocks and folds closed, a note
    where it stops, and the changed-stacks marker kept."""
    if len(text) <= limit:
        return text
    marker = next((line for line in text.splitlines() if line.startswith(CHANGED_MARKER)), "")
    note = ("", "**The preview is cut here to fit a comment**: the whole of it is in the job summary, or run "
                  "`make review` locally.", marker)
    budget = limit - len("\n".join(note)) - len("\n```\n</details>") * 8
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        if size + len(line) + 1 > budget:
            break
        kept.append(line)
        size += len(line) + 1
    if sum(line.startswith("```") for line in kept) % 2:
        kept.append("```")
    opened = sum(line.startswith("<details>") for line in kept) - sum(line == "</details>" for line in kept)
    return "\n".join([*kept, *["</details>"] * opened, *note])


def changes(before: dict[str, Any] | str, after: dict[str, Any] | str) -> bool:
    """The stack's resources or outputs (what team stacks read) differ."""
    if isinstance(before, str) or isinstance(after, str):
        return before != after
    return not plan_diff("", before, after).empty or before.get("outputs") != after.get("outputs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth.review", description=(__doc__ or '').splitlines()[0])
    parser.add_argument("stacks", nargs="*", help="the stacks to review (default: every stack)")
    parser.add_argument("--base", required=True, help="the git revision the pull request goes into")
    parser.add_argument("--comment", type=Path, help="also write the review, cut to fit a pull-request comment, here")
    args = parser.parse_args(argv)
    text = review(args.base, args.stacks)
    if args.comment:
        args.comment.write_text(comment(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
