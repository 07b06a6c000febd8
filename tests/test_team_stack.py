"""Team stacks: a team's namespaces on a platform stack's cluster, within the budget the platform grants."""

from __future__ import annotations

import copy

import pytest

from config.errors import ConfigError
from stacks import main
from synth.engine import NOT_PLAIN, RecordingMonitor, Synthesis, run_program
from tests.conftest import KIND, cli_config, synth_with, team
from synth import PROJECT_DIR
from synth.render import stack_synthesis

PLATFORM = "organization/mlplatform/local"


@pytest.fixture(scope="module")
def vision() -> Synthesis:
    return stack_synthesis("team-vision")


def team_stack(namespaces: list[dict], team_name: str = "vision", monitor: RecordingMonitor | None = None,
               platform_outputs: dict | None = None) -> Synthesis:
    platform = platform_outputs or stack_synthesis("local").outputs
    return run_program(main, project="mlplatform", stack="team-test",
                       config=cli_config(platformStack=PLATFORM, team=team_name, namespaces=namespaces),
                       stack_references={PLATFORM: platform}, monitor=monitor)


def namespace(name: str, gpus: int = 0, cpu: str = "1", memory: str = "4Gi") -> dict:
    return {"name": name, "quota": {"requests": {"cpu": cpu, "memory": memory}, "gpus": gpus}}


def test_platform_exports_what_teams_need(vision):
    platform = stack_synthesis("local").outputs
    assert platform["kubeconfig"] in NOT_PLAIN
    assert platform["teams"]["vision"] == {"namespace": "vision", "gpus": 2, "guaranteedGpus": 2,
                                           "guarantee": {"t4": 2}, "cpu": "8", "memory": "32Gi", "ownStack": True,
                                           "gpuDirectPools": []}
    assert platform["gpuPools"][0]["taints"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert platform["monitoringNamespace"] == "monitoring"


def test_the_platform_leaves_a_team_with_its_own_stack_to_that_stack():
    names = {r.inputs["metadata"]["name"] for r in stack_synthesis("local").of_type("kubernetes:core/v1:Namespace")}
    assert "vision" not in names and {"research", "inference"} <= names


def test_team_stack_reads_the_platform_stack_and_creates_its_namespaces_through_its_cluster(vision):
    (reference,) = vision.of_type("pulumi:pulumi:StackReference")
    # The stack file's platform is dev, which CI deploys to the same backend before it (never `local`).
    assert reference.inputs["name"] == "organization/mlplatform/dev"
    (provider,) = vision.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] in NOT_PLAIN
    namespaces = {r.inputs["metadata"]["name"] for r in vision.of_type("kubernetes:core/v1:Namespace")}
    assert namespaces == {"vision-dev", "vision-serving"}
    assert all(r.provider == provider.urn for r in vision.resources if r.type.startswith("kubernetes:"))
    quotas = {r.inputs["metadata"]["namespace"]: r.inputs["spec"]["hard"]["requests.nvidia.com/gpu"]
              for r in vision.of_type("kubernetes:core/v1:ResourceQuota")}
    assert quotas == {"vision-dev": "1", "vision-serving": "1"}
    assert vision.outputs["budget"]["gpus"] == 2


@pytest.mark.parametrize("namespaces, message", [
    ([namespace("vision-a", gpus=2), namespace("vision-b", gpus=1)],
     "the namespaces ask for 3 gpus in all, but team vision's budget on organization/mlplatform/local is 2"),
    ([namespace("vision-a", cpu="6"), namespace("vision-b", cpu="2500m")],
     "the namespaces ask for 8.5 cpu in all, but team vision's budget on organization/mlplatform/local is 8"),
    ([namespace("vision-a", memory="40Gi")],
     "the namespaces ask for 40Gi memory in all, but team vision's budget on organization/mlplatform/local is 32Gi"),
])
def test_a_request_over_budget_names_both_numbers_and_creates_nothing(namespaces, message):
    monitor = RecordingMonitor({PLATFORM: stack_synthesis("local").outputs})
    with pytest.raises(ConfigError) as caught:
        team_stack(namespaces, monitor=monitor)
    assert str(caught.value).startswith("Pulumi.team-test.yaml: mlplatform:namespaces: ")
    assert message in str(caught.value)
    assert not [r for r in monitor.recorded if r.type.startswith("kubernetes:") or r.type.startswith("mlplatform:team")]


def test_a_team_stack_before_its_platform_is_deployed_names_the_stack_to_deploy_first():
    """`pulumi preview` of a team stack whose platform stack exists but was never deployed (it has no outputs)
    stopped with a bare KeyError('kubeconfig') and a traceback."""
    monitor = RecordingMonitor({PLATFORM: {}})
    with pytest.raises(ConfigError) as caught:
        team_stack([namespace("vision")], monitor=monitor)
    message = str(caught.value)
    assert message.startswith(f"Pulumi.team-test.yaml: mlplatform:platformStack: {PLATFORM} has no clusterName, "
                              "kubeconfig, teams, monitoringNamespace output: ")
    assert f"it is not deployed yet. Deploy it first (`pulumi up --stack {PLATFORM}`" in message
    assert "\n" not in message
    assert not [r for r in monitor.recorded if r.type.startswith("kubernetes:") or r.type.startswith("mlplatform:team")]


