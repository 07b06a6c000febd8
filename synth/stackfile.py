"""Reading `Pulumi.yaml` and `Pulumi.<stack>.yaml` and handing their config over as the Pulumi CLI does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from config.errors import ConfigError, stack_file
from synth.engine import SECRET


def project_name(project_dir: Path) -> str:
    return yaml.safe_load((project_dir / "Pulumi.yaml").read_text())["name"]


def available_stacks(project_dir: Path) -> list[str]:
    return sorted(path.name[len("Pulumi."):-len(".yaml")] for path in project_dir.glob("Pulumi.*.yaml"))


def _as_cli_value(value: Any) -> str:
    # The CLI passes structured values as JSON text and scalars as their YAML text.
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc)
    # The context mark is where the broken construct starts, which is where people need to look.
    mark = exc.context_mark or exc.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
    return f"{' '.join(filter(None, [exc.context, exc.problem]))} (at {where})"


def read_stack_config(project_dir: Path, stack: str) -> tuple[dict[str, str], list[str]]:
    """The stack's config as the CLI hands it to a program: namespaced keys, text values, secret keys.

    Secure values cannot be decrypted offline; they are passed on as a redacted stand-in.
    """
    path = project_dir / stack_file(stack)
    if not path.is_file():
        stacks = ", ".join(available_stacks(project_dir)) or "none"
        raise ConfigError(f"{path.name}: no such stack file in {project_dir}; the stacks here are: {stacks}. "
                          "Pick one of them (STACK=<name>) or create the file (see README.md).")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {_yaml_problem(exc)}. Fix the file's syntax and run "
                          "again.") from None
    config = document.get("config") if isinstance(document, dict) else None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path.name}: config: expected a mapping of keys to values, got "
                          f"{type(config).__name__}.")

    project = project_name(project_dir)
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in config.items():
        # Keys without a namespace belong to the project, as the CLI reads them.
        full_key = key if ":" in key else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.append(full_key)
            value = SECRET
        values[full_key] = _as_cli_value(value)
    return values, secret_keys
