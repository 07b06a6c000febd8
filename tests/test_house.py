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


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((PROJECT_DIR / package).rglob("*.py")):
            parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
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
    for module, path in modules():
        for name in imports(path):
            if name.split(".")[0] in CLOUD_SDKS and cloud_of(module) is None:
                problems.append(f"{module} imports the cloud SDK {name}")
        for name in project_imports()[module]:
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
