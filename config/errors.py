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


# Numbers as the stack file wrote them, where YAML's reading lost the text (1.30 read as 1.3), so that a message
# can offer the user's own text back; the stack file reader (synth/stackfile.py) fills it.
WRITTEN_NUMBERS: dict[float, str] = {}


def stack_file(stack: str) -> str:
    return f"Pulumi.{stack}.yaml"


class Overcommit:
    """Refusals of more than the capacity holds, which `capacity.allowOvercommit` turns into warnings."""

    def __init__(self, stack: str, allowed: bool) -> None:
        self.file, self.allowed = stack_file(stack), allowed
        self.warnings: list[str] = []

    def refuse(self, key: str, problem: str, fix: str) -> None:
        if not self.allowed:
            raise ConfigError(f"{self.file}: {PROJECT}:{key}: {problem} {fix}, or set "
                              f"{PROJECT}:capacity.allowOvercommit to true.")
        self.warnings.append(f"{PROJECT}:{key}: {problem} Overcommitted, as {PROJECT}:capacity.allowOvercommit "
                             "allows.")


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
        if part == "[key]":  # pydantic locates a bad mapping key by this after the key
            path += " (the key)"
            continue
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
    if kind == "string_type" and isinstance(given, (bool, int, float)):
        # YAML reads unquoted 1.30 as the number 1.3, and yes/no/on/off as booleans: the text is gone, unless the
        # stack file reader kept it.
        written = None if isinstance(given, bool) else WRITTEN_NUMBERS.get(given)
        if written is not None:
            return (f"expected text, got {written}, which YAML reads as {yaml_value(given)}; quote it as you mean "
                    f'it: {error["loc"][-1]}: "{written}"')
        example = f'{error["loc"][-1]}: "{("yes" if given else "no") if isinstance(given, bool) else given}"'
        reads = ("yes, no, on, off, true and false as booleans" if isinstance(given, bool)
                 else "unquoted numbers as numbers (1.30 as 1.3)")
        return (f"expected text, got {yaml_value(given)}: YAML reads {reads}; quote the value as you mean it, "
                f"such as {example}")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (key: value), got {yaml_value(given)}"
    if kind == "list_type":
        return f"expected a list ([a, b] or lines starting with -), got {yaml_value(given)}"
    if kind != "value_error" and isinstance(given, (str, int, float, bool)):
        message += f" (got {yaml_value(given)})"
    return message


def yaml_value(value: Any) -> str:
    """A value as YAML gave it, in words: "the number 1.3", "the boolean true", "a list"."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:77] + "...")
    if value is None:
        return "nothing (null)"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else type(value).__name__


def format_problems(problems: list[tuple[tuple[Any, ...], str]], stack: str, root: type[BaseModel],
                    sources: dict[str, str] | None = None) -> str:
    """One line per problem: where its top-level key came from (the stack file unless `sources` says otherwise),
    its key path as written in YAML, and the message."""
    lines = []
    for loc, message in problems:
        path, _ = _walk(root, loc)
        source = (sources or {}).get(str(loc[0]) if loc else "", stack_file(stack))
        lines.append(f"{source}: {path}: {message}.")
    return "\n".join(lines)


def format_validation_error(exc: ValidationError, stack: str, root: type[BaseModel],
                            sources: dict[str, str] | None = None) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        problems.append((loc, _describe(error, _walk(root, loc)[1])))
    return format_problems(problems, stack, root, sources)
