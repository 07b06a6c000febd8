"""Checking synthesized manifests against the schemas a real API server would apply.

Core objects go through kubernetes-validate's strict schemas for the pinned Kubernetes version. Custom
resources go through the `openAPIV3Schema` of their CRD, taken from the upstream charts we install (see
../shared/upstream/README.md), made strict the way a structural schema is: a field the schema does not
declare is an error, as the API server would prune it silently. An object with no schema to check against
is reported by name, never passed.

Needs the dev requirements (kubernetes-validate, jsonschema).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from versions import KUBERNETES_VERSION
from synth.engine import SECRET, UNKNOWN

PROJECT_DIR = Path(__file__).resolve().parent.parent
UPSTREAM_DIR = Path(os.environ.get("MLPLATFORM_UPSTREAM", PROJECT_DIR.parent / "shared" / "upstream"))


@dataclass
class SchemaReport:
    checked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Objects no schema covers: a test treats these as failures until a schema is found for them.
    unchecked: list[str] = field(default_factory=list)


def describe(manifest: dict[str, Any]) -> str:
    metadata = manifest.get("metadata", {})
    where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{manifest.get('apiVersion')} {manifest.get('kind')} {where}{metadata.get('name')}"


def known_fields(value: Any) -> Any:
    """The manifest without the fields a preview cannot know (secrets, values computed at apply time).

    The API server checks those when they are applied; here they would only fail for being placeholders.
    """
    if isinstance(value, dict):
        return {key: known_fields(item) for key, item in value.items() if item not in (SECRET, UNKNOWN)}
    if isinstance(value, list):
        return [known_fields(item) for item in value]
    return value


def _strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever the CRD does not allow them explicitly."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def crd_schemas(upstream_dir: Path = UPSTREAM_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict openAPIV3Schema, for every CRD under upstream_dir/*/crds/."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(upstream_dir.glob("*/crds/*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    api_version = f"{spec['group']}/{version['name']}"
                    schemas[(api_version, spec["names"]["kind"])] = _strict(copy.deepcopy(schema))
    return schemas


def check_manifests(manifests: list[dict[str, Any]], *, kubernetes_version: str = KUBERNETES_VERSION,
                    upstream_dir: Path = UPSTREAM_DIR) -> SchemaReport:
    report = SchemaReport()
    custom = crd_schemas(upstream_dir) if upstream_dir.is_dir() else {}
    for manifest in map(known_fields, manifests):
        name = describe(manifest)
        schema = custom.get((manifest.get("apiVersion"), manifest.get("kind")))
        try:
            if schema is not None:
                # Not jsonschema.validate: CRDs use Go regex syntax (such as a mid-pattern "(?i)") that the
                # meta-schema check would reject although the API server accepts it.
                jsonschema.Draft7Validator(schema).validate(manifest)
            else:
                kubernetes_validate.validate(manifest, kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            report.unchecked.append(name)
            continue
        except jsonschema.ValidationError as exc:
            path = ".".join(str(part) for part in exc.absolute_path) or "(top level)"
            report.errors.append(f"{name}: {path}: {exc.message}")
            continue
        report.checked.append(name)
    return report
