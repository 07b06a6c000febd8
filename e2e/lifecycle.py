"""The real lifecycle of a stack for `make e2e`: the Pulumi CLI, built from its Go modules, runs the project's
program against the loopback cluster of e2e/cluster.py, with a file:// backend and a passphrase.

`platform()` starts the cluster (fake nodes for the system pool and each GPU pool of Pulumi.e2e.yaml, exactly
as the ClusterHandle states them), puts the e2e stack files beside Pulumi.yaml for the run, logs the CLI in
and creates the stacks; on the way out it destroys what a failed run left, removes the stack files and stops
the cluster, whatever happened. Every CLI call runs inside the cluster's network namespace, which has only
loopback: an update check or a plugin download fails at once instead of leaving the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.vocabulary import CPU_POOL, POOL_LABEL
from e2e.cluster import CHART_CONTROLLERS, LoopbackCluster, NodeSpec
from e2e.tools import build_all, cache_dir

if TYPE_CHECKING:
    from core.outputs import PlatformOutputs, PoolOutput

PROJECT_DIR = Path(__file__).resolve().parent.parent
STACK_TEMPLATES = Path(__file__).resolve().parent / "stacks"
PLATFORM_STACK = "e2e"
TEAM_STACK = "e2e-vision"
UPSTREAM_CHARTS = PROJECT_DIR.parent / "shared" / "upstream" / "charts"
PASSPHRASE = "mlplatform-e2e"  # encrypts only this throwaway stack's secrets
GRAFANA_PASSWORD = "e2e-grafana-admin"
# Bounds on each CLI step; a step past its bound is a failure, never a reason to wait longer.
TIMEOUTS = {"preview": 600.0, "up": 1200.0, "destroy": 900.0, "default": 300.0}


def charts_dir() -> Path:
    """Where the e2e stack installs charts from: $MLPLATFORM_CHARTS' first folder, else ../shared/upstream/charts."""
    named = [Path(p) for p in os.environ.get("MLPLATFORM_CHARTS", "").split(os.pathsep) if p]
    for folder in [*named, UPSTREAM_CHARTS]:
        if folder.is_dir():
            return folder.resolve()
    raise RuntimeError(f"make e2e installs the pinned charts from a folder, and none exists: put them in "
                       f"{UPSTREAM_CHARTS} (../shared/upstream/charts) or name one in MLPLATFORM_CHARTS")


@dataclass
class Pulumi:
    """The Pulumi CLI, run inside the cluster's network namespace against a file:// backend."""

    cluster: LoopbackCluster
    workdir: Path
    tools: Mapping[str, Path]
    calls: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def bindir(self) -> Path:
        return self.workdir / "bin"

    def install(self) -> None:
        # Hard links in one folder: the CLI finds its language host beside itself (a symlink it would warn about).
        self.bindir.mkdir(parents=True, exist_ok=True)
        host = self.tools["pulumi-language-python"]
        for source in (self.tools["pulumi"], host, host.with_name("pulumi-language-python-exec")):
            target = self.bindir / source.name
            if not target.exists():
                os.link(source, target)
        (self.workdir / "state").mkdir(exist_ok=True)
        self("login", f"file://{self.workdir / 'state'}", stack=None)
        provider = self.tools["pulumi-resource-kubernetes"]
        self("plugin", "install", "resource", "kubernetes", f"v{_provider_version()}", "--file", str(provider),
             stack=None)

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PULUMI_HOME": str(self.workdir / "pulumi-home"),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            # Both would reach for the internet: the update check on every command, and plugin downloads for
            # every pulumi-* package in the virtualenv (aws, gcp, random, command), which this stack never loads.
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
        }

    def __call__(self, *args: str, stack: str | None = PLATFORM_STACK, step: str = "default",
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        """`pulumi ARGS --stack STACK`; the output goes to the cluster's logs, and into the error if it fails."""
        self.calls += 1
        argv = [str(self.bindir / "pulumi"), *args, "--non-interactive", "--color", "never"]
        if stack:
            argv += ["--stack", stack]
        begin = time.monotonic()
        done = self.cluster.run(argv, env=self.env(), cwd=PROJECT_DIR, check=False, capture=True,
                                timeout=TIMEOUTS.get(step, TIMEOUTS["default"]))
        self.timings[step] = self.timings.get(step, 0.0) + time.monotonic() - begin
        log = self.cluster.logs / f"pulumi-{self.calls:02d}-{args[0]}.log"
        log.write_text(f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
        if check and done.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} exited {done.returncode} ({log}):\n"
                                 f"{(done.stdout + done.stderr)[-6000:]}")
        return done

    def outputs(self, stack: str = PLATFORM_STACK) -> dict[str, Any]:
        return json.loads(self("stack", "output", "--json", "--show-secrets", stack=stack).stdout)

    def resources(self, stack: str = PLATFORM_STACK) -> list[dict[str, Any]]:
        exported = json.loads(self("stack", "export", stack=stack).stdout)
        return exported.get("deployment", {}).get("resources") or []


def _provider_version() -> str:
    from importlib.metadata import version
    return version("pulumi_kubernetes")


@dataclass
class Platform:
    cluster: LoopbackCluster
    pulumi: Pulumi
    workdir: Path


