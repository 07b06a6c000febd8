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
import re
from dataclasses import dataclass, field
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators
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


def schemas_of(crds: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict openAPIV3Schema of each version of the given CRDs."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crds:
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        spec = crd["spec"]
        for version in spec["versions"]:
            schema = version.get("schema", {}).get("openAPIV3Schema")
            if schema:
                api_version = f"{spec['group']}/{version['name']}"
                schemas[(api_version, spec["names"]["kind"])] = _strict(schema)  # _strict copies
    return schemas


@cache
def crd_schemas(upstream_dir: Path = UPSTREAM_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict openAPIV3Schema, for every CRD under upstream_dir/*/crds/."""
    return schemas_of(crd for path in sorted(upstream_dir.glob("*/crds/*.yaml"))
                      for crd in yaml.safe_load_all(path.read_text()))


@cache
def _definitions(folder: str, kubernetes_version: str) -> Any:
    from kubernetes_validate import utils
    from referencing import Resource

    return Resource.from_contents(utils.schema_contents(f"{folder}/_definitions.json", kubernetes_version))


@cache
def _built_in_validator(api_version: str, kind: str, kubernetes_version: str) -> jsonschema.Validator | None:
    """kubernetes-validate's strict schema for the kind, as its `validate` builds it, but built once per kind:
    `validate` re-reads the large shared definitions on every call, seconds over a rendered chart."""
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    version = [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(kubernetes_version)][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group_version}.json", kubernetes_version)
    except FileNotFoundError:
        return None
    registry = _definitions(folder, kubernetes_version) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def check_manifests(manifests: list[dict[str, Any]], *, kubernetes_version: str = KUBERNETES_VERSION,
                    upstream_dir: Path = UPSTREAM_DIR,
                    custom: dict[tuple[str, str], dict[str, Any]] | None = None) -> SchemaReport:
    """Each manifest against its schema; custom resources against `custom` (the CRDs the stack installs) if
    given, else the upstream CRDs."""
    report = SchemaReport()
    custom_validators: dict[int, jsonschema.Validator] = {}
    if custom is None:
        custom = crd_schemas(upstream_dir) if upstream_dir.is_dir() else {}
    for manifest in map(known_fields, manifests):
        name = describe(manifest)
        schema = custom.get((manifest.get("apiVersion"), manifest.get("kind")))
        validator = _built_in_validator(str(manifest.get("apiVersion")), str(manifest.get("kind")),
                                        kubernetes_version) if schema is None else None
        if schema is None and validator is None:
            report.unchecked.append(name)
            continue
        try:
            if validator is None:
                assert schema is not None  # an object with neither was reported unchecked above
                # Not jsonschema.validate: CRDs use Go regex syntax (such as a mid-pattern "(?i)") that the
                # meta-schema check would reject although the API server accepts it.
                validator = custom_validators.get(id(schema)) or custom_validators.setdefault(
                    id(schema), jsonschema.Draft7Validator(schema))
            validator.validate(manifest)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(part) for part in exc.absolute_path) or "(top level)"
            report.errors.append(f"{name}: {path}: {exc.message}")
            continue
        report.checked.append(name)
    return report
