"""The shape of the house (DESIGN.md): which packages may import which, and no circle anywhere.

- core/ is the floor: it imports no package of the project (versions.py, the pins, is beside it);
- no cloud imports another, and nothing outside clouds/ imports a cloud's modules or a cloud SDK (config
  reaches the clouds only through their registry, clouds/__init__.py);
- components/, synth/ and verify/ never import clouds/;
- policies/ is a standalone pack: it imports nothing of the project.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from synth import PROJECT_DIR

PACKAGES = ("core", "clouds", "config", "components", "stacks", "synth", "verify", "policies", "e2e")
CLOUD_SDKS = ("pulumi_aws", "pulumi_gcp", "pulumi_command")


def in_virtualenv(path: Path, root: Path) -> bool:
    """Whether a folder between ROOT and PATH is a virtualenv: the policy pack's own (policies/venv, which
    `pulumi preview --policy-pack policies` makes) holds thousands of modules that are none of the project's."""
    return any((folder / "pyvenv.cfg").exists() for folder in path.parents if folder.is_relative_to(root))


def modules(root: Path = PROJECT_DIR) -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if in_virtualenv(path, root):
                continue
            parts = path.relative_to(root).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path, *, top_level: bool = False) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions count: they run too), or only those
    it imports when it is loaded."""
    found = set()
    tree = ast.parse(path.read_text())
    nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
             or not top_level] if top_level else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def project_imports(*, top_level: bool = False) -> dict[str, set[str]]:
    names = dict(modules())
    return {module: {name for name in imports(path, top_level=top_level) if name in names}
            for module, path in names.items()}


def top(module: str) -> str:
    return module.split(".")[0]


def cloud_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "clouds" and len(parts) > 1 else None


def test_core_is_the_floor():
    bad = {m: sorted(i for i in deps if top(i) != "core")
           for m, deps in project_imports().items() if top(m) == "core"}
    assert not {m: d for m, d in bad.items() if d}


def test_no_cloud_imports_another_and_only_clouds_import_a_cloud_or_its_sdk():
    problems = []
    graph = project_imports()
    for module, path in modules():
        for name in imports(path):
            if name.split(".")[0] in CLOUD_SDKS and cloud_of(module) is None:
                problems.append(f"{module} imports the cloud SDK {name}")
        for name in graph[module]:
            target = cloud_of(name)
            if target and cloud_of(module) not in (None, target):
                problems.append(f"{module} (cloud {cloud_of(module)}) imports {name}")
            if target and top(module) != "clouds":
                problems.append(f"{module} imports {name}: only the registry (clouds) is public")
    assert problems == []


def test_components_synth_verify_and_policies_never_import_a_cloud():
    problems = [f"{m} imports {i}" for m, deps in project_imports().items()
                if top(m) in ("components", "synth", "verify", "policies") for i in deps if top(i) == "clouds"]
    assert problems == []


def test_the_policy_pack_stands_alone():
    problems = [f"{m} imports {i}" for m, deps in project_imports().items()
                if top(m) == "policies" for i in deps if top(i) != "policies"]
    assert problems == []


def test_no_module_imports_itself_back_through_others():
    # At load time: a cloud's config builds its cluster by importing the cluster module when called, so that
    # only that cloud's stacks load its SDK; that import runs after both modules are loaded.
    graph = project_imports(top_level=True)
    # A module imports its package's __init__ by being in it; only edges between distinct modules count.
    edges = {m: {d for d in deps if d != m and not m.startswith(d + ".")} for m, deps in graph.items()}
    cycles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for target in sorted(edges.get(module, ())):
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module], done)
    assert cycles == []


def test_a_virtualenv_in_a_package_is_none_of_the_projects_modules(tmp_path):
    # `pulumi preview --policy-pack policies` (make e2e, CI) installs the pack's requirements into
    # policies/venv: its thousands of modules made these tests judge pulumi's own imports, for many minutes.
    (tmp_path / "policies" / "venv" / "lib" / "pulumi").mkdir(parents=True)
    (tmp_path / "policies" / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "policies" / "venv" / "lib" / "pulumi" / "x.py").write_text("import pulumi_aws\n")
    (tmp_path / "policies" / "rules.py").write_text("")
    assert [module for module, _ in modules(tmp_path)] == ["policies.rules"]