def _write_stack_files(kubeconfig: Path, charts: Path) -> list[Path]:
    written = []
    for template in sorted(STACK_TEMPLATES.glob("Pulumi.*.yaml")):
        target = PROJECT_DIR / template.name
        if target.exists():
            raise RuntimeError(f"{target} exists already: it is written by make e2e for the run and removed after "
                               "it; remove the one an interrupted run left")
        target.write_text(template.read_text().replace("@KUBECONFIG@", str(kubeconfig))
                          .replace("@CHARTS@", str(charts)))
        written.append(target)
    return written


def _taint(taint: str) -> dict[str, str]:
    """A node's taint of "key=value:Effect"."""
    key_value, _, effect = taint.rpartition(":")
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect}


def nodes_of(outputs: Mapping[str, Any], system_labels: Mapping[str, str]) -> list[NodeSpec]:
    """One system node, and each GPU pool's nodes as its ClusterHandle states them (the platform stack's
    outputs): its labels and taints, and its GPUs as the device plugin advertises them (time-sliced shares
    under their renamed resource)."""
    from core.outputs import PlatformOutputs
    from verify.probe import gpu_resource

    platform = PlatformOutputs.read(outputs)
    general = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    # The system node, tainted as the stack says, and an untainted node for teams' CPU work.
    nodes = [NodeSpec("system-0", dict(system_labels), [_taint(t) for t in platform.system_taints], general),
             NodeSpec("cpu-0", {POOL_LABEL: CPU_POOL}, [], general)]
    for pool in platform.gpu_pools:
        resource = gpu_resource(pool) or "nvidia.com/gpu"
        per_node = pool.schedulable_gpus // max(pool.max_nodes, 1)
        if resource != "nvidia.com/gpu":
            # schedulableGpus counts nvidia.com/gpu only; renamed shares are `replicas` per GPU.
            per_node = pool.gpus_per_node * int(pool.sharing["timeSlicing"]["replicas"])
        taints = [_taint(t) for t in pool.taints]
        for index in range(pool.max_nodes):
            nodes.append(NodeSpec(f"{pool.name}-{index}", dict(pool.labels) | topology_labels(platform, pool, index),
                                  taints,
                                  {"cpu": "96", "memory": "1Ti", "pods": "110", "ephemeral-storage": "1Ti",
                                   resource: str(per_node)}))
    return nodes


def topology_labels(platform: PlatformOutputs, pool: PoolOutput, index: int) -> dict[str, str]:
    """Where node `index` of a multi-node pool sits, as a cloud labels it: two nodes to a domain at every level
    above the node (so a gang of two fits one block and a gang of three fits none), kubernetes.io/hostname
    being the node's own."""
    if not pool.multi_node:
        return {}
    return {level: f"{pool.name}-{level.rsplit('/', 1)[-1]}-{index // 2}"
            for level in platform.topology_levels[:-1]}


def _synthesized_outputs(stack: str) -> dict[str, Any]:
    """The stack's outputs as its program declares them, offline: what the nodes must look like."""
    from synth import synthesize
    return synthesize(stack).outputs


@contextmanager
def platform(workdir: Path | None = None) -> Iterator[Platform]:
    workdir = (workdir or cache_dir() / "run").resolve()
    tools = build_all()
    charts = charts_dir()
    with LoopbackCluster(workdir / "cluster", tools) as cluster:
        stack_files = _write_stack_files(cluster.kubeconfig, charts)
        pulumi = Pulumi(cluster, workdir / "pulumi", tools)
        try:
            if (workdir / "pulumi").exists():
                shutil.rmtree(workdir / "pulumi")
            outputs = _synthesized_outputs(PLATFORM_STACK)
            cluster.add_nodes(nodes_of(outputs, {"mlplatform.io/pool": "system"}))
            for controller in CHART_CONTROLLERS:  # Kueue's and JobSet's, run as their charts' pods would
                cluster.emulate_controller_pods(controller)
            pulumi.install()
            for stack in (PLATFORM_STACK, TEAM_STACK):
                pulumi("stack", "init", f"organization/mlplatform/{stack}", stack=None)
            pulumi("config", "set", "--secret", "grafanaAdminPassword", GRAFANA_PASSWORD)
            yield Platform(cluster, pulumi, workdir)
        finally:
            _leave_nothing(pulumi)
            for path in stack_files:
                path.unlink(missing_ok=True)
            _report(cluster, pulumi, workdir)


def _leave_nothing(pulumi: Pulumi) -> None:
    """After a failed run: destroy what the stacks still hold, so that no state outlives the cluster."""
    for stack in (TEAM_STACK, PLATFORM_STACK):
        try:
            if pulumi.resources(stack):
                pulumi("destroy", "--yes", "--skip-preview", stack=stack, step="cleanup", check=False)
        except (AssertionError, OSError, subprocess.SubprocessError) as exc:
            print(f"e2e: cleaning up stack {stack}: {exc}", file=sys.stderr)


def _report(cluster: LoopbackCluster, pulumi: Pulumi, workdir: Path) -> None:
    timings = {**cluster.timings, **{f"pulumi {step}": seconds for step, seconds in pulumi.timings.items()}}
    (workdir / "timings.json").write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    print("\ne2e timings (s): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in sorted(timings.items())),
          file=sys.stderr)
