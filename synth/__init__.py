"""The offline synth: a stack's real program run in-process, with no Pulumi CLI, cloud or credentials."""

from __future__ import annotations

from pathlib import Path

from config.errors import ConfigError, stack_file
from synth.engine import Synthesis, run_program
from synth.stackfile import available_stacks, project_name, read_stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


def synthesize(stack: str, *, config: dict[str, str] | None = None, project_dir: Path = PROJECT_DIR) -> Synthesis:
    """Run the project's program for `stack`; its config comes from Pulumi.<stack>.yaml unless given.

    A team stack's platform stack is synthesized first: its outputs are what the team stack's
    StackReference reads, as the engine reads them from the backend after that stack's `pulumi up`.
    """
    from stacks import main  # the very function __main__.py runs

    secret_keys: list[str] = []
    if config is None:
        config, secret_keys = read_stack_config(project_dir, stack)
    project = project_name(project_dir)
    references = {}
    platform_stack = config.get(f"{project}:platformStack")
    if platform_stack:
        platform_name = _platform_stack(platform_stack, stack, project, project_dir)
        platform = synthesize(platform_name, project_dir=project_dir)
        references[platform_stack] = platform.outputs
    return run_program(main, project=project, stack=stack, config=config, secret_keys=secret_keys,
                       stack_references=references)


def _platform_stack(reference: str, stack: str, project: str, project_dir: Path) -> str:
    """The name of the platform stack a team stack names; ConfigError in the team's stack file otherwise."""
    where = f"{stack_file(stack)}: {project}:platformStack"
    *qualifiers, name = reference.split("/")
    if len(qualifiers) > 2 or not all(qualifiers) or not name:
        raise ConfigError(f"{where}: {reference!r} is not a stack name; write organization/{project}/<stack>, such "
                          f"as organization/{project}/local.")
    if len(qualifiers) == 2 and qualifiers[1] != project:
        raise ConfigError(f"{where}: {reference!r} is a stack of project {qualifiers[1]!r}; the platform stack is a "
                          f"stack of this project: organization/{project}/<stack>.")
    if name == stack:
        raise ConfigError(f"{where}: {reference!r} is this stack itself; name the platform stack whose cluster the "
                          "team's namespaces go to.")
    platforms = [other for other in available_stacks(project_dir) if other != stack]
    if name not in platforms:
        raise ConfigError(f"{where}: no stack {name!r} here (no {stack_file(name)}); the stacks here are: "
                          f"{', '.join(platforms) or 'none'}.")
    platform_config, _ = read_stack_config(project_dir, name)
    if f"{project}:platformStack" in platform_config:
        raise ConfigError(f"{where}: {reference!r} is a team stack itself (it names a platformStack); name a platform "
                          "stack, the one that creates the cluster and grants the team its budget.")
    return name
