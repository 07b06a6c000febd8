"""Shared helpers: run the real program (or one component) under the synth's engine stand-in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from core.handle import Capabilities, ClusterHandle, GpuPool
from config.loader import validate
from config.models import PlatformConfig
from synth import PROJECT_DIR, synthesize
from synth.engine import Synthesis, run_program
from synth.schema import UPSTREAM_DIR
from synth.render import stack_synthesis

KIND = {"cloud": "kind"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the type check first: its worker starts basedpyright then (about 40 s of one core) and
    waits for it while the other worker runs tests, instead of the whole run waiting for it at the end. A serial
    run starts it as it collects the file (tests/test_types.py) and keeps the order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_types.py")


def cli_config(**keys: Any) -> dict[str, str]:
    """Stack config as the Pulumi CLI hands it to the program: `mlplatform:` keys, JSON text values."""
    return {f"mlplatform:{key}": json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            for key, value in keys.items()}


def team(name: str, gpus: int = 0, **extra: Any) -> dict[str, Any]:
    return {"name": name, "quota": {"requests": {"cpu": "4", "memory": "16Gi"}, "gpus": gpus}, **extra}


def synth_with(stack: str = "test", **keys: Any) -> Synthesis:
    """The platform program for a config given here instead of a stack file."""
    return synthesize(stack, config=cli_config(**keys))


def stack_files(into: Path) -> Path:
    """A project folder of the repo's Pulumi.yaml and stack files alone, for tests that add stack files of their
    own: none lands beside the repo's, where other tests (another xdist worker's) list the stacks."""
    into.mkdir(parents=True, exist_ok=True)
    for path in PROJECT_DIR.glob("Pulumi*.yaml"):
        shutil.copy(path, into / path.name)
    return into


def project_copy(into: Path) -> Path:
    """A copy of the project's files (tracked, and untracked but not ignored), for running its commands in a
    checkout of their own."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_DIR,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (PROJECT_DIR / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(PROJECT_DIR / name, into / name)
    return into


def run_component(build: Callable[[], None]) -> Synthesis:
    return run_program(build, project="mlplatform", stack="test", config={})


def cluster_handle(pools: tuple[GpuPool, ...] = (), **capabilities: bool) -> ClusterHandle:
    """A cluster with real GPUs, drivers and volumes unless told otherwise; call it inside a program."""
    provider = k8s.Provider("cluster-k8s", kubeconfig="apiVersion: v1\nkind: Config\n")
    defaults = {"gpu_drivers": True, "device_plugin": False, "physical_gpus": True, "persistent_volumes": True}
    return ClusterHandle(name="c", cloud="test", provider=provider, kubeconfig=pulumi.Output.secret("x"),
                         capabilities=Capabilities(**defaults | capabilities), gpu_pools=pools)


@pytest.fixture(scope="session")
def local_synth() -> Synthesis:
    return stack_synthesis("local")


PLATFORM_STACKS = ("local", "dev", "prod", "gcp-dev")


def stack_config(stack: str) -> PlatformConfig:
    """A platform stack file's validated config, without synthesizing it (for checks of config alone)."""
    config = yaml.safe_load((PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]
    return validate({key.removeprefix("mlplatform:"): value for key, value in config.items()}, stack, PlatformConfig)


@pytest.fixture
def charts() -> None:
    """Skips a test that reads what the pinned charts render where no chart folder is found (a fresh clone)."""
    from synth import render
    if not render.charts_available():
        pytest.skip(f"needs the charts in one of {render.chart_dirs()} (../shared/upstream/charts): absent")


@pytest.fixture
def upstream():
    if not UPSTREAM_DIR.is_dir():
        pytest.skip(f"needs the upstream chart values and CRDs at {UPSTREAM_DIR} (../shared/upstream): absent")
    return UPSTREAM_DIR


# ---- EKS: each stack synthesized once per session (the EKS and Karpenter tests share them) ----------------

def aws_cluster(**overrides: Any) -> dict[str, Any]:
    """A small EKS cluster config; overrides replace top-level keys."""
    return {"cloud": "aws", "name": "ml", "region": "eu-west-1", "availabilityZones": ["eu-west-1a", "eu-west-1b"],
            "adminRoleArns": ["arn:aws:iam::111122223333:role/deployer"],
            "gpuPools": [{"name": "l4", "instanceTypes": ["g6.xlarge"], "maxNodes": 2}]} | overrides


@pytest.fixture(scope="session")
def dev() -> Synthesis:
    return stack_synthesis("dev")


@pytest.fixture(scope="session")
def prod() -> Synthesis:
    return stack_synthesis("prod")


@pytest.fixture(scope="session")
def eks_options() -> Synthesis:
    """Every option off its default at once: interface endpoints, extended support, no spot service-linked
    role, a fixed-size system pool, and a spot pool of EBS-only instances (p3)."""
    return synth_with(cluster=aws_cluster(
        network={"interfaceEndpoints": True}, supportType="extended", spotServiceLinkedRole=False,
        systemPool={"minNodes": 2, "maxNodes": 2},
        gpuPools=[{"name": "v100", "instanceTypes": ["p3.2xlarge"], "maxNodes": 1, "capacityTypes": ["spot"]}]))