def test_a_team_without_a_budget_on_the_platform():
    with pytest.raises(ConfigError, match="grants no budget to team 'research'; its teams with their own stack are: "
                                          "vision"):
        team_stack([namespace("research-x")], team_name="research")


def test_a_team_cannot_take_another_teams_namespace():
    with pytest.raises(ConfigError, match=r"mlplatform: Value error|namespaces\[0\]\.name 'research' must be "
                                          r"'vision' or start with 'vision-'"):
        synth_with(platformStack=PLATFORM, team="vision", namespaces=[namespace("research")])


def test_own_stack_teams_still_count_against_capacity():
    with pytest.raises(ConfigError, match="add up to 3 GPUs but the GPU pools hold at most 1"):
        synth_with(cluster=KIND, teams=[team("a", gpus=1), team("b", gpus=2, ownStack=True)])


def _documented(marker: str) -> str:
    """The YAML block right after `<!-- snippet: marker -->` in docs/team-stacks.md, as written there."""
    page = (PROJECT_DIR / "docs" / "team-stacks.md").read_text()
    after = page.split(f"<!-- snippet: {marker} -->\n", 1)[1]
    assert after.startswith("```yaml\n"), f"the {marker} snippet is a ```yaml block right after its marker"
    return after.removeprefix("```yaml\n").split("```\n", 1)[0]


def test_adding_a_team_stack_as_documented_synthesizes(tmp_path):
    """A new team as docs/team-stacks.md says: its entry in the platform's teams, and its stack file."""
    import shutil

    from synth import delivery, pipeline

    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    platform = tmp_path / "Pulumi.dev.yaml"
    # The platform's teams are its file's last key: the documented entry goes at the end of that list.
    assert platform.read_text().rstrip().splitlines()[-1].startswith("        ")
    platform.write_text(platform.read_text().rstrip("\n") + "\n" + _documented("platform-team"))
    (tmp_path / "Pulumi.team-nlp.yaml").write_text(_documented("team-stack"))
    result = pipeline.run("team-nlp", project_dir=tmp_path, render=False)
    assert result.synthesis.outputs["namespaces"] == ["nlp-dev"]
    assert not result.mandatory
    # CI can decrypt its secrets once `pulumi stack init` has written the stack's encryptedkey (as the doc says).
    problems = delivery.secrets_problems(delivery.read("team-nlp", tmp_path))
    assert problems and all("has no encryptedkey: create the stack once" in problem for problem in problems)


def test_a_team_stack_s_namespaces_get_the_nccl_settings_of_the_platform_s_efa_pools_and_none_from_older_ones():
    outputs = dict(stack_synthesis("local").outputs)
    efa = {"name": "h100", "ncclEnv": {"FI_PROVIDER": "efa", "NCCL_PROTO": "simple", "FI_EFA_USE_DEVICE_RDMA": "1"}}
    outputs["gpuPools"] = [*outputs["gpuPools"], efa]

    def config_maps(platform_outputs: dict) -> dict[str, dict]:
        synthesis = run_program(main, project="mlplatform", stack="team-test",
                                config=cli_config(platformStack=PLATFORM, team="vision",
                                                  namespaces=[namespace("vision-a")]),
                                stack_references={PLATFORM: platform_outputs})
        return {f"{r.inputs['metadata']['namespace']}/{r.inputs['metadata']['name']}": r.inputs["data"]
                for r in synthesis.of_type("kubernetes:core/v1:ConfigMap")}

    assert config_maps(outputs) == {"vision-a/nccl-h100": efa["ncclEnv"]}
    # A platform deployed before it exported these settings: no ConfigMap, no error.
    older = outputs | {"gpuPools": [{k: v for k, v in p.items() if k != "ncclEnv"} for p in outputs["gpuPools"]]}
    assert config_maps(older) == {}


def _with_gpu_direct(pools: list[str] | None) -> dict:
    """The local platform's outputs, as a platform whose vision team may use these GPUDirect pools exports them
    (None: as a platform from before the pod-security policy, which exports no such key)."""
    outputs = copy.deepcopy(stack_synthesis("local").outputs)
    if pools is None:
        del outputs["teams"]["vision"]["gpuDirectPools"]
    else:
        outputs["teams"]["vision"]["gpuDirectPools"] = pools
    return outputs


def _enforced(synthesis: Synthesis) -> dict[str, str]:
    return {r.inputs["metadata"]["name"]: r.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
            for r in synthesis.of_type("kubernetes:core/v1:Namespace")}


def test_a_team_stack_namespace_admits_the_gpudirect_pods_its_team_may_run():
    # The platform's policy (components/pod_security.py) guards it: baseline namespaces leave Pod Security to it,
    # restricted ones stay restricted and are warned; a platform without the policy leaves them all as they were.
    restricted = {**namespace("vision-secure"), "podSecurity": "restricted"}
    synthesis = team_stack([namespace("vision-dev"), restricted], platform_outputs=_with_gpu_direct(["h100"]))
    assert _enforced(synthesis) == {"vision-dev": "privileged", "vision-secure": "restricted"}
    (warning,) = [w for w in synthesis.warnings if "GPUDirect" in w]
    assert warning.startswith("Pulumi.team-test.yaml: mlplatform:namespaces[1].podSecurity: team vision may use "
                              "GPUDirect pool(s) h100")
    for pools in ([], None):
        older = team_stack([namespace("vision-dev")], platform_outputs=_with_gpu_direct(pools))
        assert _enforced(older) == {"vision-dev": "baseline"} and not older.warnings
