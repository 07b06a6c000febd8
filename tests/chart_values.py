"""Checking the values we give a chart against the chart's own values.yaml, so a misspelt key cannot pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def chart_values(upstream_dir: Path, chart: str) -> dict[str, Any]:
    return yaml.safe_load((upstream_dir / chart / "values.yaml").read_text())


def unknown_keys(ours: dict[str, Any], theirs: dict[str, Any], free_form: set[str], path: str = "") -> list[str]:
    """Keys we set that the chart does not have. `free_form` names maps whose keys are ours to choose."""
    unknown = []
    for key, value in ours.items():
        where = f"{path}.{key}" if path else key
        if path in free_form:
            continue
        if not isinstance(theirs, dict) or key not in theirs:
            unknown.append(where)
        elif isinstance(value, dict) and isinstance(theirs[key], dict) and theirs[key]:
            unknown += unknown_keys(value, theirs[key], free_form, where)
    return unknown
