"""Bad stack config fails before any resource exists, with the stack file, the key path and what is valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.errors import ConfigError
from stacks import main
from synth import PROJECT_DIR
from synth.engine import RecordingMonitor, run_program
from synth.stackfile import read_stack_config
from tests.conftest import KIND, cli_config, synth_with, team

QUOTA = {"requests": {"cpu": "4", "memory": "16Gi"}}

BAD_INPUTS = {
    "misspelled top-level key": (
        {"cluster": KIND, "teems": []},
        "mlplatform:teems", "unknown key; valid keys here: admission, capacity, cluster, deployer, monitoring, teams"),
    "misspelled nested key": (
        {"cluster": KIND, "teams": [{"name": "a", "qouta": QUOTA}]},
        "mlplatform:teams[0].qouta",
        "unknown key; valid keys here: containerDefaults, groups, ingressControllerNamespace, name, ownStack, "
        "podSecurity, queue, quota"),
    "unknown key inside a cluster": (
        {"cluster": {"cloud": "kind", "gpuPools": [{"name": "t4", "nodez": 2}]}},
        "mlplatform:cluster.gpuPools[0].nodez", "valid keys here: accelerator, gpusPerNode, name, nodes"),
    "wrong type": (
        {"cluster": {"cloud": "kind", "systemNodes": "two"}},
        "mlplatform:cluster.systemNodes", "valid integer"),
    "negative GPU quota": (
        {"cluster": KIND, "teams": [team("a", gpus=-1)]},
        "mlplatform:teams[0].quota.gpus", "greater than or equal to 0"),
    "not a quantity": (
        {"cluster": KIND, "teams": [{"name": "a", "quota": {"requests": {"cpu": "4", "memory": "lots"}}}]},
        "mlplatform:teams[0].quota.requests.memory", "'lots' is not a Kubernetes quantity such as"),
    "negative quantity": (
        {"cluster": KIND, "teams": [{"name": "a", "quota": {"requests": {"cpu": "-2", "memory": "1Gi"}}}]},
        "mlplatform:teams[0].quota.requests.cpu", "'-2' is negative"),
    "limits below requests": (
        {"cluster": KIND, "teams": [{"name": "a", "quota": {**QUOTA, "limits": {"cpu": "2", "memory": "16Gi"}}}]},
        "mlplatform:teams[0].quota", "requests exceed limits (cpu 4 > 2)"),
    "defaults that no pod could be admitted with": (
        {"cluster": KIND, "teams": [{"name": "a", "quota": {"requests": {"cpu": "500m", "memory": "16Gi"}}}]},
        "mlplatform:teams[0]", "containerDefaults.limits exceed the quota's limits (cpu 1 > 500m)"),
    "team name not RFC 1123": (
        {"cluster": KIND, "teams": [team("ML_Research")]},
        "mlplatform:teams[0].name", "not a valid Kubernetes name (RFC 1123 label)"),
    "team name Kubernetes reserves": (
        {"cluster": KIND, "teams": [team("kube-system")]},
        "mlplatform:teams[0].name", "a namespace the cluster owns"),
    "team in the monitoring namespace": (
        {"cluster": KIND, "teams": [team("monitoring")]},
        "mlplatform:teams", "share the platform's monitoring namespace"),
    "duplicate team names": (
        {"cluster": KIND, "teams": [team("a"), team("b"), team("a")]},
        "mlplatform:teams", "team name 'a' is used twice (at [0] and [2])"),
    "duplicate pool names": (
        {"cluster": {"cloud": "kind", "gpuPools": [{"name": "t4"}, {"name": "t4"}]}},
        "mlplatform:cluster.gpuPools", "GPU pool name 't4' is used twice"),
    "pool named like the system pool": (
        {"cluster": {"cloud": "kind", "gpuPools": [{"name": "system"}]}},
        "mlplatform:cluster.gpuPools[0].name", "'system' is the name of the system pool every cluster has"),
    "pool named like the CPU pool": (
        {"cluster": {"cloud": "kind", "gpuPools": [{"name": "cpu"}]}},
        "mlplatform:cluster.gpuPools[0].name", "'cpu' is the name of the cpu pool every cluster has"),
    "unknown accelerator": (
        {"cluster": {"cloud": "kind", "gpuPools": [{"name": "x", "accelerator": "nvidia-gtx-1080"}]}},
        "mlplatform:cluster.gpuPools[0].accelerator", "known: nvidia-a100-80gb, nvidia-a10g"),
    "unknown cloud": (
        {"cluster": {"cloud": "azure"}},
        "mlplatform:cluster", "unknown cloud 'azure'; valid: 'kind', 'existing'"),
    "no cluster at all": (
        {"teams": []},
        "mlplatform:cluster", "required key is missing"),
    "quotas over capacity": (
        {"cluster": {"cloud": "kind", "gpuPools": [{"name": "t4", "gpusPerNode": 2}]},
         "teams": [team("a", gpus=2), team("b", gpus=1)]},
        "mlplatform:teams", "add up to 3 GPUs but the GPU pools hold at most 2"),
}


@pytest.mark.parametrize("keys, path, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_named_and_nothing_is_declared(keys, path, message):
    monitor = RecordingMonitor()
    with pytest.raises(ConfigError) as caught:
        run_program(main, project="mlplatform", stack="test", config=cli_config(**keys), monitor=monitor)
    lines = str(caught.value).splitlines()
    assert any(line.startswith(f"Pulumi.test.yaml: {path}: ") and message in line for line in lines), lines
    assert monitor.recorded == []


def test_pool_max_below_min(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    pool = {"name": "a100", "accelerator": "nvidia-a100-80gb", "gpusPerNode": 8, "minNodes": 3, "maxNodes": 1}
    with pytest.raises(ConfigError, match=r"^Pulumi\.test\.yaml: mlplatform:cluster\.gpuPools\[0\]: maxNodes \(1\) "
                                          r"is below minNodes \(3\)"):
        synth_with(cluster={"cloud": "existing", "name": "lab", "kubeconfig": str(kubeconfig), "gpuPools": [pool]})


def test_missing_kubeconfig_of_an_existing_cluster(tmp_path):
    with pytest.raises(ConfigError, match=r"mlplatform:cluster\.kubeconfig: no kubeconfig file at"):
        synth_with(cluster={"cloud": "existing", "name": "lab", "kubeconfig": str(tmp_path / "absent")})


def test_overcommit_allowed_is_a_warning_with_both_numbers():
    synthesis = synth_with(cluster=KIND, capacity={"allowOvercommit": True}, teams=[team("a", 2), team("b", 2)])
    assert any("add up to 4 GPUs but the GPU pools hold at most 1" in w for w in synthesis.warnings)
    quotas = synthesis.of_type("kubernetes:core/v1:ResourceQuota")
    assert sorted(q.inputs["metadata"]["namespace"] for q in quotas if q.inputs["metadata"]["namespace"] in ("a", "b")) \
        == ["a", "b"]


def _project_with(tmp_path: Path, stack_text: str) -> Path:
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "Pulumi.bad.yaml").write_text(stack_text)
    return tmp_path


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    project = _project_with(tmp_path, "config:\n  mlplatform:teams: [unclosed\n")
    with pytest.raises(ConfigError, match=r"^Pulumi\.bad\.yaml: not valid YAML: the list opened with '\[' at line 2 "
                                          r"is not closed: add the '\]'\. Fix the file and run again\.$"):
        read_stack_config(project, "bad")


def test_config_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"^Pulumi\.bad\.yaml: config: expected a mapping"):
        read_stack_config(_project_with(tmp_path, "config: [1, 2]\n"), "bad")


def test_keys_without_namespace_belong_to_the_project(tmp_path):
    values, secret_keys = read_stack_config(_project_with(tmp_path, "config:\n  teams: []\n  aws:region: x\n"
                                                                     "  mlplatform:token:\n    secure: AAA=\n"), "bad")
    assert values == {"mlplatform:teams": "[]", "aws:region": "x", "mlplatform:token": "[secret]"}
    assert secret_keys == ["mlplatform:token"]


def test_missing_stack_file_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "synth", "nosuchstack"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Pulumi.nosuchstack.yaml: no such stack file")
    assert "local" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_from_the_pulumi_cli_environment(monkeypatch):
    """`pulumi up` hands config to the program in PULUMI_CONFIG, not in-process: the same checks apply."""
    monkeypatch.setenv("PULUMI_CONFIG", '{"mlplatform:cluster": "{\\"cloud\\": \\"kind\\"}", '
                                        '"mlplatform:teams": "[{\\"name\\": \\"Bad\\"}]"}')
    with pytest.raises(ConfigError, match=r"mlplatform:teams\[0\]\.name: 'Bad' is not a valid"):
        run_program(main, project="mlplatform", stack="test", config={})
