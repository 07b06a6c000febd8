"""Reading `Pulumi.yaml` and `Pulumi.<stack>.yaml` and handing their config over as the Pulumi CLI does.

Stack files are read strictly: plain data only (mappings with text keys, lists, text, numbers, booleans), every
key once, UTF-8, and bounded in what aliases expand to. What PyYAML would otherwise turn into something else
(a later duplicate silently winning, a date object, a set, a billion-laughs expansion) is a ConfigError that
names the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from config.errors import PROJECT, WRITTEN_NUMBERS, ConfigError, stack_file, yaml_value
from synth.engine import SECRET

# Top-level keys of a stack file the Pulumi CLI knows (pulumi/pkg/workspace ProjectStack).
STACK_FILE_KEYS = ("config", "environment", "secretsprovider", "encryptedkey", "encryptionsalt")
# Bounds on a stack file, well above any real one: its size, and how many values and how deep it expands to
# once aliases are followed (the Pulumi CLI's YAML library refuses excessive aliasing too).
MAX_FILE_BYTES = 4 * 2**20
MAX_EXPANDED_VALUES = 200_000
MAX_DEPTH = 64
EXAMPLE = f"config: {{{PROJECT}:cluster: {{cloud: kind}}}}"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what is not plain data, and keys given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key_node.value!r} is read as {yaml_value(key)}, not as text; keys are "
                        f"text: quote it (\"{key_node.value}\")", key_node.start_mark)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice in one mapping (first at line "
                        f"{seen[key].start_mark.line + 1}); the later value would silently replace the earlier one: "
                        f"keep one {key!r}", key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def _refuse(self, node: yaml.Node, what: str, hint: str) -> None:
        written = f"{node.value!r} is" if isinstance(node, yaml.ScalarNode) else "this value is"
        raise yaml.constructor.ConstructorError(None, None, f"{written} read as {what}; {hint}", node.start_mark)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:  # type: ignore[override]
        value = super().construct_yaml_float(node)
        if str(node.value) != repr(value):
            WRITTEN_NUMBERS[value] = str(node.value)
        return value

    def construct_yaml_timestamp(self, node: yaml.Node) -> None:  # type: ignore[override]
        self._refuse(node, "a date", f"stack config holds text, numbers and booleans: quote it (\"{node.value}\")")

    def construct_yaml_set(self, node: yaml.Node) -> None:  # type: ignore[override]
        self._refuse(node, "a set (a mapping of `? key` entries)", "use a list ([a, b]) or a mapping (a: 1)")

    def construct_yaml_binary(self, node: yaml.Node) -> None:  # type: ignore[override]
        self._refuse(node, "binary data", "give text instead")

    def construct_yaml_omap(self, node: yaml.Node) -> None:  # type: ignore[override]
        self._refuse(node, "an ordered mapping (!!omap)", "use a plain mapping")

    construct_yaml_pairs = construct_yaml_omap


for _tag, _method in (("float", _StrictLoader.construct_yaml_float),
                      ("timestamp", _StrictLoader.construct_yaml_timestamp),
                      ("set", _StrictLoader.construct_yaml_set),
                      ("binary", _StrictLoader.construct_yaml_binary),
                      ("omap", _StrictLoader.construct_yaml_omap),
                      ("pairs", _StrictLoader.construct_yaml_omap)):
    _StrictLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _method)


# PyYAML's words for the common slips, in plain ones: (part of its problem, of its context, what to say). `{line}`
# is where the parser noticed, `{opened}` where the construct it was reading began.
_PLAIN_YAML_PROBLEMS = (
    ("but found '<block mapping start>'", "", "line {line}: its indentation matches none of the keys above it: "
     "line the keys of one mapping up under each other, with spaces"),
    ("but found '-'", "", "line {line}: a list item ('- ...') where the mapping that starts at line {opened} expects "
     "a key: indent the list under the key it belongs to"),
    ("mapping values are not allowed here", "", "line {line}: a ':' that YAML cannot read here: this line or the "
     "one before lacks the ':' after its key (key: value), or a value containing ': ' needs quotes"),
    ("cannot start any token", "", "line {line}: a character that cannot begin a value (a tab? YAML indents with "
     "spaces only)"),
    ("expected ',' or ']'", "", "the list opened with '[' at line {opened} is not closed: add the ']'"),
    ("expected ',' or '}'", "", "the mapping opened with '{{' at line {opened} is not closed: add the '}}'"),
    ("end of stream", "quoted scalar", "the quote opened at line {opened} is never closed: close it on the same line"),
    ("found undefined alias", "", "line {line}: an alias (*name) with no anchor (&name) before it"),
)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return " ".join(str(exc).split())
    problem, context = exc.problem or "", exc.context or ""
    line = exc.problem_mark.line + 1 if exc.problem_mark else None
    opened = exc.context_mark.line + 1 if exc.context_mark else line
    for words, while_, plain in _PLAIN_YAML_PROBLEMS:
        if words in problem and while_ in context:
            return plain.format(line=line, opened=opened)
    where = f"line {line}, column {exc.problem_mark.column + 1}" if exc.problem_mark else "an unknown position"
    started = f" ({context} that began at line {opened})" if context else ""
    return f"at {where}: {problem}{started}"


def _expanded_size(document: Any) -> int:
    """How many values the document holds once every alias is expanded, as JSON would write it out.

    Aliases make the loaded document a graph that shares nodes; the size is counted per distinct node and
    multiplied, so a billion laughs is measured without being expanded. A node that contains itself never ends.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(value: Any, depth: int) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise ValueError(f"nests deeper than {MAX_DEPTH} levels")
        key = id(value)
        if key in open_nodes:
            raise ValueError("contains itself through an alias (an anchor used inside its own value)")
        if key not in sizes:
            open_nodes.add(key)
            children = value.values() if isinstance(value, dict) else value
            sizes[key] = 1 + sum(size(child, depth + 1) for child in children)
            open_nodes.discard(key)
            if sizes[key] > MAX_EXPANDED_VALUES:
                raise ValueError(f"expands to more than {MAX_EXPANDED_VALUES:,} values once its aliases are "
                                 "followed; write the values out instead of nesting aliases")
        return sizes[key]

    return size(document, 0)


