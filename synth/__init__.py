"""The offline synth: a stack's real program run in-process, with no Pulumi CLI, cloud or credentials."""

from __future__ import annotations

from pathlib import Path

from synth.engine import Synthesis, run_program
from synth.stackfile import project_name, read_stack_config

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
        platform = synthesize(platform_stack.rsplit("/", 1)[-1], project_dir=project_dir)
        references[platform_stack] = platform.outputs
    return run_program(main, project=project, stack=stack, config=config, secret_keys=secret_keys,
                       stack_references=references)
