"""A Go module's files at a pinned version, for CRDs that no chart we install carries: Go's module proxy serves
them and Go's module cache (outside the repo) keeps them, so the first use downloads once and later ones read
the cache offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

# A first download is a few hundred kilobytes; a proxy that does not answer in this long is treated as absent.
DOWNLOAD_TIMEOUT_SECONDS = 180


class ModuleUnavailable(Exception):
    """The module could not be had here (no Go, or the proxy refused): the caller names what went unchecked."""


@cache
def module_dir(module: str, version: str) -> Path:
    go = shutil.which("go")
    if go is None:
        raise ModuleUnavailable(f"{module}@{version} comes from Go's module proxy, and no `go` is on PATH")
    # Outside any module (a temporary folder), so that no go.mod of the checkout is read or written.
    with tempfile.TemporaryDirectory(prefix="mlplatform-gomod-") as folder:
        try:
            done = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=folder,
                                  capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_SECONDS,
                                  env={**os.environ, "GOFLAGS": "-mod=mod"})
        except subprocess.TimeoutExpired:
            raise ModuleUnavailable(f"`go mod download {module}@{version}` did not end within "
                                    f"{DOWNLOAD_TIMEOUT_SECONDS} s") from None
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        answer = {"Error": done.stderr.strip() or f"exit status {done.returncode}"}
    if answer.get("Error") or not answer.get("Dir"):
        raise ModuleUnavailable(f"`go mod download {module}@{version}` failed: {answer.get('Error')}")
    return Path(answer["Dir"])
