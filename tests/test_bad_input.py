"""Bad stack files, as a user writes them: `python -m synth <stack>` exits 2 with one message naming the file, the
key path, what was found and what is valid; nothing is declared or written; valid unusual YAML keeps working.

The end-to-end cases run synth.__main__.main, which is exactly what `python -m synth` runs, in-process (each
stack file is written next to a copy of Pulumi.yaml and the repo's stack files, where a user puts it: a project
folder of the test's own, so that other tests listing the repo's stacks never see it); two run it as a
subprocess, in a copy of the project. The bulk tests the validators directly.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import synth.__main__ as entry
from core.fields import check_access_cidrs, check_disjoint, label_key, label_value
from clouds.eks.config import EKS_NAME_MAX
from config.errors import ConfigError
from clouds.gke.config import GKE_NAME_MAX
from config.models import TeamStackConfig
from core.quantity import parse_quantity
from stacks import main as program
from stacks.team import check_namespaces_free
from synth import synthesize
from synth.diff import inputs_environment
from synth.engine import RecordingMonitor, run_program
from synth.stackfile import read_stack_config
from tests.conftest import cli_config, project_copy, stack_files, team

KIND = "config:\n  mlplatform:cluster: {cloud: kind}\n"
TEAM = "  mlplatform:teams:\n    - name: a\n      quota: {requests: {cpu: '1', memory: 1Gi}%s}\n"
AWS = ("config:\n  mlplatform:cluster:\n    cloud: aws\n    name: ml\n    environment: %s\n    region: us-east-1\n"
       "    availabilityZones: [us-east-1a, us-east-1b]\n    adminRoleArns: ['arn:aws:iam::210987654321:role/deployer']\n"
       "    endpoint: {publicAccessCidrs: %s}\n")
GCP = ("config:\n  mlplatform:cluster:\n    cloud: gcp\n    name: %s\n    environment: %s\n    project: my-project-x\n"
       "    region: us-central1\n    zones: [us-central1-a]\n    masterAuthorizedNetworks: %s\n")


RunSynth = Callable[..., tuple[int, str]]


@pytest.fixture
def run_synth(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> Iterator[RunSynth]:
    """Write Pulumi.<stack>.yaml beside Pulumi.yaml (in a project folder of the test's own), run `python -m synth
    <stack>`'s main there, and return its exit code and stderr; check that a failed run wrote nothing under out/
    and printed no traceback."""
    project = stack_files(tmp_path / "project")
    # The project's folder, for the stack file and for out/<stack> (where a run writes unless told otherwise).
    monkeypatch.setattr(entry.pipeline, "run", functools.partial(entry.pipeline.run, project_dir=project))
    monkeypatch.setattr(entry, "PROJECT_DIR", project)

    def run(content: str | bytes, *args: str, stack: str | None = None) -> tuple[int, str]:
        stack = stack or f"zz-bad-{uuid.uuid4().hex[:8]}"
        path = project / f"Pulumi.{stack}.yaml"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        code = entry.main([stack, *args])
        stderr = capsys.readouterr().err
        if code == 2:
            assert not (project / "out" / stack).exists()
            assert "Traceback" not in stderr
            assert stderr.startswith("error: "), stderr
        return code, stderr

    yield run


def refused(run_synth: RunSynth, content: str | bytes, *fragments: str) -> str:
    code, stderr = run_synth(content)
    assert code == 2, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    return stderr


# ---- 1. whole sections vanish ---------------------------------------------------------------------------

@pytest.mark.parametrize("content, fragments", [
    (KIND + "  mlplatfrom:teams: []\n", ["mlplatfrom:teams: a key nothing in this project reads",
                                         "Did you mean mlplatform:teams?"]),
    (KIND + "  MLPlatform:teams: []\n", ["MLPlatform:teams", "Did you mean mlplatform:teams?"]),
    (KIND + "  mlplatform_teams: []\n", ["mlplatform:mlplatform_teams: unknown key; valid keys here: admission, capacity"]),
    (KIND + "  mlplatform:teams: []\n  mlplatform:teams: []\n", ["key 'mlplatform:teams' is given twice",
                                                                "(first at line 3)", "line 4"]),
    ("config:\n  mlplatform:cluster: {cloud: kind, name: a, name: b}\n", ["key 'name' is given twice"]),
    (KIND + "  cluster: {cloud: kind}\n", ["cluster: the same key as mlplatform:cluster"]),
    ("- config\n", ["holds a list at the top", "config:"]),
    ("", ["no `config:` section"]),
    ("confg:\n  mlplatform:cluster: {cloud: kind}\n", ["confg: not a key of a stack file"]),
    (KIND + "  mlplatform:teams: {secure: AAAA}\n", ["mlplatform:teams: stored as a secret (secure:), but it is not"]),
])
def test_sections_never_vanish(run_synth, content, fragments):
    stderr = refused(run_synth, content, *fragments)
    assert re.match(r"error: Pulumi\.zz-bad-\w+\.yaml: ", stderr)


def test_other_namespaces_pulumi_uses_stay_allowed(run_synth, tmp_path):
    content = KIND + "  aws:region: us-east-1\n  gcp:project: p\n  kubernetes:context: c\n  pulumi:tags: {a: b}\n"
    code, stderr = run_synth(content, "--out", str(tmp_path))
    assert code == 0, stderr


# ---- 2. crashes on bad input ----------------------------------------------------------------------------

BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{b}'] * 9)}]\n" for a, b in zip("bcdefgh", "abcdefg"))


@pytest.mark.parametrize("content, fragments", [
    (KIND.encode("utf-16"), ["the file is UTF-16", "save it as UTF-8"]),
    ("config:\n  mlplatform:cluster: {cloud: kind, name: caf\xe9}\n".encode("latin-1"), ["not UTF-8 (byte 53 is 0xe9)"]),
    (KIND + "  mlplatform:teams: !!set {a, b}\n", ["read as a set", "line 3"]),
    ("config:\n  mlplatform:cluster: {cloud: kind, 1: x}\n", ["the key '1' is read as the number 1", "quote it"]),
    ("config:\n  mlplatform:cluster: {cloud: kind, name: 2024-01-01}\n", ["'2024-01-01' is read as a date",
                                                                           "quote it"]),
    (KIND + (TEAM % "").replace("cpu: '1'", "cpu: 8e1000000"), ["teams[0].quota.requests.cpu: '8e1000000'"]),
    (KIND + (TEAM % "").replace("memory: 1Gi", "memory: 9Ei"), ["more than a Kubernetes quantity holds"]),
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB + KIND + "  mlplatform:teams: *h\n",
     ["expands to more than 200,000 values"]),
    (KIND + "  mlplatform:teams: &a [*a]\n", ["contains itself through an alias"]),
    ("config:\n  mlplatform:cluster: {cloud: existing, name: x, kubeconfig: '~no-such-user-here/k'}\n",
     ["mlplatform:cluster.kubeconfig: '~no-such-user-here/k' cannot be expanded"]),
    ("config:\n  mlplatform:cluster: {cloud: existing, name: x, kubeconfig: /}\n",
     ["mlplatform:cluster.kubeconfig: no kubeconfig file at '/'"]),
    (KIND + "  mlplatform:monitoring: {namespace: gpu-operator}\n",
     ["mlplatform:monitoring.namespace: 'gpu-operator' is a namespace of the platform's own agents"]),
    ("config:\n  mlplatform:cluster: {cloud: kind, name: \"a\0\"}\n", ["unacceptable character #x0000"]),
])
def test_no_crash_on_bad_input(run_synth, content, fragments):
    refused(run_synth, content, *fragments)


def test_a_team_stack_that_names_itself_or_a_team_stack(run_synth):
    stack = f"zz-team-{uuid.uuid4().hex[:8]}"
    team_stack = ("config:\n  mlplatform:platformStack: organization/mlplatform/%s\n  mlplatform:team: vision\n"
                  "  mlplatform:namespaces: [{name: vision, quota: {requests: {cpu: '1', memory: 1Gi}}}]\n")
    code, stderr = run_synth(team_stack % stack, stack=stack)
    assert code == 2
    assert stderr.startswith(f"error: Pulumi.{stack}.yaml: mlplatform:platformStack: "
                             f"'organization/mlplatform/{stack}' is this stack itself")
    code, stderr = run_synth(team_stack % "team-vision")
    assert code == 2 and "mlplatform:platformStack: 'organization/mlplatform/team-vision' is a team stack" in stderr
    code, stderr = run_synth(team_stack % "")
    assert code == 2 and re.match(r"error: Pulumi\.zz-bad-\w+\.yaml: mlplatform:platformStack: "
                                  r"'organization/mlplatform/' is not a stack name", stderr)
    assert "Pulumi..yaml" not in stderr


@pytest.mark.parametrize("variable, value, fragment", [
    ("PULUMI_CONFIG", "not json", "PULUMI_CONFIG (environment variable): not JSON"),
    ("PULUMI_CONFIG", "[1, 2]", "PULUMI_CONFIG (environment variable): holds list, not a JSON object"),
    ("PULUMI_CONFIG_SECRET_KEYS", "{", "PULUMI_CONFIG_SECRET_KEYS (environment variable): not JSON"),
])
def test_pulumi_config_that_is_not_json(run_synth, monkeypatch, variable, value, fragment):
    monkeypatch.setenv(variable, value)
    refused(run_synth, KIND, fragment)


def test_a_team_stack_namespace_the_platform_stack_already_has():
    config = TeamStackConfig.model_validate({
        "platformStack": "organization/mlplatform/local", "team": "a",
        "namespaces": [{"name": "a", "quota": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                       {"name": "a-b", "quota": {"requests": {"cpu": "1", "memory": "1Gi"}}}]})
    budgets = {"a": {"namespace": "a", "ownStack": True}, "a-b": {"namespace": "a-b", "ownStack": False}}
    with pytest.raises(ConfigError, match=r"^Pulumi\.t\.yaml: mlplatform:namespaces\[1\]\.name: 'a-b' is team a-b's "
                                          r"namespace in the platform stack organization/mlplatform/local"):
        check_namespaces_free(config, budgets, "monitoring", "t")
    check_namespaces_free(config, {"a": budgets["a"]}, "monitoring", "t")
    with pytest.raises(ConfigError, match="'a' is the platform's monitoring namespace"):
        check_namespaces_free(config, {}, "a", "t")


# ---- 3. whole strings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, path", [
    (KIND + TEAM.replace("name: a", 'name: "a\\n"') % "", "mlplatform:teams[0].name"),
    (KIND + '  mlplatform:monitoring: {retention: "15d\\n"}\n', "mlplatform:monitoring.retention"),
    (KIND + '  mlplatform:monitoring: {storageClass: "gp3\\n"}\n', "mlplatform:monitoring.storageClass"),
    ((AWS % ("dev", "[]")).replace("us-east-1b]", '"us-east-1b\\n"]'), "mlplatform:cluster: availabilityZones"),
    ((GCP % ("ml", "dev", "[]")).replace("[us-central1-a]", '["us-central1-a\\n"]'), "mlplatform:cluster: zone"),
    ((GCP % ("ml", "dev", "[]")) + '    kubernetesVersion: "1.34\\n"\n', "mlplatform:cluster.kubernetesVersion"),
])
def test_a_trailing_newline_is_not_a_match(run_synth, content, path):
    refused(run_synth, content, f"{path}")


# ---- 4. security-relevant input -------------------------------------------------------------------------

@pytest.mark.parametrize("content, fragment", [
    (AWS % ("prod", "[0.0.0.0/1, 128.0.0.0/1]"), "endpoint.publicAccessCidrs: a prod cluster's API endpoint may not "
                                                 "be open to the world, and 0.0.0.0/1, 128.0.0.0/1 cover every"),
    (AWS % ("prod", "[8.0.0.0/8]"), "cover 16,777,216 public addresses, more than a /16"),
    (GCP % ("ml", "prod", "[{cidr: 0.0.0.0/0, name: all}]"), "masterAuthorizedNetworks: a prod cluster's API "
                                                             "endpoint may not be open to the world"),
    (KIND + "  mlplatform:monitoring: {namespace: kube-system}\n", "'kube-system' is a namespace the cluster owns"),
    (KIND + TEAM.replace("name: a", "name: local-path-storage") % "", "'local-path-storage' is a namespace the "
                                                                      "cluster owns"),
    (KIND + TEAM.replace("name: a", "name: kueue-system") % "", "'kueue-system' is a namespace of the platform's"),
])
def test_control_planes_and_namespaces_stay_closed(run_synth, content, fragment):
    refused(run_synth, content, fragment)


def test_one_rule_for_who_reaches_a_control_plane():
    check_access_cidrs(["0.0.0.0/0"], "dev")
    check_access_cidrs(["203.0.113.0/24", "198.51.100.7/32", "10.0.0.0/8"], "prod")
    check_access_cidrs(["100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "8.8.0.0/16"], "prod")
    for world in (["0.0.0.0/0"], ["0.0.0.0/1", "128.0.0.0/1"], ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1"]):
        with pytest.raises(ValueError, match="open to the world"):
            check_access_cidrs(world, "prod")
    for broad in (["1.0.0.0/8"], ["8.8.0.0/16", "9.9.0.0/16"], ["11.0.0.0/15"]):
        with pytest.raises(ValueError, match="more than a /16"):
            check_access_cidrs(broad, "prod")


# ---- 5. what the cloud would refuse at `pulumi up` ------------------------------------------------------

@pytest.mark.parametrize("content, fragment", [
    (KIND + TEAM % ", gpus: true", "mlplatform:teams[0].quota.gpus: expected a number, got the boolean true"),
    ("config:\n  mlplatform:cluster: {cloud: kind, systemNodes: true}\n", "mlplatform:cluster.systemNodes: expected "
                                                                          "a number"),
    (KIND + "  mlplatform:capacity: {allowOvercommit: 1}\n", "allowOvercommit: expected true or false, got the "
                                                             "number 1"),
    (KIND + TEAM % "" + "      groups: {edit: ['']}\n", "mlplatform:teams[0].groups.edit[0]: '' is not a group name"),
    (KIND + TEAM % ", pods: 99999999999999999999", "mlplatform:teams[0].quota.pods: 99999999999999999999 is too "
                                                   "large"),
    ((AWS % ("dev", "[]")).replace("us-east-1b]", "us-east-1b, us-east-1a]"), "availability zone 'us-east-1a' is "
                                                                            "listed twice"),
    ((AWS % ("dev", "['2001:db8::/32']")), "publicAccessCidrs[0]: '2001:db8::/32' is an IPv6 block"),
    ((AWS % ("dev", "[]")).replace("name: ml", "name: " + "a" * (EKS_NAME_MAX + 1)), "not an EKS cluster name of "
                                                                                     "at most 28 characters"),
    (GCP % ("a" * (GKE_NAME_MAX + 1), "dev", "[]"), "is not a GKE cluster name"),
    (GCP % ("ml", "dev", "[]") + "    network: {podsCidr: 10.8.0.0/14}\n", "mlplatform:cluster.network: subnetCidr "
                                                                          "10.10.0.0/20 overlaps podsCidr"),
    (GCP % ("ml", "dev", "[]") + "    systemPool: {minNodes: 4, maxNodes: 2}\n", "mlplatform:cluster.systemPool: "
                                                                               "maxNodes (2) is below minNodes (4)"),
    ((AWS % ("dev", "[]")) + "    systemPool: {instanceType: m7i large}\n", "mlplatform:cluster.systemPool."
                                                                            "instanceType: 'm7i large' is not an EC2"),
    (GCP % ("ml", "dev", "[]") + "    systemPool: {machineType: E2}\n", "'E2' is not a Compute Engine machine type"),
    ("config:\n  mlplatform:cluster: {cloud: existing, name: x, kubeconfig: Pulumi.yaml, systemNodeLabels: "
     "{'bad key!': v}}\n", "systemNodeLabels.bad key! (the key): label key 'bad key!' is not a Kubernetes label key"),
])
def test_what_the_cloud_would_refuse_fails_at_synth(run_synth, content, fragment):
    refused(run_synth, content, fragment)


@pytest.mark.parametrize("valid, value", [(True, "mlplatform.io/pool"), (True, "a"), (True, "x.y/A_b-c.9"),
                                          (False, "-a"), (False, "a/"), (False, "/a"), (False, "A.B/c"),
                                          (False, "a" * 64), (False, "a b")])
def test_label_keys(valid, value):
    if valid:
        assert label_key(value) == value
    else:
        with pytest.raises(ValueError, match="label key"):
            label_key(value)


@pytest.mark.parametrize("valid, value", [(True, ""), (True, "nvidia-l4"), (True, "2024-01-01"), (False, "a b"),
                                          (False, "a" * 64), (False, "x-"), (False, "a\n")])
def test_label_values(valid, value):
    if valid:
        assert label_value(value) == value
    else:
        with pytest.raises(ValueError, match="label value"):
            label_value(value)


def test_overlapping_ranges():
    check_disjoint({"a": "10.0.0.0/16", "b": "10.1.0.0/16", "c": "172.16.0.0/28"})
    with pytest.raises(ValueError, match="b 10.0.128.0/17 overlaps c 10.0.128.0/24"):
        check_disjoint({"a": "10.1.0.0/16", "b": "10.0.128.0/17", "c": "10.0.128.0/24"})


@pytest.mark.parametrize("text", ["8e1000000", "1e41", "9223372036854775808", "9Ei", "10E"])
def test_quantities_beyond_what_kubernetes_holds(text):
    with pytest.raises(ValueError):
        parse_quantity(text)


# AWS API limits on the names the EKS components derive from the cluster name (IAM CreateRole, EventBridge
# PutRule, EKS CreateNodegroup, SQS CreateQueue, EKS CreateCluster); Pulumi autonames `<logical name>-<7 hex>`.
AWS_NAME_LIMITS = {"aws:iam/role:Role": 64, "aws:cloudwatch/eventRule:EventRule": 64,
                   "aws:eks/nodeGroup:NodeGroup": 63, "aws:sqs/queue:Queue": 80, "aws:eks/cluster:Cluster": 100,
                   "aws:iam/rolePolicy:RolePolicy": 128}
AWS_NAME_INPUT = {"aws:eks/nodeGroup:NodeGroup": "nodeGroupName"}


def test_every_name_derived_from_the_longest_eks_cluster_name_fits_aws():
    name = "a" * EKS_NAME_MAX
    cluster = {"cloud": "aws", "name": name, "region": "us-east-1", "availabilityZones": ["us-east-1a", "us-east-1b"],
               "adminRoleArns": ["arn:aws:iam::210987654321:role/deployer"],
               "gpuPools": [{"name": "l4", "instanceTypes": ["g6.xlarge"], "maxNodes": 1}]}
    synthesis = synthesize("test", config=cli_config(cluster=cluster))
    checked = 0
    for resource in synthesis.resources:
        if resource.type in AWS_NAME_LIMITS:
            given = resource.inputs.get(AWS_NAME_INPUT.get(resource.type, "name"))
            derived = given if isinstance(given, str) else f"{resource.name}-1234567"
            assert len(derived) <= AWS_NAME_LIMITS[resource.type], (resource.type, derived)
            checked += 1
    assert checked >= 8


def test_every_name_derived_from_the_longest_gke_cluster_name_fits_google_cloud():
    name = "a" * GKE_NAME_MAX
    cluster = {"cloud": "gcp", "name": name, "project": "my-project-x", "region": "us-central1",
               "zones": ["us-central1-a"]}
    synthesis = synthesize("test", config=cli_config(cluster=cluster))
    (account,) = synthesis.of_type("gcp:serviceaccount/account:Account")
    # IAM API, serviceAccounts.create: accountId is 6-30 characters, [a-z]([-a-z0-9]*[a-z0-9]).
    assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account.inputs["accountId"])
    assert account.inputs["accountId"] == f"{name}-nodes"
    (cluster_resource,) = synthesis.of_type("gcp:container/cluster:Cluster")
    assert len(cluster_resource.inputs["name"]) <= 40
    for resource in synthesis.resources:
        if resource.type.startswith("gcp:compute/") and isinstance(resource.inputs.get("name"), str):
            assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", resource.inputs["name"]), resource.inputs["name"]


# ---- 6. messages that point at the right place ----------------------------------------------------------

def test_a_yaml_float_kubernetes_version_says_to_quote_it(run_synth):
    refused(run_synth, GCP % ("ml", "dev", "[]") + "    kubernetesVersion: 1.34\n",
            "mlplatform:cluster.kubernetesVersion: expected text, got the number 1.34",
            'quote the value as you mean it, such as kubernetesVersion: "1.34"')


def test_a_key_from_pulumi_config_says_so(run_synth, monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"mlplatform:teams": json.dumps([{"name": "Bad"}])}))
    stderr = refused(run_synth, KIND, "PULUMI_CONFIG (environment variable, not Pulumi.zz-bad-")
    assert "mlplatform:teams[0].name: 'Bad' is not a valid" in stderr


def test_under_the_pulumi_cli_every_key_comes_in_pulumi_config(monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"mlplatform:cluster": '{"cloud": "kind"}',
                                                     "mlplatfrom:teams": "[]"}))
    with pytest.raises(ConfigError, match=r"^Pulumi\.test\.yaml \(as passed in PULUMI_CONFIG\): mlplatfrom:teams: "):
        run_program(program, project="mlplatform", stack="test", config={})


# ---- exit codes and valid unusual YAML ------------------------------------------------------------------

def test_an_internal_error_exits_3_and_says_it_is_a_bug(run_synth, monkeypatch):
    def broken(stack: str, **options: object) -> None:
        raise KeyError("oops")

    monkeypatch.setattr(entry.pipeline, "run", broken)
    code, stderr = run_synth(KIND)
    assert code == 3
    assert "Traceback" in stderr and "KeyError: 'oops'" in stderr
    assert stderr.rstrip().endswith("this is a bug in mlplatform, not a mistake in the stack file; please report it "
                                    "with the traceback above.")


UNUSUAL = """\
# Anchors, merge keys, quoted numbers, 0.5 CPU, dates quoted as label values, a UTF-8 byte order mark.
config:
  mlplatform:cluster:
    cloud: existing
    name: lab
    kubeconfig: %s
    systemNodeLabels: {since: "2024-01-01", "mlplatform.io/role": system}
    gpuPools:
      - &pool {name: l4, accelerator: nvidia-l4, gpusPerNode: "1", minNodes: 0, maxNodes: 2}
      - <<: *pool
        name: l4-spot
        spot: true
  mlplatform:teams:
    - &team
      name: research
      quota: {requests: {cpu: 2, memory: "8Gi"}, gpus: "1"}
      containerDefaults: {requests: {cpu: 0.25, memory: 256Mi}, limits: {cpu: 0.5, memory: 1e9}}
    - <<: *team
      name: inference
  aws:region: us-east-1
"""


def test_valid_unusual_yaml_works_and_exits_cleanly(tmp_path):
    """As a user runs it, in a fresh interpreter with development-mode warnings: exit 0 and no noise at exit."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    stack = f"zz-unusual-{uuid.uuid4().hex[:8]}"
    project = project_copy(tmp_path / "project")
    (project / f"Pulumi.{stack}.yaml").write_bytes(b"\xef\xbb\xbf" + (UNUSUAL % kubeconfig).encode())
    result = subprocess.run([sys.executable, "-X", "dev", "-W", "ignore::DeprecationWarning", "-m", "synth",
                             stack, "--out", str(tmp_path / "out")], cwd=project, capture_output=True,
                            text=True, check=False, env={**inputs_environment(), "PYTHONASYNCIODEBUG": "0"})
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr
    assert "unclosed event loop" not in result.stderr
    assert "research" in result.stdout and "inference" in result.stdout


def test_bad_input_from_the_command_line_exits_2_with_one_message(tmp_path):
    stack = f"zz-bad-{uuid.uuid4().hex[:8]}"
    project = project_copy(tmp_path / "project")
    (project / f"Pulumi.{stack}.yaml").write_text(KIND + TEAM % ", gpus: true")
    result = subprocess.run([sys.executable, "-m", "synth", stack], cwd=project, capture_output=True,
                            text=True, check=False, env=inputs_environment())
    assert result.returncode == 2
    assert result.stderr == (f"error: Pulumi.{stack}.yaml: mlplatform:teams[0].quota.gpus: expected a number, got the "
                             "boolean true; write a number such as 1.\n")
    assert not (project / "out" / stack).exists()


@pytest.mark.parametrize("stack", ["../etc/passwd", "a b", ""])
def test_a_stack_name_that_is_not_one(capsys, stack):
    assert entry.main([stack]) == 2
    assert "is not a stack name" in capsys.readouterr().err


def test_stack_file_reader_keeps_keys_and_secrets(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: mlplatform\nruntime: python\n")
    (tmp_path / "Pulumi.s.yaml").write_text("encryptionsalt: v1:abc\nconfig:\n  teams: []\n  aws:region: x\n"
                                            "  mlplatform:token:\n    secure: AAA=\n")
    values, secret_keys = read_stack_config(tmp_path, "s")
    assert values == {"mlplatform:teams": "[]", "aws:region": "x", "mlplatform:token": "[secret]"}
    assert secret_keys == ["mlplatform:token"]


def test_nothing_is_declared_for_bad_input():
    monitor = RecordingMonitor()
    with pytest.raises(ConfigError):
        run_program(program, project="mlplatform", stack="test", monitor=monitor,
                    config=cli_config(cluster={"cloud": "kind"}, teams=[team("a", gpus=True)]))  # type: ignore[arg-type]
    assert monitor.recorded == []

