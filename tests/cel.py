"""Evaluating Kubernetes CEL offline with cel-python (celpy): admission policies and CRD validation rules.

Only what the expressions here use is bound: `object`, `namespaceObject`, `variables` (each evaluated in order,
as the API server does, seeing the ones before it) for a ValidatingAdmissionPolicy, and `self` for a CRD rule.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import celpy
import yaml

_ENV = celpy.Environment()


@lru_cache(maxsize=None)
def compiled(expression: str) -> celpy.Runner:
    return _ENV.program(_ENV.compile(expression))


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    result = compiled(expression).evaluate(activation)
    if isinstance(result, celpy.CELEvalError):
        raise result
    return result


@dataclass(frozen=True)
class Decision:
    # The messages of the failed validations, in order; empty when the object is admitted.
    failures: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return not self.failures


def admit(policy: dict[str, Any], obj: dict[str, Any], namespace: dict[str, Any]) -> Decision:
    """A ValidatingAdmissionPolicy's decision on creating `obj` in `namespace`. An expression that errors fails
    the test (the policies' failurePolicy is Fail, so on a real cluster the request would be refused)."""
    spec = policy["spec"]
    activation: dict[str, Any] = {"object": celpy.json_to_cel(obj), "namespaceObject": celpy.json_to_cel(namespace)}
    variables: dict[str, Any] = {}
    for variable in spec.get("variables", []):
        activation["variables"] = celpy.json_to_cel(variables) if not variables else _cel_map(variables)
        variables[variable["name"]] = evaluate(variable["expression"], activation)
    activation["variables"] = _cel_map(variables)
    failures = []
    for validation in spec["validations"]:
        if not evaluate(validation["expression"], activation):
            message = validation.get("message", "")
            if validation.get("messageExpression"):
                message = str(evaluate(validation["messageExpression"], activation))
            failures.append(message)
    return Decision(tuple(failures))


def _cel_map(values: dict[str, Any]) -> celpy.celtypes.MapType:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The value with the schema's defaults filled in, as the API server does before it validates."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        filled = {key: copy.deepcopy(sub["default"]) for key, sub in properties.items()
                  if "default" in sub and key not in value}
        return {key: with_defaults(properties.get(key, {}), item) for key, item in (value | filled).items()}
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], item) for item in value]
    return value


def crd_rule_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Every x-kubernetes-validations rule of a CRD schema that `value` breaks, with its path and message.

    Transition rules (those reading oldSelf) apply only to updates, which a create never meets: skipped."""
    failures = [f"{path or '(top level)'}: {rule.get('message', rule['rule'])}"
                for rule in schema.get("x-kubernetes-validations", [])
                if "oldSelf" not in rule["rule"] and not evaluate(rule["rule"], {"self": celpy.json_to_cel(value)})]
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                failures += crd_rule_failures(sub, item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            failures += crd_rule_failures(schema["items"], item, f"{path}[{index}]")
    return failures


@lru_cache(maxsize=None)
def crd_schema(crd_file: Path, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one version of a CRD file, as written (not made strict)."""
    crd = yaml.safe_load(crd_file.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def crd_violations(crd_file: Path, version: str, obj: dict[str, Any]) -> list[str]:
    """What the API server's CEL rules of the CRD say about creating `obj` (defaults applied first)."""
    schema = crd_schema(crd_file, version)
    return crd_rule_failures(schema, with_defaults(schema, obj))
