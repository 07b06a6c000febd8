"""The GPU alerts and GPU usage rules, run by Prometheus's own rule tester on exactly what monitoring deploys.

tests/promtool/*.test.yaml hold the cases: input series with the labels our scrape leaves on a real exporter's
samples, the alerts they must raise (labels, annotations, `for:` timing) and must not (a healthy idle cluster,
free GPUs, an old XID, a restarted exporter), and the GPU-hour figures of the cost rules.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.gpu_rules import advertised_gpus_per_node, advertised_resource, gpu_rule_groups
from core.handle import GpuPool, gpu_pool_labels
from components.monitoring import DASHBOARDS, Monitoring
from core.fields import GpuSharing
from e2e.tools import built_or_on_path
from synth.engine import Synthesis
from tests.conftest import cluster_handle, run_component
from tests.test_monitoring import DEVICE_PLUGIN, SETTINGS, custom_resource

PROMTOOL_TESTS = Path(__file__).parent / "promtool"
TEST_FILES = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))


# promtool of the Prometheus we deploy, as `make e2e-tools` builds it (never built here), else any on PATH.
PROMTOOL = built_or_on_path("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: `make e2e-tools` builds the one of the Prometheus we deploy (or "
                             "put any promtool on PATH); the promtool rule tests are skipped")


def pool(**changes: Any) -> GpuPool:
    base = GpuPool(name="a100", accelerator="nvidia-a100-80gb", gpus_per_node=8, min_nodes=0, max_nodes=2,
                   spot=True, labels=gpu_pool_labels("a100", "nvidia-a100-80gb"))
    return dataclasses.replace(base, **changes)


def time_sliced(name: str, accelerator: str, *, renamed: bool) -> GpuPool:
    sharing = GpuSharing.model_validate({"timeSlicing": {"replicas": 4, "renameByDefault": renamed}})
    return pool(name=name, accelerator=accelerator, gpus_per_node=1, sharing=sharing,
                labels=gpu_pool_labels(name, accelerator))


# What the promtool cases run against: whole A100s, T4s time-sliced in 4 shares of nvidia.com/gpu and L4s
# time-sliced in 4 shares renamed nvidia.com/gpu.shared, each priced per GPU-hour.
RULE_POOLS = (pool(), time_sliced("t4", "nvidia-tesla-t4", renamed=False), time_sliced("l4", "nvidia-l4", renamed=True))
RULE_PRICES = {"a100": 2.5, "t4": 0.5, "l4": 1.5}


@functools.cache
def deployed_groups() -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule the Monitoring component creates, priced as the cost tests expect."""
    settings = SETTINGS.model_copy(update={"gpu_prices": RULE_PRICES})
    synthesis = run_component(lambda: Monitoring("monitoring", cluster_handle(RULE_POOLS), settings,
                                                 device_plugin=DEVICE_PLUGIN))
    return custom_resource(synthesis, "PrometheusRule").inputs["spec"]["groups"]


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rules")
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": deployed_groups()}, sort_keys=False))
    for test_file in TEST_FILES:
        shutil.copy(test_file, directory / test_file.name)
    return directory


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_checks_the_deployed_rules(rule_dir: Path):
    result = promtool("check", "rules", "rules.yaml", cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_checks_the_local_stacks_rules(local_synth: Synthesis, tmp_path: Path):
    """The kind stack's own rules (its pool, its price), as `pulumi up` would apply them."""
    (rule,) = [r for r in local_synth.resources if r.custom and r.inputs.get("kind") == "PrometheusRule"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule.inputs["spec"]["groups"]}))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'mlplatform:gpu_price_per_hour' in (tmp_path / "rules.yaml").read_text()