def load_yaml_file(path: Path) -> Any:
    """A YAML file's one document as plain data; ConfigError naming the file and line on anything else."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path.name}: cannot be read: {exc.strerror or exc}.") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path.name}: {len(data):,} bytes; a stack file is at most {MAX_FILE_BYTES:,}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        encoding = "UTF-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "not UTF-8"
        raise ConfigError(f"{path.name}: the file is {encoding} (byte {exc.start} is {data[exc.start]:#04x}); "
                          "stack files are UTF-8: save it as UTF-8 and run again.") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
        _expanded_size(document)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {_yaml_problem(exc)}. Fix the file and run again.") from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else f"nests deeper than {MAX_DEPTH} levels"
        raise ConfigError(f"{path.name}: the file {reason}.") from None
    return document


def project_name(project_dir: Path) -> str:
    document = load_yaml_file(project_dir / "Pulumi.yaml")
    name = document.get("name") if isinstance(document, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError("Pulumi.yaml: name: the project needs a name (name: mlplatform).")
    return name


def available_stacks(project_dir: Path) -> list[str]:
    return sorted(path.name[len("Pulumi."):-len(".yaml")] for path in project_dir.glob("Pulumi.*.yaml"))


def _as_cli_value(value: Any) -> str:
    # The CLI passes structured values as JSON text and scalars as their YAML text.
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stack_config(path: Path) -> dict[str, Any]:
    """The `config:` mapping of a stack file, checked for the file's shape."""
    document = load_yaml_file(path)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path.name}: the file holds {yaml_value(document)} at the top; a stack file is a "
                          f"mapping whose `config:` key holds the settings ({EXAMPLE}).")
    for key in document:
        if key not in STACK_FILE_KEYS:
            raise ConfigError(f"{path.name}: {key}: not a key of a stack file; valid keys at the top: "
                              f"{', '.join(STACK_FILE_KEYS)} (the settings go under config:).")
    if "config" not in document:
        raise ConfigError(f"{path.name}: no `config:` section; the stack's settings go under it ({EXAMPLE}).")
    config = document["config"]
    if not isinstance(config, dict):
        raise ConfigError(f"{path.name}: config: expected a mapping of keys to values, got {yaml_value(config)}.")
    return config


def read_stack_config(project_dir: Path, stack: str) -> tuple[dict[str, str], list[str]]:
    """The stack's config as the CLI hands it to a program: namespaced keys, text values, secret keys.

    Secure values cannot be decrypted offline; they are passed on as a redacted stand-in.
    """
    path = project_dir / stack_file(stack)
    if not path.is_file():
        stacks = ", ".join(available_stacks(project_dir)) or "none"
        raise ConfigError(f"{path.name}: no such stack file in {project_dir}; the stacks here are: {stacks}. "
                          "Pick one of them (STACK=<name>) or create the file (see docs/configuration.md).")
    config = stack_config(path)
    project = project_name(project_dir)
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    written_as: dict[str, str] = {}
    for key, value in config.items():
        # Keys without a namespace belong to the project, as the CLI reads them.
        full_key = key if ":" in key else f"{project}:{key}"
        if full_key in written_as:
            raise ConfigError(f"{path.name}: {key}: the same key as {written_as[full_key]} (a key without a "
                              f"namespace is the project's); keep one of them.")
        written_as[full_key] = key
        if value is None:
            raise ConfigError(f"{path.name}: {full_key}: has no value; give one, or remove the key.")
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.append(full_key)
            value = SECRET
        values[full_key] = _as_cli_value(value)
    return values, secret_keys
