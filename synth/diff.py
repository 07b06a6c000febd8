"""`make diff BASE=<git rev>`: what `pulumi preview` would show for this change, offline.

Synthesizes every stack at BASE and in the working tree and compares their plans: resources to create,
update (with the input paths that change), replace and delete. A resource is known by its URN, so a URN
that changes is a replacement of real infrastructure, and is flagged as one, with the alias that avoids it.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth import PROJECT_DIR
from synth.pipeline import CHECKS_FILE
from synth.stackfile import available_stacks


def changed_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """The input paths whose values differ, as dotted paths (list items by index)."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths = []
        for key in sorted(set(before) | set(after)):
            where = f"{path}.{key}" if path else str(key)
            if key not in before or key not in after:
                paths.append(where)
            else:
                paths += changed_paths(before[key], after[key], where)
        return paths
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in changed_paths(b, a, f"{path}[{i}]")]
    return [] if before == after else [path or "(all)"]


@dataclass
class StackDiff:
    stack: str
    created: list[dict] = field(default_factory=list)
    updated: list[tuple[dict, list[str]]] = field(default_factory=list)
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
        lines += [f"  ~  update   {r['type']}  {r['name']}: {', '.join(paths)}" for r, paths in self.updated]
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
        if paths := changed_paths(old[urn]["inputs"], new[urn]["inputs"]):
            diff.updated.append((new[urn], paths))
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


def _synthesize_tree(tree: Path, out: Path, stacks: list[str]) -> dict[str, dict[str, Any] | str]:
    """Plan per stack of the project at `tree` (or why a stack did not synthesize), using this environment."""
    plans: dict[str, dict[str, Any] | str] = {}
    for stack in stacks or available_stacks(tree):
        if not (tree / f"Pulumi.{stack}.yaml").exists():
            continue
        result = subprocess.run([sys.executable, "-m", "synth", stack, "--out", str(out / stack)], cwd=tree,
                                capture_output=True, text=True, check=False)
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
        if paths := changed_paths(before[key], after[key]):
            shown = ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")
            lines.append(f"  ~  update   {name(key, after[key])}: {shown}")
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


def synthesize_revisions(base: str, stacks: list[str], head: Path = PROJECT_DIR) -> Revisions:
    with tempfile.TemporaryDirectory(prefix="mlplatform-diff-") as tmp:
        base_tree = Path(tmp) / "base"
        _export(base, base_tree)
        before = _synthesize_tree(base_tree, Path(tmp) / "base-out", stacks)
        after = _synthesize_tree(head, Path(tmp) / "head-out", stacks)
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
        print(diff_revisions(args.base, args.stacks))
    except subprocess.CalledProcessError as exc:
        print(f"error: git cannot export {args.base}: {exc.stderr.decode().strip()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
