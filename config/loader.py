"""Reading the stack's configuration from the Pulumi runtime and validating it before anything is declared."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from typing import Any, TypeVar

import pulumi
from pulumi.runtime.config import CONFIG, is_config_secret
from pydantic import BaseModel, ValidationError

from clouds import PROVIDER_NAMESPACES
from core.fields import scalar_mistakes
from config.errors import (PROJECT, ConfigError, Overcommit, format_problems, format_validation_error,
                           stack_file)
from config.models import PlatformConfig, TeamStackConfig
from config.gangs import check_gangs
from config.queues import pool_shapes, queue_layout

ModelT = TypeVar("ModelT", bound=BaseModel)


def _decode(value: Any) -> Any:
    """The CLI hands structured config over as JSON text and scalars as plain text."""
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested past what a stack file may be
        return value
    return decoded if isinstance(decoded, (dict, list)) else value


# Namespaces of config keys besides the project's own: Pulumi's, and those of the providers the program uses
# (every cloud's, from the registry, and the platform's own).
OTHER_NAMESPACES = ("pulumi", "kubernetes", "random", *PROVIDER_NAMESPACES)
ENVIRONMENT = "PULUMI_CONFIG"


def _environment(name: str, kind: type[dict] | type[list]) -> Any:
    """A JSON variable the Pulumi CLI sets for the program; ConfigError naming it when it is not that JSON."""
    text = os.environ.get(name)
    if text is None:
        return kind()
    what = "a JSON object of config keys to values" if kind is dict else "a JSON list of config keys"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{name} (environment variable): not JSON ({exc}); the Pulumi CLI sets it to {what}. "
                          f"Unset it (unset {name}) or correct it.") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{name} (environment variable): holds {type(value).__name__}, not {what}. Unset it "
                          f"(unset {name}) or correct it.")
    return value


def _check_namespace(key: str, source: str) -> None:
    namespace, colon, name = key.partition(":")
    if colon and (namespace == PROJECT or namespace in OTHER_NAMESPACES):
        return
    like_ours = (namespace.lower() == PROJECT or
                 difflib.SequenceMatcher(None, namespace.lower(), PROJECT).ratio() >= 0.6)
    guess = f"{PROJECT}:{name}" if colon else f"{PROJECT}:{key.split('_', 1)[-1]}"
    hint = (f"Did you mean {guess}? " if like_ours else "") + \
        f"Keys of this project are written {PROJECT}:<key> (or <key> alone); other namespaces read here: " \
        f"{', '.join(OTHER_NAMESPACES)}"
    raise ConfigError(f"{source}: {key}: a key nothing in this project reads, so it would be silently ignored. "
                      f"{hint}.")


def config_sources(stack: str) -> dict[str, tuple[Any, str]]:
    """Every config key of the running stack, with its value and where it came from.

    The synth sets the stack file's config in-process; the Pulumi CLI hands it over in PULUMI_CONFIG. A key
    that is in PULUMI_CONFIG while the stack file's config was set in-process comes from the environment, and
    messages say so.
    """
    in_process = CONFIG.get()
    env_label = f"{stack_file(stack)} (as passed in {ENVIRONMENT})" if not in_process else \
        f"{ENVIRONMENT} (environment variable, not {stack_file(stack)})"
    sources = {key: (value, env_label) for key, value in _environment(ENVIRONMENT, dict).items()}
    sources |= {key: (value, stack_file(stack)) for key, value in in_process.items()}
    for key, (_, source) in sources.items():
        _check_namespace(key, source)
    return sources


def project_config() -> dict[str, Any]:
    """Every `mlplatform:` key of the running stack, whether set by the CLI (environment) or in-process."""
    prefix = f"{PROJECT}:"
    return {key.removeprefix(prefix): _decode(value)
            for key, (value, _) in config_sources(pulumi.get_stack()).items() if key.startswith(prefix)}


def _project_sources(stack: str) -> dict[str, str]:
    prefix = f"{PROJECT}:"
    return {key.removeprefix(prefix): source for key, (_, source) in config_sources(stack).items()
            if key.startswith(prefix)}


# Keys that may only hold secrets. They are read as secret Outputs (pulumi.Config.get_secret) where they are
# used, and never enter the plain models.
SECRET_KEYS = {"grafanaAdminPassword": "Grafana's admin password (generated when not set)"}


def _set_secrets_aside(raw: dict[str, Any], stack: str) -> None:
    _environment("PULUMI_CONFIG_SECRET_KEYS", list)
    for key in list(raw):
        secret = is_config_secret(f"{PROJECT}:{key}")
        if key in SECRET_KEYS:
            if not secret:
                raise ConfigError(f"{stack_file(stack)}: {PROJECT}:{key}: a secret stored in plain text. Remove it "
                                  f"and run `pulumi config set --secret {key}` so that it is stored encrypted.")
            del raw[key]
        elif secret:
            # The models hold plain values: a secret here would end up unencrypted in the state and outputs.
            raise ConfigError(f"{stack_file(stack)}: {PROJECT}:{key}: stored as a secret (secure:), but it is "
                              f"not one; only {', '.join(SECRET_KEYS)} may be. Set it in plain text "
                              f"(pulumi config set {key} ...).")


def check_gpu_capacity(config: PlatformConfig, stack: str) -> list[str]:
    """Error when the teams' guarantees exceed the GPU pools' capacity; a warning if overcommit is allowed."""
    capacity = sum(pool.capacity for pool in pool_shapes(config.cluster))
    if config.team_gpus <= capacity:
        return []
    numbers = (f"the teams' guaranteed GPUs add up to {config.team_gpus} GPUs but the GPU pools hold at most "
               f"{capacity}")
    if config.capacity.allow_overcommit:
        return [f"{numbers}: overcommitted, as mlplatform:capacity.allowOvercommit allows; not every team can "
                "use its whole guarantee at once."]
    raise ConfigError(
        f"{stack_file(stack)}: {PROJECT}:teams: {numbers}. Lower teams[].queue.guaranteedGpus (or quota.gpus), add "
        f"GPU pool capacity, or set {PROJECT}:capacity.allowOvercommit to true to accept that not every guarantee "
        "can be met at once."
    )


def _refuse_uncounted_gpu_resources(config: PlatformConfig, file: str) -> None:
    for index, pool in enumerate(config.cluster.gpu_pools):
        if pool.sharing.mig_strategy == "mixed":
            raise ConfigError(
                f"{file}: {PROJECT}:cluster.gpuPools[{index}].sharing.migStrategy: mixed advertises one resource "
                "per MIG profile (nvidia.com/mig-1g.10gb, ...) in numbers that depend on how each node is "
                "partitioned, so the teams' ResourceQuotas and Kueue queues could not count them and pods asking "
                "for them would escape both. Use single (every GPU cut the same way, counted as nvidia.com/gpu) "
                "or none.")


def _check_pools_named(config: PlatformConfig, file: str) -> None:
    pools = config.cluster.gpu_pool_names()
    owners: dict[str, str] = {}
    for index, team in enumerate(config.teams):
        where = f"{file}: {PROJECT}:teams[{index}].queue"
        for key, named in (("gpus", list(team.queue.gpus or {})), ("dedicatedPools", team.queue.dedicated_pools)):
            for pool in named:
                if pool not in pools:
                    raise ConfigError(f"{where}.{key}.{pool}: no GPU pool is named {pool!r}; the pools are: "
                                      f"{', '.join(pools) or 'none'}.")
        for pool in team.queue.dedicated_pools:
            if pool in owners:
                raise ConfigError(f"{where}.dedicatedPools: pool {pool!r} is already dedicated to team "
                                  f"{owners[pool]!r}; a pool is dedicated to one team at most.")
            owners[pool] = team.name
    for index, team in enumerate(config.teams):
        for pool in team.queue.gpus or {}:
            if owners.get(pool, team.name) != team.name:
                raise ConfigError(f"{file}: {PROJECT}:teams[{index}].queue.gpus.{pool}: pool {pool!r} is dedicated "
                                  f"to team {owners[pool]!r}; guarantee this team GPUs of another pool.")


def check_queues(config: PlatformConfig, stack: str) -> list[str]:
    """The teams' Kueue queues against the GPU pools, their ceilings and their cohorts."""
    file = stack_file(stack)
    _refuse_uncounted_gpu_resources(config, file)
    _check_pools_named(config, file)
    layout = queue_layout(pool_shapes(config.cluster), config.teams)
    overcommit = Overcommit(stack, config.capacity.allow_overcommit)
    refuse, warnings = overcommit.refuse, overcommit.warnings

    for pool, shape in layout.pools.items():
        guaranteed = sum(share.guarantee.get(pool, 0) for share in layout.teams.values())
        if guaranteed > shape.capacity:
            refuse("teams", f"the teams' queues guarantee {guaranteed} GPUs of pool {pool!r}, which "
                   f"holds at most {shape.capacity}.", "Lower teams[].queue guarantees, add capacity")
        if not guaranteed and config.teams and not any(share.borrowing and pool in share.pools
                                                       for share in layout.teams.values()):
            warnings.append(f"{PROJECT}:teams: no team's queue is guaranteed GPUs of pool {pool!r}, and no team may "
                            "borrow beyond its guarantee, so no queue can admit work there; give a team a guarantee "
                            "in it (teams[].queue.gpus) or a quota.gpus above its guarantee.")
    for index, team in enumerate(config.teams):
        where = f"{file}: {PROJECT}:teams[{index}]"
        share = layout.teams[team.name]
        lendable = sum(layout.lendable(share.cohort, pool, besides=team.name) for pool in share.pools)
        if share.borrowing > lendable:
            raise ConfigError(f"{where}.queue: the team may borrow up to {share.borrowing} GPUs (quota.gpus "
                              f"{team.quota.gpus} minus {share.guaranteed} guaranteed), but its cohort "
                              f"{share.cohort!r} can lend it at most {lendable}; guarantee more of the quota, or "
                              "lower it.")
        wanted = layout.largest_node_within(team.name, share.ceiling)
        admissible = layout.largest_job(team.name)
        if admissible < wanted:
            reach = ", ".join(f"{pool} {layout.reach(team.name, pool)}" for pool in share.pools)
            refuse(f"teams[{index}].queue", f"a job of {admissible + 1} GPUs on one node is within the team's "
                   f"quota.gpus ({share.ceiling}) and a node of some pool holds it, but no pool can ever admit it: "
                   f"at most {reach} GPUs (guarantee there plus what the cohort lends).",
                   f"Guarantee the team up to {wanted} GPUs in one pool (queue.gpus), lower quota.gpus to "
                   f"{admissible}")
        guaranteed = layout.largest_node_within(team.name, share.guaranteed, guaranteed_only=True)
        if layout.largest_job(team.name, guaranteed_only=True) < guaranteed:
            parts = ", ".join(f"{pool} {gpus}" for pool, gpus in share.guarantee.items())
            warnings.append(f"{PROJECT}:teams[{index}].queue: the team is guaranteed {share.guaranteed} GPUs, "
                            f"but split over pools ({parts}) so that a {guaranteed}-GPU job fits none of its "
                            "guaranteed parts: it runs only on borrowed GPUs, which their owners reclaim.")
    return warnings


