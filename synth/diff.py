"""`make diff BASE=<git rev>`: what `pulumi preview` would show for this change, offline.

Synthesizes every stack at BASE and in the working tree and compares their plans: resources to create,
update (with the input paths that change), replace and delete. A resource is known by its URN, so a URN
that changes is a replacement of real infrastructure, and is flagged as one, with the alias that avoids it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.progress import progress
from synth import PROJECT_DIR, delivery
from synth.pipeline import CHECKS_FILE
from synth.render import CHARTS_ENV, chart_dirs
from synth.schema import UPSTREAM_DIR
from synth.stackfile import available_stacks


ABSENT = "(none)"


def changed_values(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(path, old value, new value) for every input that differs, as dotted paths (list items by index); a key
    only one side has is ABSENT on the other."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in sorted(set(before) | set(after)):
            where = f"{path}.{key}" if path else str(key)
            if key not in before or key not in after:
                changes.append((where, before.get(key, ABSENT), after.get(key, ABSENT)))
            else:
                changes += changed_values(before[key], after[key], where)
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [c for i, (b, a) in enumerate(zip(before, after)) for c in changed_values(b, a, f"{path}[{i}]")]
    return [] if before == after else [(path or "(all)", before, after)]


def changed_paths(before: Any, after: Any) -> list[str]:
    """The input paths whose values differ, as dotted paths (list items by index)."""
    return [path for path, _, _ in changed_values(before, after)]


def _value(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 3] + "..."


def shown_changes(changes: list[tuple[str, Any, Any]], at_most: int = 6) -> str:
    """`path: old -> new; ...`, the first `at_most` of them."""
    shown = "; ".join(f"{path}: {_value(old)} -> {_value(new)}" for path, old, new in changes[:at_most])
    return shown + (f"; and {len(changes) - at_most} more" if len(changes) > at_most else "")


@dataclass
class StackDiff:
    stack: str
    created: list[dict] = field(default_factory=list)
    updated: list[tuple[dict, list[str]]] = field(default_factory=list)
    # URN -> (path, old, new) of each updated resource's changed inputs.
    values: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    replaced: list[tuple[dict, dict]] = field(default_factory=list)  # (before, after): the URN changed
    deleted: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.created or self.updated or self.replaced or self.deleted)

    def render(self) -> str:
        counts = (f"{len(self.created)} to create, {len(self.updated)} to update, {len(self.replaced)} to "
                  f"replace, {len(self.deleted)} to delete")
        lines = [f"Stack {self.stack}: {'no changes' if self.empty else counts}"]
        lines += [f"  +  create   {r['type']}  {r['name']}" for r in self.created]
        lines += [f"  ~  update   {r['type']}  {r['name']}: "
                  + (shown_changes(self.values[r["urn"]]) if r["urn"] in self.values else ", ".join(paths))
                  for r, paths in self.updated]
        lines += [f"  +- REPLACE  {old['type']}  {old['name']} -> {new['name']}: the URN changes, so `pulumi up` "
                  f"deletes and recreates it; if it was only renamed, keep it with "
                  f"aliases=[pulumi.Alias(urn=\"{old['urn']}\")]" for old, new in self.replaced]
        lines += [f"  -  delete   {r['type']}  {r['name']} (if it was renamed rather than removed, add an alias)"
                  for r in self.deleted]
        return "\n".join(lines)


def plan_diff(stack: str, before: dict[str, Any], after: dict[str, Any]) -> StackDiff:
    old = {r["urn"]: r for r in before["resources"]}
    new = {r["urn"]: r for r in after["resources"]}
    diff = StackDiff(stack)
    for urn in sorted(old.keys() & new.keys()):
        if changes := changed_values(old[urn]["inputs"], new[urn]["inputs"]):
            diff.updated.append((new[urn], [path for path, _, _ in changes]))
            diff.values[urn] = changes
    gone = [old[urn] for urn in sorted(old.keys() - new.keys())]
    came = [new[urn] for urn in sorted(new.keys() - old.keys())]
    # A resource that reappears under another URN is the same thing renamed: first by identical inputs, then
    # by the role it plays under a renamed component (team-a-quota under team-a, team-b-quota under team-b),
    # then as the one resource of its type that left and came under one parent.
    def alone(a: dict, b: dict) -> bool:
        return a["parent"] == b["parent"] and [r["type"] for r in gone if r["parent"] == a["parent"]].count(
            a["type"]) == 1 == [r["type"] for r in came if r["parent"] == b["parent"]].count(b["type"])

    for same in (lambda a, b: a["inputs"] == b["inputs"], lambda a, b: _role(a, old) == _role(b, new), alone):
        for resource in list(gone):
            twin = next((r for r in came if r["type"] == resource["type"] and same(resource, r)), None)
            if twin is not None:
                gone.remove(resource)
                came.remove(twin)
                diff.replaced.append((resource, twin))
    diff.deleted, diff.created = gone, came
    return diff


def _role(resource: dict, plan: dict[str, dict]) -> tuple[str, str]:
    """What a resource is within its parent: the parent's type and the name without the parent's name."""
    parent = plan.get(resource["parent"] or "")
    if parent is None:
        return ("", "")
    return parent["type"], resource["name"].removeprefix(parent["name"])


def inputs_environment() -> dict[str, str]:
    """This process's environment, with the chart folders and the upstream CRDs named absolutely.

    Both default to paths relative to the checkout (../shared/upstream); the base revision is synthesized in a
    temporary copy where they do not resolve, so every rendered object of the base would look created.
    """
    return {**os.environ, CHARTS_ENV: os.pathsep.join(str(path.resolve()) for path in chart_dirs()),
            "MLPLATFORM_UPSTREAM": str(UPSTREAM_DIR.resolve())}


def _synthesize_tree(tree: Path, out: Path, stacks: list[str], label: str) -> dict[str, dict[str, Any] | str]:
    """Plan per stack of the project at `tree` (or why a stack did not synthesize), using this environment."""
    plans: dict[str, dict[str, Any] | str] = {}
    environment = inputs_environment()
    for stack in stacks or available_stacks(tree):
        if not (tree / f"Pulumi.{stack}.yaml").exists():
            continue
        progress(f"synthesizing {stack} at {label}")
        result = subprocess.run([sys.executable, "-m", "synth", stack, "--out", str(out / stack)], cwd=tree,
                                capture_output=True, text=True, check=False, env=environment)
        plan = out / stack / "plan.json"
        # Exit 1 is a policy violation: the plan is still written, and still what a preview would show.
        plans[stack] = json.loads(plan.read_text()) if result.returncode in (0, 1) and plan.exists() else (
            result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}")
    return plans


def rendered_objects_in(out: Path) -> dict[str, dict[str, Any]]:
    """`<release>/<file>` -> object, for every object the synth rendered into out/<stack>/rendered/."""
    return {f"{path.parent.name}/{path.stem}": json.loads(path.read_text())
            for path in sorted((out / "rendered").glob("*/*.json"))}


def rendered_diff(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    """What changes in the objects the Helm releases apply: a chart bump shows its Deployments, RBAC and CRDs."""
    def name(key: str, obj: dict[str, Any]) -> str:
        release, _, _ = key.partition("/")
        metadata = obj.get("metadata") or {}
        return f"{release}: {obj.get('kind')} {metadata.get('namespace') or '_cluster'}/{metadata.get('name')}"

    lines = [f"  +  create   {name(key, after[key])}" for key in sorted(after.keys() - before.keys())]
    for key in sorted(before.keys() & after.keys()):
        if changes := changed_values(before[key], after[key]):
            lines.append(f"  ~  update   {name(key, after[key])}: {shown_changes(changes)}")
    lines += [f"  -  delete   {name(key, before[key])}" for key in sorted(before.keys() - after.keys())]
    if not lines:
        return []
    return [f"  Rendered by its Helm releases: {len(lines)} objects change"] + ["  " + line for line in lines]


def _export(rev: str, into: Path) -> None:
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=PROJECT_DIR, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


@dataclass(frozen=True)
class Revisions:
    """Each stack's plan (or why it did not synthesize) at the base revision and in the working tree, and the
    objects its Helm releases render at both."""

    before: dict[str, dict[str, Any] | str]
    after: dict[str, dict[str, Any] | str]
    rendered: dict[str, tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]]
    # What the synth's checks found in the working tree, per stack (synth/pipeline.py writes it).
    checks: dict[str, dict[str, Any]]


def checks_in(out: Path) -> dict[str, Any]:
    path = out / CHECKS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def platform_of(stack: str, project_dir: Path) -> str | None:
    """The platform stack a team stack builds on (its short name), or None for a platform stack."""
    if not (project_dir / f"Pulumi.{stack}.yaml").is_file():
        return None
    platform = delivery.read(stack, project_dir).config.get("platformStack")
    return str(platform).rsplit("/", 1)[-1] if platform else None


# What changes here changes no stack: documentation, the tests, the workflows.
_INERT = ("docs/", "tests/", ".github/", "e2e/")


def touched_stacks(base: str, head: Path = PROJECT_DIR) -> list[str] | None:
    """The stacks a change between `base` and the working tree can alter, or None for all of them.

    A stack file's change touches that stack and the team stacks on it; a change to the code touches all.
    """
    changed = subprocess.run(["git", "diff", "--name-only", base, "--"], cwd=head, capture_output=True, text=True,
                             check=True).stdout.split()
    changed += subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=head, capture_output=True,
                              text=True, check=True).stdout.split()
    stacks: set[str] = set()
    for name in changed:
        if name.startswith(_INERT) or (name.endswith(".md") and "/" not in name):
            continue
        if not (name.startswith("Pulumi.") and name.endswith(".yaml") and name != "Pulumi.yaml" and "/" not in name):
            return None
        stacks.add(name.removeprefix("Pulumi.").removesuffix(".yaml"))
    teams = {stack for stack in available_stacks(head) if platform_of(stack, head) in stacks}
    return sorted(stacks | teams)


def synthesize_revisions(base: str, stacks: list[str], head: Path = PROJECT_DIR) -> Revisions:
    with tempfile.TemporaryDirectory(prefix="mlplatform-diff-") as tmp:
        base_tree = Path(tmp) / "base"
        progress(f"exporting {base} into a temporary folder")
        _export(base, base_tree)
        before = _synthesize_tree(base_tree, Path(tmp) / "base-out", stacks, base)
        after = _synthesize_tree(head, Path(tmp) / "head-out", stacks, "the working tree")
        rendered = {stack: (rendered_objects_in(Path(tmp) / "base-out" / stack),
                            rendered_objects_in(Path(tmp) / "head-out" / stack)) for stack in after}
        checks = {stack: checks_in(Path(tmp) / "head-out" / stack) for stack in after}
    return Revisions(before, after, rendered, checks)


def diff_revisions(base: str, stacks: list[str], head: Path = PROJECT_DIR) -> str:
    revisions = synthesize_revisions(base, stacks, head)
    before, after, rendered = revisions.before, revisions.after, revisions.rendered
    sections = [f"Offline preview of the working tree against {base}:"]
    for stack in sorted(before.keys() | after.keys()):
        old, new = before.get(stack), after.get(stack)
        if isinstance(new, str):
            sections.append(f"Stack {stack}: does not synthesize: {new}")
        elif new is None:
            sections.append(f"Stack {stack}: removed from the repo (its resources stay until `pulumi destroy`)")
        elif old is None:
            sections.append(f"Stack {stack}: new stack, {len(new['resources'])} resources to create")
        elif isinstance(old, str):
            sections.append(f"Stack {stack}: did not synthesize at {base} ({old}); now {len(new['resources'])} "
                            "resources")
        else:
            sections.append(plan_diff(stack, old, new).render())
        if stack in rendered and not isinstance(new, str):
            sections += rendered_diff(*rendered[stack])
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth.diff", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("stacks", nargs="*", help="the stacks to compare (default: every stack in either tree)")
    parser.add_argument("--base", help="the git revision to compare the working tree with")
    parser.add_argument("--plans", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="compare two plan.json files instead (two configs of one stack)")
    args = parser.parse_args(argv)
    if args.plans:
        before, after = (json.loads(path.read_text()) for path in args.plans)
        print(plan_diff(after.get("stack", "?"), before, after).render())
        return 0
    if not args.base:
        parser.error("give --base <git rev> or --plans BEFORE AFTER")
    try:
        stacks = args.stacks
        if not stacks:
            touched = touched_stacks(args.base)
            if touched == []:
                print(f"Offline preview of the working tree against {args.base}: no stack changes (only "
                      "documentation, tests or workflows differ).")
                return 0
            stacks = touched or []
            progress(f"comparing {args.base} with the working tree: synthesizing "
                     f"{', '.join(stacks) if stacks else 'every stack (the code changed)'} at both, offline")
        print(diff_revisions(args.base, stacks))
    except subprocess.CalledProcessError as exc:
        print(f"error: git cannot export {args.base}: {exc.stderr.decode().strip()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