@needs_promtool
@pytest.mark.parametrize("test_file", [f.name for f in TEST_FILES])
def test_promtool_rule_unit_tests_pass(rule_dir: Path, test_file: str):
    result = promtool("test", "rules", test_file, cwd=rule_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def alerts_and_records() -> tuple[set[str], set[str]]:
    rules = [rule for group in deployed_groups() for rule in group["rules"]]
    return {r["alert"] for r in rules if "alert" in r}, {r["record"] for r in rules if "record" in r}


def rule_test_cases() -> list[dict[str, Any]]:
    return [case for f in TEST_FILES for case in yaml.safe_load(f.read_text())["tests"]]


def test_every_alert_is_proven_to_fire_and_to_stay_quiet_on_a_healthy_cluster():
    alerts, _ = alerts_and_records()
    fired = {t["alertname"] for case in rule_test_cases() for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert fired == alerts
    (healthy,) = [case for case in rule_test_cases() if case["name"] == "healthy idle cluster"]
    assert {t["alertname"] for t in healthy["alert_rule_test"] if t["exp_alerts"] == []} == alerts
    # Every alert is also seen before its `for:` has passed, or at a time it must not fire.
    quiet = {t["alertname"] for case in rule_test_cases() for t in case.get("alert_rule_test", [])
             if t["exp_alerts"] == [] and case["name"] != "healthy idle cluster"}
    assert quiet == alerts


def test_every_recording_rule_has_a_case():
    _, records = alerts_and_records()
    tested = " ".join(t["expr"] for case in rule_test_cases() for t in case.get("promql_expr_test", []))
    assert {r for r in records if not re.search(rf"(?<![\w:]){re.escape(r)}(?![\w:])", tested)} == set()


def test_the_dashboards_cost_table_asks_what_the_cost_tests_prove():
    dashboard = json.loads((DASHBOARDS / "gpus.json").read_text())
    (table,) = [p for p in dashboard["panels"] if p["type"] == "table"]
    tested = {t["expr"] for case in rule_test_cases() for t in case.get("promql_expr_test", [])}
    for target in table["targets"]:
        if "$__range" in target["expr"]:
            assert target["expr"].replace("$__range", "1d") in tested, target["refId"]


def test_every_alert_has_a_runbook_in_the_docs():
    readme = (Path(__file__).parent.parent / "docs" / "monitoring.md").read_text()
    runbooks = set(re.findall(r"^### (\w+)$", readme, flags=re.MULTILINE))
    alerts, _ = alerts_and_records()
    assert alerts <= runbooks
    rules = [rule for group in deployed_groups() for rule in group["rules"] if "alert" in rule]
    # GitHub's anchor for a heading `### GpuXidError` is #gpuxiderror.
    assert all(rule["annotations"]["runbook"] == f"docs/monitoring.md#{rule['alert'].lower()}" for rule in rules)


def test_the_pull_request_workflow_installs_promtool():
    workflow = yaml.safe_load((Path(__file__).parent.parent / ".github/workflows/pull-request.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["offline"]["steps"]]
    install = next(i for i, run in enumerate(runs) if "apt-get install" in run and " prometheus" in run)
    assert install < next(i for i, run in enumerate(runs) if "make test" in run)


def test_a_pool_advertises_its_gpus_times_their_shares():
    assert advertised_gpus_per_node(pool()) == 8
    shares = GpuSharing.model_validate({"timeSlicing": {"replicas": 4}})
    assert advertised_gpus_per_node(pool(sharing=shares)) == 32
    # Renamed shares are as many, of nvidia.com/gpu.shared: none of nvidia.com/gpu.
    renamed = GpuSharing.model_validate({"timeSlicing": {"replicas": 4, "renameByDefault": True}})
    assert advertised_gpus_per_node(pool(sharing=renamed)) == 32
    assert (advertised_resource(pool(sharing=renamed)), advertised_resource(pool(sharing=shares))) == (
        "nvidia_com_gpu_shared", "nvidia_com_gpu")
    single = GpuSharing.model_validate({"migStrategy": "single"})
    assert advertised_gpus_per_node(pool(sharing=single, mig_partitions=7)) == 56  # GKE cuts each GPU in 7
    # MIG cut on the node (outside GKE) or advertised per profile: the platform cannot know the count.
    assert advertised_gpus_per_node(pool(sharing=single)) is None
    assert advertised_gpus_per_node(pool(sharing=GpuSharing.model_validate({"migStrategy": "mixed"}))) is None
    mixed_only = gpu_rule_groups((pool(sharing=GpuSharing.model_validate({"migStrategy": "mixed"})),), None, {})
    assert "GpuNodeAllocatableBelowPool" not in {r.get("alert") for g in mixed_only for r in g["rules"]}
