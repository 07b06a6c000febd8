"""Turning pydantic's validation errors into messages a platform engineer can act on.

Each message names the stack file, the key path as written in that file (`mlplatform:teams[0].quota.gpus`),
what is wrong and what would be valid. It is raised as a pulumi.RunError, which the Pulumi CLI prints
without a Python traceback.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pulumi
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

PROJECT = "mlplatform"


class ConfigError(pulumi.RunError):
    """Bad stack configuration, found before any resource was declared."""


def stack_file(stack: str) -> str:
    return f"Pulumi.{stack}.yaml"


def _unwrap(annotation: Any) -> Any:
    """The model or container type behind Annotated[...] and X | None."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _union_member(annotation: Any, tag: str) -> Any:
    """The member of a discriminated union of models whose literal tag field equals `tag`."""
    for member in typing.get_args(annotation):
        for field in member.model_fields.values():
            if typing.get_origin(field.annotation) is typing.Literal and tag in typing.get_args(field.annotation):
                return member
    return None


def _field_by_alias(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (field.alias, name):
            return field.annotation
    return None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """The key path of `loc` as written in the stack file, and the model that holds its last key."""
    path = PROJECT
    current: Any = root
    holder: type[BaseModel] | None = None
    for part in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            holder = current
            path += (":" if path == PROJECT else ".") + str(part)
            current = _field_by_alias(current, str(part))
        elif origin in (list, tuple):
            path += f"[{part}]"
            current = typing.get_args(current)[0]
        elif origin is dict:
            path += f".{part}"
            current = typing.get_args(current)[1]
        elif origin in (typing.Union, types.UnionType):
            # pydantic puts a discriminated union's tag into the location; the stack file has no such key.
            current = _union_member(current, str(part))
        else:
            path += f".{part}"
            current = None
    return path, holder


def _valid_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    keys = sorted(field.alias or name for name, field in model.model_fields.items())
    return "; valid keys here: " + ", ".join(keys)


def _describe(error: ErrorDetails, holder: type[BaseModel] | None) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        return "unknown key" + _valid_keys(holder)
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        return f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r}; valid: {ctx['expected_tags']}"
    if kind == "union_tag_not_found":
        return f"missing key {ctx['discriminator']}, which says which kind of cluster this is"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    if kind != "value_error" and isinstance(given, (str, int, float, bool)):
        message += f" (got {given!r})"
    return message


def format_validation_error(exc: ValidationError, stack: str, root: type[BaseModel]) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        path, holder = _walk(root, tuple(error["loc"]))
        lines.append(f"{stack_file(stack)}: {path}: {_describe(error, holder)}.")
    return "\n".join(lines)
