"""`make bench`: how the synth scales with the number of teams, and what our own code costs on top of Pulumi.

For 10, 100 and 1000 teams it runs, each in a fresh process: the real platform program through our engine
stand-in, then what `make synth` does with it (files, policy checks, summary); a bare program that registers
exactly the resources the real one did (same SDK classes, names, parents, providers and inputs) with no
config validation and no components' code, through our engine; and the same bare program under the SDK's
own mocks (`pulumi.runtime.set_mocks`, a Mocks that echoes inputs), which is the floor: what the SDK alone
costs for these resources, once as the SDK leaves Python's cyclic collector (on) and once with it paused as
our engine pauses it. Times are CPU seconds of the process (all its threads), so that other work on the
machine skews them less than it would the wall clock.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks

from core.progress import progress
from synth import PROJECT_DIR, pipeline
from synth.engine import run_program
from synth.output import plan, write
from synth.summary import summarize

SIZES = (10, 100, 1000)
WORK_DIR = PROJECT_DIR / ".bench"
# Where a full run writes its table: between these markers of docs/performance.md.
DOCS = PROJECT_DIR / "docs" / "performance.md"
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"
KINDS = ("real", "bare", "sdk", "sdk-nogc")
_WHAT = {"real": "the real program through the synth", "bare": "the bare program through the engine",
         "sdk": "the bare program under the SDK's mocks", "sdk-nogc": "the same with the collector paused"}


def bench_config(teams: int) -> dict[str, str]:
    keys: dict[str, Any] = {
        "cluster": {"cloud": "kind", "gpuPools": [{"name": "t4", "nodes": 4, "gpusPerNode": 8}]},
        "capacity": {"allowOvercommit": True},
        "teams": [{"name": f"team-{i:04d}", "quota": {"requests": {"cpu": "8", "memory": "32Gi"}, "gpus": 1},
                   "groups": {"edit": [f"group-{i}"], "view": ["observers"]}} for i in range(teams)],
    }
    return {f"mlplatform:{key}": json.dumps(value) for key, value in keys.items()}


def _sdk_class(type_: str) -> type[pulumi.CustomResource] | None:
    """The provider SDK's class for a type token, so that the bare program pays what the SDK costs too; None
    for custom resources, which the SDK registers generically too."""
    package, module, name = type_.split(":")
    if package == "pulumi" and module == "providers":
        return importlib.import_module(f"pulumi_{name}").Provider
    if package == "kubernetes":
        group, version = module.split("/")
        try:
            return getattr(importlib.import_module(f"pulumi_kubernetes.{group.split('.')[0]}.{version}"), name)
        except (ImportError, AttributeError):
            return None
    # Providers' "index" module is the package itself (random:index/randomPassword:RandomPassword).
    return getattr(importlib.import_module(f"pulumi_{package}" if module.startswith("index") else
                                           f"pulumi_{package}.{module}"), name)


def _sdk_args(inputs: dict[str, Any]) -> dict[str, Any]:
    # The SDK classes take snake_case arguments and set apiVersion and kind themselves.
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in inputs.items()
            if key not in ("apiVersion", "kind")}


def _replay(entries: list[dict[str, Any]]) -> None:
    """Register the resources of a plan again, parents and providers first, through Pulumi's generic classes."""
    by_urn = {entry["urn"]: entry for entry in entries}
    made: dict[str, pulumi.Resource] = {}

    def make(urn: str) -> pulumi.Resource | None:
        if urn not in by_urn:
            return None  # the stack itself
        if urn in made:
            return made[urn]
        entry = by_urn[urn]
        provider = make(entry["provider"]) if entry["provider"] else None
        assert provider is None or isinstance(provider, pulumi.ProviderResource)
        opts = pulumi.ResourceOptions(
            parent=make(entry["parent"]) if entry["parent"] else None,
            provider=provider,
            depends_on=[dep for d in entry["dependsOn"] if (dep := make(d)) is not None],
        )
        if entry["custom"]:
            sdk_class = _sdk_class(entry["type"])
            made[urn] = (sdk_class(entry["name"], opts=opts, **_sdk_args(entry["inputs"])) if sdk_class else
                         pulumi.CustomResource(entry["type"], entry["name"], entry["inputs"], opts))
        else:
            component = pulumi.ComponentResource(entry["type"], entry["name"], None, opts)
            component.register_outputs({})
            made[urn] = component
        return made[urn]

    for entry in entries:
        make(entry["urn"])


class _EchoMocks(Mocks):
    """The mocks of the SDK's testing guide: every resource's outputs are its inputs."""

    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict]:
        return (f"{args.name}-id" if args.custom else "", args.inputs)

    def call(self, args: Any) -> tuple[dict, None]:
        raise RuntimeError(f"the bench program calls no provider function, yet called {args.token}")


def _under_sdk_mocks(entries: list[dict[str, Any]]) -> int:
    """Replay the plan under the SDK's own mocks and test runner, as a project's unit tests would; the count."""
    monitor = MockMonitor(_EchoMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="mlplatform", stack="bench", preview=True, monitor=monitor)
    pulumi.runtime.test(lambda: _replay(entries))()
    return len(monitor.get_registered_resources())


