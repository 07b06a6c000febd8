"""Writing a synthesis to disk: one file per Kubernetes object, each Helm release, and a plan of everything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from synth.engine import Synthesis
from synth.render import Rendering

def manifest_filename(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata", {})
    namespace = metadata.get("namespace") or "_cluster"
    return f"{namespace}__{manifest['kind'].lower()}__{metadata.get('name', 'unnamed')}.yaml"


def plan(synthesis: Synthesis) -> dict[str, Any]:
    return {
        "project": synthesis.project,
        "stack": synthesis.stack,
        "resources": [r.as_plan_entry() for r in synthesis.resources],
        "outputs": synthesis.outputs,
    }


def _dump_yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False)


def write_rendering(rendering: Rendering, out_dir: Path) -> None:
    """rendered/<release>/<namespace>__<kind>__<name>.json: each object a Helm release creates.

    JSON (which is YAML too), because emitting the charts' large CRDs as YAML takes seconds per stack."""
    for name, release in sorted(rendering.releases.items()):
        folder = out_dir / "rendered" / name
        folder.mkdir(parents=True)
        for manifest in release.objects:
            stem = manifest_filename(manifest).removesuffix(".yaml")
            target = folder / f"{stem}.json"
            # A hook may share its name and kind with a manifest object (it replaces it while the hook runs).
            suffix = 2
            while target.exists():
                target = folder / f"{stem}.{suffix}.json"
                suffix += 1
            target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def write(synthesis: Synthesis, out_dir: Path, rendering: Rendering | None = None) -> None:
    """Replace out_dir with the synthesis: the same program and config always give the same bytes."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / "manifests").mkdir(parents=True)
    for manifest in synthesis.manifests():
        target = out_dir / "manifests" / manifest_filename(manifest)
        if target.exists():
            # Two resources applying one object fight over it on every update.
            raise ValueError(f"two resources declare the same Kubernetes object {target.stem}")
        target.write_text(_dump_yaml(manifest))
    releases = synthesis.releases()
    if releases:
        (out_dir / "helm").mkdir()
    for release in releases:
        (out_dir / "helm" / f"{release.name}.yaml").write_text(_dump_yaml(release.inputs))
    if rendering is not None:
        write_rendering(rendering, out_dir)
    (out_dir / "plan.json").write_text(json.dumps(plan(synthesis), indent=2, sort_keys=True) + "\n")
