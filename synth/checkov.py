"""checkov's Kubernetes checks over everything a stack applies: its own objects and every chart's.

checkov runs from its own virtualenv (`make checkov-venv`: .venv-checkov, pinned in requirements-checkov.txt),
as its dependencies pin versions the project's do not share. It runs offline: no policy download, no upload,
no API key. CRDs are left out (no checkov check reads them, and they are most of the bytes). A run is cached
by the hash of its input in ~/.cache/mlplatform/checkov, so that a second synth or test of an unchanged stack
costs nothing; checkov itself takes several seconds per stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.progress import progress
from synth import PROJECT_DIR
from synth.applied import origin
from synth.render import PULL_CACHE

CHECKOV = Path(os.environ.get("MLPLATFORM_CHECKOV", PROJECT_DIR / ".venv-checkov" / "bin" / "checkov"))
CACHE = PULL_CACHE.parent / "checkov"
# Offline: --skip-download keeps checkov from fetching policies and guides from its platform.
FLAGS = ["--framework", "kubernetes", "--skip-download", "--output", "json", "--compact"]


@dataclass(frozen=True)
class Failure:
    source: str  # `<release> (<chart>)`, or `stack`
    check_id: str
    check_name: str
    resource: str


@dataclass
class CheckovReport:
    passed: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)

    def summary(self) -> list[str]:
        failed = Counter(failure.source for failure in self.failures)
        lines = [f"checkov: {sum(self.passed.values())} checks pass, {len(self.failures)} fail"]
        lines += [f"  {source:<48} {self.passed[source]:4d} pass, {failed[source]:4d} fail"
                  for source in sorted(set(self.passed) | set(failed))]
        return lines

    def listing(self) -> str:
        """Every failed check, per object: what `make checkov` writes to out/<stack>/checkov.txt."""
        by_object: dict[tuple[str, str], list[Failure]] = {}
        for failure in self.failures:
            by_object.setdefault((failure.source, failure.resource), []).append(failure)
        lines = []
        for (source, resource), failures in sorted(by_object.items()):
            lines.append(f"{source}: {resource}")
            lines += [f"  {f.check_id}  {f.check_name}" for f in sorted(failures, key=lambda f: f.check_id)]
        return "\n".join(lines) + "\n" if lines else "no check fails\n"


LISTING_FILE = "checkov.txt"


def checkov_available() -> bool:
    return CHECKOV.is_file()


def _folder(source: str) -> str:
    return source.replace(" ", "_").replace("(", "").replace(")", "")


def run_checkov(objects: list[dict[str, Any]]) -> CheckovReport:
    scanned = [obj for obj in objects if obj.get("kind") != "CustomResourceDefinition"]
    sources = {_folder(origin(obj)): origin(obj) for obj in scanned}
    payload = json.dumps(sorted((_folder(origin(obj)), json.dumps(obj, sort_keys=True)) for obj in scanned))
    key = hashlib.sha256((payload + str(CHECKOV.resolve()) + " ".join(FLAGS)).encode()).hexdigest()
    cached = CACHE / f"{key}.json"
    if cached.is_file():
        results = json.loads(cached.read_text())
    else:
        progress(f"running checkov over {len(scanned)} objects (several seconds per stack; cached afterwards)")
        with tempfile.TemporaryDirectory(prefix="mlplatform-checkov-") as work:
            for index, obj in enumerate(scanned):
                folder = Path(work) / _folder(origin(obj))
                folder.mkdir(exist_ok=True)
                (folder / f"{index}.json").write_text(json.dumps(obj))
            done = subprocess.run([str(CHECKOV), "-d", work, *FLAGS], capture_output=True, text=True, check=False,
                                  env={**os.environ, "BC_API_KEY": "", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
        if done.returncode not in (0, 1):
            raise RuntimeError(f"checkov failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        document = json.loads(done.stdout)
        results = [document] if isinstance(document, dict) else document
        CACHE.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed into place: two runs at once (two shells, the test workers) never read the
        # other's half-written file.
        with tempfile.NamedTemporaryFile("w", dir=CACHE, prefix=f".{key}-", suffix=".json", delete=False) as aside:
            aside.write(json.dumps(results))
        os.replace(aside.name, cached)
    report = CheckovReport()
    for result in results:
        checks = result.get("results") or {}
        for check in checks.get("passed_checks", []):
            report.passed[sources[check["file_path"].strip("/").split("/")[0]]] += 1
        for check in checks.get("failed_checks", []):
            report.failures.append(Failure(sources[check["file_path"].strip("/").split("/")[0]], check["check_id"],
                                           check["check_name"], check["resource"]))
    return report