def _child(kind: str, teams: int) -> dict[str, Any]:
    plan_file = WORK_DIR / f"plan-{teams}.json"
    # Imports are paid once per process, not per resource: every program starts with them done.
    import stacks.platform  # noqa: F401
    entries = [] if kind == "real" else json.loads(plan_file.read_text())["resources"]
    result: dict[str, Any] = {}
    start = time.process_time()
    if kind == "real":
        # The pipeline `make synth` runs, less Helm rendering: the bench's stacks differ only in their teams.
        synthesized = pipeline.run("bench", config=bench_config(teams), render=False)
        synthesis = synthesized.synthesis
        result["seconds"] = time.process_time() - start
        result["resources"] = len(synthesis.resources)
        start = time.process_time()
        out_dir = WORK_DIR / f"out-{teams}"
        write(synthesis, out_dir)
        summarize(synthesis, out_dir, synthesized.violations)
        result["output_seconds"] = time.process_time() - start
        plan_file.write_text(json.dumps(plan(synthesis)))
    elif kind == "bare":
        synthesis = run_program(lambda: _replay(entries), project="mlplatform", stack="bench", config={})
        result["seconds"] = time.process_time() - start
        result["resources"] = len(synthesis.resources)
    else:
        if kind == "sdk-nogc":
            gc.disable()
        result["resources"] = _under_sdk_mocks(entries)
        result["seconds"] = time.process_time() - start
    return result | {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _measure(kind: str, teams: int, repeat: int) -> dict[str, Any]:
    """The fastest of `repeat` runs: what other work on the machine adds only ever slows a run down."""
    runs = []
    for run in range(repeat):
        progress(f"{teams} teams: {_WHAT[kind]}, run {run + 1} of {repeat}")
        runs.append(json.loads(subprocess.run([sys.executable, "-m", "synth.bench", "--child", kind, str(teams)],
                                              cwd=PROJECT_DIR, capture_output=True, text=True, check=True).stdout))
    return min(runs, key=lambda run: run["seconds"])


def with_table(page: str, table: list[str], note: str) -> str:
    """The page with the text between its bench markers replaced by the table and a note on the run."""
    before, begin, rest = page.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not (begin and end):
        raise SystemExit(f"error: {DOCS.relative_to(PROJECT_DIR)} has no {BEGIN} ... {END} to write the table into")
    return before + BEGIN + "\n```\n" + "\n".join(table) + "\n```\n\n" + note + "\n" + END + after


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m synth.bench", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TEAMS"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="team counts to run")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each program, of which the fastest counts")
    args = parser.parse_args()
    WORK_DIR.mkdir(exist_ok=True)
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]))))
        return

    started = time.monotonic()
    progress(f"{len(KINDS)} programs x {args.repeat} runs for each of {', '.join(map(str, args.sizes))} teams, "
             "each in a fresh process; the 1000-team runs take the longest (several minutes together)")
    table = [f"{'':25} {'CPU ms per resource':^41} {'synth / floor':^15}",
             f"{'teams':>6} {'resources':>9} {'synth s':>7} {'synth':>7} {'output':>7} {'bare':>7} {'sdk':>7} "
             f"{'sdk-nogc':>8} {'sdk':>7} {'sdk-nogc':>8} {'peak MiB':>8}"]
    print("\n".join(table), flush=True)
    for teams in args.sizes:
        real, bare, sdk, sdk_nogc = (_measure(kind, teams, args.repeat) for kind in KINDS)
        count = real["resources"]
        for kind, other in zip(KINDS[1:], (bare, sdk, sdk_nogc)):
            if other["resources"] != count:
                raise SystemExit(f"the {kind} program registered {other['resources']} resources, not {count}")
        per_resource = [1000 * s / count for s in (real["seconds"], real["output_seconds"], bare["seconds"],
                                                   sdk["seconds"], sdk_nogc["seconds"])]
        table.append(f"{teams:>6} {count:>9} {real['seconds']:>7.1f} "
                     + " ".join(f"{ms:>7.2f}" for ms in per_resource[:4])
                     + f" {per_resource[4]:>8.2f} {real['seconds'] / sdk['seconds']:>7.2f} "
                     f"{real['seconds'] / sdk_nogc['seconds']:>8.2f} {real['peak_mib']:>8.0f}")
        print(table[-1], flush=True)
    minutes = (time.monotonic() - started) / 60
    if tuple(args.sizes) == SIZES and args.repeat == 2:
        note = (f"Written by `make bench` on {time.strftime('%Y-%m-%d')}; the run took {minutes:.0f} minutes of "
                f"wall clock on {os.cpu_count()} cores.")
        DOCS.write_text(with_table(DOCS.read_text(), table, note))
        progress(f"wrote the table into {DOCS.relative_to(PROJECT_DIR)}")
    else:
        progress(f"not written into {DOCS.relative_to(PROJECT_DIR)}: only a full run (the default sizes, "
                 "--repeat 2) is")


if __name__ == "__main__":
    main()
