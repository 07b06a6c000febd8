"""Reading the stack's configuration from the Pulumi runtime and validating it before anything is declared."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, TypeVar

import pulumi
from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret
from pydantic import BaseModel, ValidationError

from config.errors import PROJECT, ConfigError, format_validation_error, stack_file
from config.models import PlatformConfig, TeamStackConfig

ModelT = TypeVar("ModelT", bound=BaseModel)


def _decode(value: Any) -> Any:
    """The CLI hands structured config over as JSON text and scalars as plain text."""
    if not isinstance(value, str):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, (dict, list)) else value


def project_config() -> dict[str, Any]:
    """Every `mlplatform:` key of the running stack, whether set by the CLI (environment) or in-process."""
    merged = {**get_config_env(), **CONFIG.get()}
    prefix = f"{PROJECT}:"
    return {key.removeprefix(prefix): _decode(value) for key, value in merged.items() if key.startswith(prefix)}


# Keys that may only hold secrets. They are read as secret Outputs (pulumi.Config.get_secret) where they are
# used, and never enter the plain models.
SECRET_KEYS = {"grafanaAdminPassword": "Grafana's admin password (generated when not set)"}


def _set_secrets_aside(raw: dict[str, Any], stack: str) -> None:
    for key in SECRET_KEYS:
        if key not in raw:
            continue
        if not is_config_secret(f"{PROJECT}:{key}"):
            raise ConfigError(f"{stack_file(stack)}: {PROJECT}:{key}: a secret stored in plain text. Remove it and "
                              f"run `pulumi config set --secret {key}` so that it is stored encrypted.")
        del raw[key]


def check_gpu_capacity(config: PlatformConfig, stack: str) -> list[str]:
    """Error when the teams' GPU quotas exceed the GPU pools' capacity; a warning if overcommit is allowed."""
    capacity = config.cluster.gpu_capacity()
    if config.team_gpus <= capacity:
        return []
    numbers = (f"the teams' GPU quotas add up to {config.team_gpus} GPUs but the GPU pools hold at most "
               f"{capacity}")
    if config.capacity.allow_overcommit:
        return [f"{numbers}: overcommitted, as mlplatform:capacity.allowOvercommit allows; not every team can "
                "use its whole GPU quota at once."]
    raise ConfigError(
        f"{stack_file(stack)}: {PROJECT}:teams: {numbers}. Lower teams[].quota.gpus, add GPU pool capacity, "
        f"or set {PROJECT}:capacity.allowOvercommit to true to accept that not every quota can be met at once."
    )


def check_queues(config: PlatformConfig, stack: str) -> list[str]:
    """The teams' Kueue queues against the GPU pools, their quotas and their cohorts."""
    file = stack_file(stack)
    capacity = config.cluster.pool_capacities()
    pools = list(capacity)
    warnings: list[str] = []
    # What each team lends its cohort, summed per cohort once: summing the others for every team took time
    # quadratic in the teams.
    lends = [team.queue.lending_limit if team.queue.lending_limit is not None
             else sum(team.nominal_gpus(capacity).values()) for team in config.teams]
    cohort_lends = Counter[str]()
    for team, lent in zip(config.teams, lends):
        cohort_lends[team.queue.cohort] += lent
    for index, team in enumerate(config.teams):
        where = f"{file}: {PROJECT}:teams[{index}].queue"
        for pool in (team.queue.gpus or {}):
            if pool not in pools:
                raise ConfigError(f"{where}.gpus.{pool}: no GPU pool is named {pool!r}; the pools are: "
                                  f"{', '.join(pools) or 'none'}.")
        nominal = sum(team.nominal_gpus(capacity).values())
        if nominal > team.quota.gpus:
            raise ConfigError(f"{where}.gpus: {nominal} guaranteed GPUs, more than the team's quota.gpus "
                              f"({team.quota.gpus}), which caps what its pods may hold; raise the quota or lower "
                              "these.")
        borrowing = team.quota.gpus - nominal
        lendable = cohort_lends[team.queue.cohort] - lends[index]
        if borrowing > lendable:
            raise ConfigError(f"{where}: the team may borrow up to {borrowing} GPUs (quota.gpus {team.quota.gpus} "
                              f"minus {nominal} guaranteed), but its cohort {team.queue.cohort!r} can lend at most "
                              f"{lendable}; guarantee more of the quota, or lower it.")
    for pool in pools:
        guaranteed = sum(team.nominal_gpus(capacity)[pool] for team in config.teams)
        if guaranteed > capacity[pool]:
            numbers = f"the teams' queues guarantee {guaranteed} GPUs of pool {pool!r}, which holds at most " \
                      f"{capacity[pool]}"
            if not config.capacity.allow_overcommit:
                raise ConfigError(f"{file}: {PROJECT}:teams: {numbers}. Lower teams[].queue.gpus, add capacity, or "
                                  f"set {PROJECT}:capacity.allowOvercommit to true.")
            warnings.append(f"{numbers}: overcommitted, as mlplatform:capacity.allowOvercommit allows.")
    return warnings


def is_team_stack() -> bool:
    """A stack that names a platform stack is a team's stack; every other stack is a platform stack."""
    return "platformStack" in project_config()


def _validated(model: type[ModelT]) -> ModelT:
    stack = pulumi.get_stack()
    raw = project_config()
    _set_secrets_aside(raw, stack)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, stack, model)) from None


def load_platform_config() -> tuple[PlatformConfig, list[str]]:
    """The validated platform config and its warnings; ConfigError (no traceback) on bad input."""
    config = _validated(PlatformConfig)
    stack = pulumi.get_stack()
    return config, check_gpu_capacity(config, stack) + check_queues(config, stack)


def load_team_config() -> TeamStackConfig:
    return _validated(TeamStackConfig)