def is_team_config(raw: Mapping[str, Any]) -> bool:
    """A stack that names a platform stack is a team's stack; every other stack is a platform stack."""
    return "platformStack" in raw


def is_team_stack() -> bool:
    return is_team_config(project_config())


def validate(raw: dict[str, Any], stack: str, model: type[ModelT],
             sources: dict[str, str] | None = None) -> ModelT:
    """The one route from a stack's `mlplatform:` keys to a model: scalars as strict as YAML is loose (no
    `true` where a number belongs), then the model; ConfigError naming the file and key path otherwise."""
    if mistakes := list(scalar_mistakes(model, raw)):
        raise ConfigError(format_problems(mistakes, stack, model, sources))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, stack, model, sources)) from None


def validate_stack(raw: dict[str, Any], stack: str,
                   sources: dict[str, str] | None = None) -> PlatformConfig | TeamStackConfig:
    return validate(raw, stack, TeamStackConfig if is_team_config(raw) else PlatformConfig, sources)


def _validated(model: type[ModelT]) -> ModelT:
    stack = pulumi.get_stack()
    raw = project_config()
    _set_secrets_aside(raw, stack)
    return validate(raw, stack, model, _project_sources(stack))


def load_platform_config() -> tuple[PlatformConfig, list[str]]:
    """The validated platform config and its warnings; ConfigError (no traceback) on bad input."""
    config = _validated(PlatformConfig)
    stack = pulumi.get_stack()
    return config, check_gpu_capacity(config, stack) + check_queues(config, stack) + check_gangs(config, stack)


def load_team_config() -> TeamStackConfig:
    return _validated(TeamStackConfig)
