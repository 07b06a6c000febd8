"""Build the e2e tools from their Go modules, at the pins in versions.py, into a cache outside the repo.

`python -m e2e.tools` builds what is missing and prints `name path` lines; `python -m e2e.tools NAME...` builds
only those. A tool is rebuilt only when its pin or its wrapper module (go.mod, go.sum, any source beside them)
changes: the cache key is a hash of both. Builds need the Go module proxy; run them before entering the e2e
network namespace.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from versions import E2E_TOOLS, GoTool

WRAPPERS = Path(__file__).resolve().parent / "tools"


def cache_dir() -> Path:
    return Path(os.environ.get("MLPLATFORM_E2E_CACHE", Path.home() / ".cache" / "mlplatform" / "e2e"))


class BuildError(RuntimeError):
    pass


def _key(tool: GoTool) -> str:
    digest = hashlib.sha256(f"{tool.module}@{tool.version}:{tool.package}:{tool.ldflags}".encode())
    if tool.wrapper:
        for name in ("go.mod", "go.sum"):
            path = WRAPPERS / tool.wrapper / name
            if path.exists():
                digest.update(path.read_bytes())
        for path in sorted((WRAPPERS / tool.wrapper).iterdir()):  # sources beside them (a main.go)
            if path.is_file() and path.name not in ("go.mod", "go.sum"):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def binary_path(tool: GoTool) -> Path:
    return cache_dir() / "bin" / f"{tool.name}-{tool.version}-{_key(tool)}" / tool.name


def built_or_on_path(name: str) -> str | None:
    """The tool `name` as `make e2e-tools` built it at its pin, else any on PATH, else None: for make test, which
    never builds one (a build takes minutes)."""
    tool = next(t for t in E2E_TOOLS if t.name == name)
    built = binary_path(tool)
    return str(built) if built.exists() else shutil.which(name)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the e2e tools are built from Go modules, and no `go` is on PATH: install Go 1.26 or newer")
    return go


def build(tool: GoTool) -> Path:
    out = binary_path(tool)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0")}
    ldflags = ["-ldflags", tool.ldflags] if tool.ldflags else []
    print(f"e2e tools: building {tool.name} {tool.version} ({tool.package})", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=f"mlplatform-e2e-{tool.name}-") as work:
        tmp_out = Path(work) / tool.name
        if tool.wrapper:
            # Build in a copy, so that `go` never writes into the checkout.
            src = Path(work) / "src"
            shutil.copytree(WRAPPERS / tool.wrapper, src)
            package = _PREPARE[tool.wrapper](tool, src, env) if tool.wrapper in _PREPARE else tool.package
            cmd = [_go(), "build", "-trimpath", *ldflags, "-o", str(tmp_out), package]
        else:
            src = Path(work)
            env["GOBIN"] = work
            cmd = [_go(), "install", "-trimpath", *ldflags, f"{tool.package}@{tool.version}"]
        done = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"building {tool.name} {tool.version} failed: {' '.join(cmd)}\n"
                             f"{done.stderr.strip()[-4000:]}")
        if tool.wrapper in _BESIDE:
            module, path = _BESIDE[tool.wrapper]
            beside = out.parent / Path(path).name
            shutil.copyfile(_module_dir(module, src, env) / path, beside)
            beside.chmod(0o755)
        shutil.move(str(tmp_out), out)  # last: the binary's presence marks a finished build
    return out


def _module_dir(module: str, src: Path, env: dict[str, str]) -> Path:
    """The module cache folder of `module` at the version the wrapper module in `src` selects."""
    done = subprocess.run([_go(), "mod", "download", "-json", module], cwd=src, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise BuildError(f"go mod download {module} failed:\n{done.stdout.strip()}{done.stderr.strip()}")
    return Path(json.loads(done.stdout)["Dir"])


def _kubernetes_schema(tool: GoTool, src: Path, env: dict[str, str]) -> str:
    """pulumi-resource-kubernetes embeds schema-embed.json and terraform-mapping-embed.json, which its release
    build makes with `VERSION=<release> go generate` from the module's schema.json and terraform-mapping.json.
    The module cache is read-only (and -overlay may not touch it), so copy the main package into the wrapper's
    copy, run its own generate.go there, and build that copy: it imports everything else from the module."""
    pkg = _module_dir(tool.module, src, env) / "cmd" / "pulumi-resource-kubernetes"
    main = src / "pulumi-resource-kubernetes"
    main.mkdir()
    for name in ("main.go", "generate.go", "schema.json", "terraform-mapping.json"):
        shutil.copyfile(pkg / name, main / name)
    release = re.search(r"/pkg/version\.Version=(\S+)", tool.ldflags)
    if release is None:
        raise BuildError(f"{tool.name}: its ldflags set no pkg/version.Version, which the schema needs")
    done = subprocess.run([_go(), "run", "generate.go"], cwd=main, env={**env, "VERSION": release[1]},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"{tool.name}: generating its schema failed:\n{done.stderr.strip()[-4000:]}")
    return "./pulumi-resource-kubernetes"


# Steps some wrappers need before `go build`, returning the package to build.
_PREPARE = {"pulumi-kubernetes": _kubernetes_schema}
# A file of a module (as the wrapper selects it) that some tools need beside their binary: the Python language
# host runs programs with the SDK's executor script, which Pulumi's releases ship next to it.
_BESIDE = {"pulumi-language-python": ("github.com/pulumi/pulumi/sdk/v3", "python/cmd/pulumi-language-python-exec")}


def build_all(names: list[str] | None = None) -> dict[str, Path]:
    tools = [t for t in E2E_TOOLS if not names or t.name in names]
    unknown = set(names or ()) - {t.name for t in tools}
    if unknown:
        raise BuildError(f"unknown e2e tool(s) {sorted(unknown)}; versions.E2E_TOOLS has "
                         f"{sorted(t.name for t in E2E_TOOLS)}")
    return {tool.name: build(tool) for tool in tools}


def main(argv: list[str]) -> int:
    try:
        paths = build_all(argv or None)
    except BuildError as exc:
        print(f"e2e tools: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(name, path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
