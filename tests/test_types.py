"""The static type check: basedpyright over the project's code (pyrightconfig.json says which), zero errors.

Under the SDK's mocks a misspelt key in a nested resource argument is just another input, echoed back; only
the SDK's TypedDicts (`*ArgsDict`) know the keys, so this check is what catches it.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from synth import PROJECT_DIR

CHECKER = Path(sys.executable).with_name("basedpyright")


def _start(*args: str, cwd: Path = PROJECT_DIR) -> subprocess.Popen[str]:
    return subprocess.Popen([str(CHECKER), "--outputjson", "--pythonpath", sys.executable, *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _errors(checker: subprocess.Popen[str]) -> list[dict[str, Any]]:
    stdout, stderr = checker.communicate(timeout=600)
    if not stdout.strip():
        raise AssertionError(f"basedpyright exited {checker.returncode} without a report: {stderr}")
    return [d for d in json.loads(stdout)["generalDiagnostics"] if d["severity"] == "error"]


def _show(errors: list[dict[str, Any]]) -> str:
    return "\n".join(f"{Path(e['file']).relative_to(PROJECT_DIR) if Path(e['file']).is_relative_to(PROJECT_DIR) else e['file']}"
                     f":{e['range']['start']['line'] + 1}: {e['message']}" for e in errors)


# The whole check takes about 40 s of one core, most of it reading the cloud SDKs. In a serial run it starts when
# this file is collected, and runs on the second core beside the rest of the suite. Under pytest-xdist (`make
# test`) every worker collects this file, and the workers already keep both cores busy: the one that runs the
# test starts the check, so it runs once (conftest.py schedules it first, so that no worker waits on it at the end).
_project_check = None if os.environ.get("PYTEST_XDIST_WORKER") else _start()
if _project_check is not None:
    atexit.register(_project_check.kill)


def test_the_project_type_checks_with_zero_errors():
    errors = _errors(_project_check or _start())
    assert not errors, f"basedpyright found {len(errors)} type errors:\n{_show(errors)}"


def test_a_misspelt_key_in_a_nested_resource_argument_is_a_type_error(tmp_path):
    # The SDK's TypedDicts spell keys as its Args classes do (snake_case) and translate them to the API's names.
    (tmp_path / "pyrightconfig.json").write_text(json.dumps({"typeCheckingMode": "standard"}))
    (tmp_path / "program.py").write_text(
        "import pulumi_kubernetes as k8s\n"
        'k8s.core.v1.ConfigMap("right", metadata={"name": "a", "namespace": "b"}, data={"k": "v"})\n'
        'k8s.core.v1.ConfigMap("wrong", metadata={"name": "a", "namepsace": "b"}, data={"k": "v"})\n'
        'k8s.apps.v1.Deployment("right", spec={"selector": {"match_labels": {"app": "a"}}, "template": {\n'
        '    "spec": {"containers": [{"name": "a", "image": "a:1", "image_pull_policy": "Always"}]}}})\n'
        'k8s.apps.v1.Deployment("wrong", spec={"selector": {"match_labels": {"app": "a"}}, "template": {\n'
        '    "spec": {"containers": [{"name": "a", "image": "a:1", "image_pull_polcy": "Always"}]}}})\n')
    errors = _errors(_start(cwd=tmp_path))
    assert sorted(e["range"]["start"]["line"] + 1 for e in errors) == [3, 6], _show(errors)
    assert all("ArgsDict" in e["message"] for e in errors), _show(errors)
