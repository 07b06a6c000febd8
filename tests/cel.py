"""Evaluating Kubernetes CEL offline with cel-python (celpy): admission policies and CRD validation rules.

One CEL environment and one CRD-rule walk for the synth and the tests (synth/applied.py). Only what the
expressions here use is bound: `object`, `namespaceObject`, `variables` (each evaluated in order, as the API
server does, seeing the ones before it) for a ValidatingAdmissionPolicy, and `self` for a CRD rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import celpy
import yaml

from synth.applied import cel_program, create_rule_results


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    result = cel_program(expression).evaluate(activation)
    if isinstance(result, celpy.CELEvalError):
        raise result
    return result


# Who submits objects in the tests, unless a case says otherwise: a member of the team.
TEAM_MEMBER = "alice"


@dataclass(frozen=True)
class Decision:
    # The messages of the failed validations, in order; empty when the object is admitted.
    failures: tuple[str, ...]
    # Whether the policy's match conditions selected the request at all (a request not judged is admitted).
    judged: bool = True

    @property
    def allowed(self) -> bool:
        return not self.failures


def admit(policy: dict[str, Any], obj: dict[str, Any] | None, namespace: dict[str, Any], *,
          user: str = TEAM_MEMBER, groups: tuple[str, ...] = (), old: dict[str, Any] | None = None,
          sub_resource: str | None = None) -> Decision:
    """A ValidatingAdmissionPolicy's decision on `user` (in `groups`) creating `obj` in `namespace`, updating
    `old` to it, or deleting `old` (no `obj`). An expression that errors fails the test (the policies'
    failurePolicy is Fail, so on a real cluster the request would be refused). `request` carries what the API
    server's does for these expressions; a main resource's request has no subResource, as in the API server's."""
    spec = policy["spec"]
    operation = "CREATE" if old is None else ("DELETE" if obj is None else "UPDATE")
    request: dict[str, Any] = {"operation": operation, "namespace": namespace["metadata"]["name"],
                               "userInfo": {"username": user, "groups": [*groups, "system:authenticated"]}}
    if sub_resource:
        request["subResource"] = sub_resource
    activation: dict[str, Any] = {"object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old),
                                  "namespaceObject": celpy.json_to_cel(namespace),
                                  "request": celpy.json_to_cel(request)}
    if not all(evaluate(condition["expression"], activation) for condition in spec.get("matchConditions", [])):
        return Decision((), judged=False)
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


@lru_cache(maxsize=None)
def crd_schema(crd_file: Path, version: str) -> dict[str, Any]:
    """The openAPIV3Schema of one version of a CRD file, as written (not made strict)."""
    crd = yaml.safe_load(crd_file.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def crd_violations(crd_file: Path, version: str, obj: dict[str, Any]) -> list[str]:
    """What the API server's CEL rules of the CRD say about creating `obj` (defaults applied first)."""
    failures = []
    for path, rule, result in create_rule_results(crd_schema(crd_file, version), obj):
        if isinstance(result, Exception):
            raise result  # a rule the tests cannot evaluate would pass unseen
        if not result:
            failures.append(f"{path.removeprefix('.') or '(top level)'}: {rule.get('message', rule['rule'])}")
    return failures
