"""Delivery: each stack's deployer can reach its Kubernetes API, placeholders never deploy, secrets survive CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.output import UNKNOWN

from clouds.eks.cluster import api_access_rules
from clouds.gke.cluster import GkeCluster, _dns_endpoint as gke_dns_endpoint, kubeconfig
from core.deployer import Deployer
from clouds.eks.config import EksClusterConfig
from config.errors import ConfigError
from config.models import PlatformConfig
from clouds.gke.config import GkeClusterConfig
from synth import PROJECT_DIR, delivery
from synth.stackfile import available_stacks
from tests.conftest import run_component

HOSTED = Deployer()
STATIC_EGRESS = Deployer.model_validate({"runner": "static-egress", "sourceCidrs": ["100.64.1.0/28"]})
IN_VPC = Deployer.model_validate({"runner": ["self-hosted", "ml"], "securityGroupIds": ["sg-00000000000000aa1"],
                                  "sourceCidrs": ["10.30.64.0/24"]})

IN_GKE_NETWORK = Deployer.model_validate({"runner": ["self-hosted", "ml"], "sourceCidrs": ["10.10.3.0/24"]})


def eks(**endpoint: Any) -> EksClusterConfig:
    return EksClusterConfig.model_validate({
        "cloud": "aws", "name": "ml", "region": "eu-west-1", "availabilityZones": ["eu-west-1a", "eu-west-1b"],
        "adminRoleArns": ["arn:aws:iam::210987654321:role/deployer"], "endpoint": endpoint})


def gke(**overrides: Any) -> GkeClusterConfig:
    return GkeClusterConfig.model_validate({
        "cloud": "gcp", "name": "ml", "project": "acme-ml-1", "region": "europe-west4", "zones": ["europe-west4-a"],
        **overrides})


@pytest.mark.parametrize("cluster, deployer, reachable", [
    # EKS, public endpoint restricted to CIDRs: only a deployer whose egress is inside them.
    (eks(publicAccessCidrs=["100.64.1.0/24"]), HOSTED, False),
    (eks(publicAccessCidrs=["100.64.1.0/24"]), STATIC_EGRESS, True),
    (eks(publicAccessCidrs=["100.64.9.0/24"]), STATIC_EGRESS, False),
    (eks(publicAccessCidrs=["0.0.0.0/0"]), HOSTED, True),
    # EKS, private endpoint: a runner inside the network, admitted by security group or CIDR.
    (eks(), HOSTED, False),
    (eks(), IN_VPC, False),
    (eks(privateAccessSecurityGroupIds=["sg-00000000000000aa1"]), IN_VPC, True),
    (eks(privateAccessSecurityGroupIds=["sg-00000000000000bb2"]), IN_VPC, False),
    (eks(privateAccessCidrs=["10.30.0.0/16"]), IN_VPC, True),
    (eks(privateAccessCidrs=["10.30.0.0/16"]), STATIC_EGRESS, False),  # hosted: not inside the VPC
    # GKE: authorized networks admit named sources; the DNS endpoint admits any IAM-authorized caller.
    (gke(masterAuthorizedNetworks=[{"cidr": "100.64.1.0/24", "name": "ci"}]), HOSTED, False),
    (gke(masterAuthorizedNetworks=[{"cidr": "100.64.1.0/24", "name": "ci"}]), STATIC_EGRESS, True),
    (gke(masterAuthorizedNetworks=[{"cidr": "100.64.1.0/24", "name": "ci"}], dnsEndpoint=True), HOSTED, True),
    # GKE, a self-hosted runner inside the cluster's own network (its nodes' subnet, 10.10.0.0/20): its requests
    # to the public address leave through Cloud NAT's allocated addresses, which no authorized network lists,
    # even one that names the runner's private range (issue 23). The DNS endpoint admits it by IAM.
    (gke(masterAuthorizedNetworks=[{"cidr": "10.10.0.0/20", "name": "runners"}]), IN_GKE_NETWORK, False),
    (gke(), IN_GKE_NETWORK, True),  # no authorized networks: the public endpoint admits NAT's addresses too
    (gke(dnsEndpoint=True), IN_GKE_NETWORK, True),
])
def test_reachability_of_the_kubernetes_api_per_cloud(cluster, deployer, reachable):
    reason = cluster.unreachable_by(deployer)
    assert (reason is None) is reachable, reason
    if reason:
        assert "cannot reach the Kubernetes API of ml" in reason and "deployer." in reason
    if deployer is IN_GKE_NETWORK and reason:
        assert "inside the cluster's own network (10.10.3.0/24)" in reason and "through Cloud NAT" in reason


def project(tmp_path: Path, stacks: dict[str, dict[str, Any]]) -> Path:
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    for name, document in stacks.items():
        (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


def repo_stack(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_DIR / f"Pulumi.{name}.yaml").read_text())


def test_the_synth_refuses_the_stacks_the_old_workflow_could_not_deploy(tmp_path):
    """As first written: dev's API open to a documentation CIDR, prod's private, both for a hosted runner."""
    dev, prod = repo_stack("dev"), repo_stack("prod")
    for document in (dev, prod):
        del document["config"]["mlplatform:deployer"]
    dev["config"]["mlplatform:cluster"]["endpoint"] = {"publicAccessCidrs": ["203.0.113.0/24"]}
    prod["config"]["mlplatform:cluster"]["endpoint"] = {"publicAccessCidrs": []}
    root = project(tmp_path, {"dev": dev, "prod": prod})
    for stack in ("dev", "prod"):
        with pytest.raises(ConfigError, match=rf"^Pulumi\.{stack}\.yaml: mlplatform:deployer: the deployer "
                                              r"\(runner ubuntu-24\.04, from addresses that change run to run\) "
                                              "cannot reach"):
            delivery.check(stack, root)


def test_make_synth_exits_2_naming_the_deployer_that_cannot_reach_the_api(tmp_path, monkeypatch, capsys):
    from synth import __main__ as cli

    dev = repo_stack("dev")
    del dev["config"]["mlplatform:deployer"]
    root = project(tmp_path, {"dev": dev})
    real_check = delivery.check
    monkeypatch.setattr(delivery, "check", lambda stack, project_dir: real_check(stack, root))
    assert cli.main(["dev", "--out", str(tmp_path / "out")]) == 2
    assert "error: Pulumi.dev.yaml: mlplatform:deployer: the deployer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_team_stacks_deployer_must_reach_its_platforms_api(tmp_path):
    team = repo_stack("team-vision")
    del team["config"]["mlplatform:deployer"]
    root = project(tmp_path, {"dev": repo_stack("dev"), "team-vision": team})
    with pytest.raises(ConfigError, match="cannot reach the Kubernetes API of ml-dev"):
        delivery.check("team-vision", root)


def test_every_stack_in_the_repo_is_reachable_by_its_deployer():
    for stack in available_stacks(PROJECT_DIR):
        delivery.check(stack)


def test_the_synth_warns_about_each_placeholder_and_the_deploy_refuses_naming_each(capsys):
    warnings = delivery.check("prod")
    assert warnings[0] == "5 documentation placeholder(s) to replace before a deploy:"
    assert warnings[1:] == [
        "Pulumi.prod.yaml: mlplatform:cluster.endpoint.privateAccessSecurityGroupIds[0]: sg-0123456789abcdef0 is "
        "an example AWS resource ID",
        "Pulumi.prod.yaml: mlplatform:cluster.adminRoleArns[0]: 111122223333 is an example AWS account ID from "
        "AWS's documentation",
        "Pulumi.prod.yaml: mlplatform:cluster.adminRoleArns[1]: 111122223333 is an example AWS account ID from "
        "AWS's documentation",
        "Pulumi.prod.yaml: mlplatform:cluster.readRoleArns[0]: 111122223333 is an example AWS account ID from "
        "AWS's documentation",
        "Pulumi.prod.yaml: mlplatform:deployer.securityGroupIds[0]: sg-0123456789abcdef0 is an example AWS "
        "resource ID"]
    assert delivery.main(["deployable", "prod"]) == 1
    refusal = capsys.readouterr().err
    assert refusal.startswith("Pulumi.prod.yaml is not ready to deploy")
    assert all(warning in refusal for warning in warnings[1:])
    assert "no encryptedkey" in refusal


def test_placeholders_cover_documentation_networks_projects_and_domains():
    found = delivery.placeholders(delivery.read("gcp-dev"))
    assert any("secretsprovider: my-ml-platform-dev is an example Google Cloud project ID" in f for f in found)
    assert any("cluster.project: my-ml-platform-dev" in f for f in found)
    assert any("masterAuthorizedNetworks[0].cidr: 203.0.113.0/24 is a documentation address" in f for f in found)
    assert any("groups.edit[0]: example.com is an example domain" in f for f in found)
    assert any("198.51.100.16/28" in f for f in delivery.placeholders(delivery.read("dev")))


def test_a_stack_file_with_real_values_and_a_bootstrapped_key_deploys(tmp_path, capsys):
    text = yaml.safe_dump(repo_stack("dev")).replace("111122223333", "210987654322") \
        .replace("203.0.113.0/24", "100.64.0.0/24").replace("198.51.100.16/28", "100.64.1.0/28")
    root = project(tmp_path, {"dev": yaml.safe_load(text) | {"encryptedkey": "AQICAHh...ciphertext"}})
    assert delivery.main(["deployable", "dev"], root) == 0, capsys.readouterr().err
    assert delivery.main(["deployable", "dev"]) == 1  # the repo's own dev, with its placeholders


@pytest.mark.parametrize("document, problem", [
    ({"secretsprovider": "awskms://alias/x?region=eu-west-1"}, "has no encryptedkey"),
    ({}, "gets a new salt on every CI run"),
    ({"secretsprovider": "hashivault://x"}, "is not one CI can use"),
])
def test_secrets_that_ci_could_not_decrypt_the_same_way_each_run_are_refused(document, problem):
    (message,) = delivery.secrets_problems(delivery.StackFile("x", document))
    assert problem in message


def ready(name: str, operate: bool = True) -> dict[str, Any]:
    """A repo stack file with its placeholders replaced and its data key committed, opting in (or not) to CI."""
    text = yaml.safe_dump(repo_stack(name))
    for placeholder, real in (("111122223333", "210987654322"), ("203.0.113.0/24", "100.64.0.0/24"),
                              ("198.51.100.16/28", "100.64.1.0/28"), ("sg-0123456789abcdef0", "sg-0a1b2c3d4e5f60718"),
                              ("my-ml-platform-dev", "acme-ml-platform-dev"), ("123456789012", "210987654322"),
                              ("example.com", "acme.io")):
        text = text.replace(placeholder, real)
    document = yaml.safe_load(text) | {"encryptedkey": "AQICAHh...ciphertext"}
    document["config"].setdefault("mlplatform:deployer", {})["operate"] = operate
    return document


def test_ci_operates_only_the_stacks_whose_file_opts_in():
    """The example stacks opt in to nothing: CI previews and deploys no stack nobody set up."""
    stacks = delivery.ci_stacks()
    assert all(delivery.validated(delivery.read(s.stack)).deployer.operate for s in stacks)
    assert {"prod", "gcp-dev"}.isdisjoint(s.stack for s in stacks)


def test_the_stacks_that_opt_in_are_previewed_and_deployed_in_order_prod_last(tmp_path):
    root = project(tmp_path, {"dev": ready("dev"), "prod": ready("prod"), "gcp-dev": ready("gcp-dev", operate=False),
                              "team-vision": ready("team-vision"), "local": repo_stack("local")})
    stacks = delivery.ci_stacks(root)
    assert [(s.stack, s.cloud, s.platform, s.prod) for s in stacks] == [
        ("dev", "aws", "", False), ("prod", "aws", "", True), ("team-vision", "aws", "dev", False)]
    jobs = delivery.workflow_outputs(stacks)
    # Pull requests preview (and main deploys first) what is outside prod; prod comes after, previewed on main.
    assert jobs["platforms"] == [{"stack": "dev", "runner": ["mlplatform-static-egress"], "cloud": "aws"}]
    assert jobs["teams"] == [{"stack": "team-vision", "runner": ["mlplatform-static-egress"], "cloud": "aws",
                              "platform": "dev"}]
    assert [j["stack"] for j in jobs["prod-platforms"]] == ["prod"] and jobs["prod-teams"] == []
    assert jobs["prod-platforms"][0]["runner"] == ["self-hosted", "linux", "x64", "ml-prod"]
    assert [j["stack"] for j in jobs["all"]] == ["dev", "prod", "team-vision"]


@pytest.mark.parametrize("stacks, problem", [
    # The repository's own dev, placeholders and all.
    ({"dev": "repo"}, "Pulumi.dev.yaml sets mlplatform:deployer.operate, but:\n    Pulumi.dev.yaml: "
                      "mlplatform:cluster.adminRoleArns[0]: 111122223333 is an example AWS account ID"),
    ({"dev": "no key"}, "secretsprovider awskms://alias/mlplatform-dev-pulumi?region=us-east-1 has no encryptedkey"),
    ({"dev": "off", "team-vision": "ready"}, "its platform stack dev is not operated by CI"),
    ({"local": "ready"}, "CI does not deploy a kind cluster"),
])
def test_a_stack_that_opts_in_before_it_is_ready_stops_ci_naming_what_to_fix(tmp_path, stacks, problem):
    documents = {}
    for name, state in stacks.items():
        document = ready(name, operate=state != "off") if name != "local" else repo_stack("local")
        if state == "repo":
            document = repo_stack(name)
            document["config"]["mlplatform:deployer"]["operate"] = True
        if state == "no key":
            del document["encryptedkey"]
        if name == "local":
            document["config"]["mlplatform:deployer"] = {"operate": True}
            document["encryptionsalt"] = "v1:salt"
        documents[name] = document
    root = project(tmp_path, documents)
    with pytest.raises(ConfigError, match="stacks that ask CI to operate them are not ready") as refusal:
        delivery.ci_stacks(root)
    assert problem in str(refusal.value)
    assert delivery.main(["stacks"], root) == 2


def test_every_stack_file_names_a_secrets_provider_ci_can_use():
    ci = {s.stack for s in delivery.ci_stacks()}
    for stack in available_stacks(PROJECT_DIR):
        file = delivery.read(stack)
        assert "secretsprovider" in file.document, stack
        config = delivery.validated(file)
        cluster = config.cluster if isinstance(config, PlatformConfig) else delivery._platform_of(config, PROJECT_DIR).cluster
        if cluster.ci_secrets_providers:
            assert file.secrets_provider.startswith(cluster.ci_secrets_providers), (stack, file.secrets_provider)
        else:
            assert stack not in ci and file.secrets_provider == "passphrase"  # a laptop stack, never in CI


# ---- before a preview: is the cluster there, and does it answer? ------------------------------------------

def test_a_team_stacks_preview_before_its_platform_is_deployed_says_so(tmp_path):
    root = project(tmp_path, {"dev": ready("dev"), "team-vision": ready("team-vision")})
    asked = []

    def outputs(stack: str) -> dict[str, Any]:
        asked.append(stack)
        return {}  # what `pulumi stack output --json` prints for a stack created but never deployed

    assert delivery.reachable("team-vision", root, outputs) == (
        False, "dev is not deployed yet: team-vision is previewed once dev is deployed (a push to main deploys it "
               "first)")
    assert asked == ["organization/mlplatform/dev"]
    assert delivery.reachable("dev", root, outputs)[0] is False


def test_the_preview_of_a_deployed_stack_fails_when_its_cluster_does_not_answer(tmp_path):
    import socket

    with socket.socket() as closed:  # a port nothing listens on: the cluster is deployed, its API unreachable
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ml-dev",
        "clusters": [{"name": "ml-dev", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "contexts": [{"name": "ml-dev", "context": {"cluster": "ml-dev", "user": "ml-dev"}}],
        "users": [{"name": "ml-dev", "user": {"token": "t"}}]})
    root = project(tmp_path, {"dev": ready("dev"), "team-vision": ready("team-vision")})
    for stack in ("dev", "team-vision"):
        with pytest.raises(ConfigError, match=rf"^{stack}: the Kubernetes API of the deployed organization/mlplatform/"
                                              r"dev did not answer .* Give the preview role view access"):
            delivery.reachable(stack, root, lambda _: {"kubeconfig": kubeconfig})


# ---- the deploy job's guards ------------------------------------------------------------------------------

def test_a_deploy_runs_only_for_the_head_of_main(monkeypatch):
    head = "a" * 40
    assert delivery.stale_deploy("refs/heads/main", head, head) is None
    assert "no longer the head of main" in delivery.stale_deploy("refs/heads/main", "b" * 40, head)
    assert "only from main, not from refs/heads/topic" in delivery.stale_deploy("refs/heads/topic", head, head)
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    monkeypatch.setenv("GITHUB_SHA", "b" * 40)  # a re-run of an old run
    assert delivery.main(["head-of-main", head]) == 1


def test_the_last_deploy_is_the_newest_successful_update_and_says_whether_it_changed_anything(tmp_path, capsys):
    history = [
        {"kind": "refresh", "result": "succeeded", "environment": {"git.head": "r" * 40}},
        {"kind": "update", "result": "failed", "environment": {"git.head": "f" * 40}},
        {"kind": "update", "result": "succeeded", "resourceChanges": {"same": 41, "update": 1},
         "environment": {"git.head": "d" * 40}},
    ]
    assert delivery.last_deploy(history) == ("d" * 40, True)
    assert delivery.last_deploy([history[2] | {"resourceChanges": {"same": 42}}]) == ("d" * 40, False)
    assert delivery.last_deploy([]) == ("", False)
    (tmp_path / "history.json").write_text(json.dumps(history))
    assert delivery.main(["last-deploy", str(tmp_path / "history.json")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"commit={'d' * 40}", "changed=true"]


# ---- what the clusters declare for it -------------------------------------------------------------------

def test_a_private_eks_endpoint_admits_https_from_the_named_groups_and_cidrs():
    spec = eks(privateAccessSecurityGroupIds=["sg-00000000000000aa1"], privateAccessCidrs=["10.99.0.0/24"])

    def build() -> None:
        api_access_rules("ml", spec, "sg-cluster", pulumi.ResourceOptions())

    synthesis = run_component(build)
    rules = synthesis.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    # Named by source: reordering the lists replaces nothing.
    assert {r.name for r in rules} == {"ml-api-from-sg-00000000000000aa1", "ml-api-from-10.99.0.0-24"}
    for rule in rules:
        assert rule.inputs["securityGroupId"] == "sg-cluster"
        assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", 443, 443)
    sources = {r.inputs.get("referencedSecurityGroupId") or r.inputs.get("cidrIpv4") for r in rules}
    assert sources == {"sg-00000000000000aa1", "10.99.0.0/24"}


def test_gke_dns_endpoint_is_on_and_the_ip_endpoint_stays_behind_authorized_networks():
    spec = gke(dnsEndpoint=True)

    def build() -> None:
        GkeCluster("ml", spec)

    (cluster,) = run_component(build).of_type("gcp:container/cluster:Cluster")
    assert cluster.inputs["controlPlaneEndpointsConfig"] == {"dnsEndpointConfig": {"allowExternalTraffic": True}}
    # No authorized network given: the IP endpoint admits none from the internet rather than all.
    assert cluster.inputs["masterAuthorizedNetworksConfig"] == {"cidrBlocks": []}


def test_a_dns_endpoint_kubeconfig_goes_through_it_and_trusts_the_public_ca():
    config = yaml.safe_load(kubeconfig("ml", "gke-0123abcd.europe-west4.gke.goog", None))
    assert config["clusters"][0]["cluster"] == {"server": "https://gke-0123abcd.europe-west4.gke.goog"}
    assert gke_dns_endpoint({"dns_endpoint_config": {"allow_external_traffic": True}}) is UNKNOWN  # a preview


# ---- the pull-request comment -----------------------------------------------------------------------------

def plan(pools: dict[str, int], teams: dict[str, int], resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resources": resources, "outputs": {
        "gpuCapacity": sum(pools.values()), "gpuPools": [{"name": n, "schedulableGpus": g} for n, g in pools.items()],
        "teams": {name: {"gpus": gpus} for name, gpus in teams.items()}}}


def resource(resource_name: str, type_: str = "aws:eks/cluster:Cluster", **inputs: Any) -> dict[str, Any]:
    return {"urn": f"urn:{type_}::{resource_name}", "type": type_, "name": resource_name, "parent": "p",
            "inputs": inputs}


def test_the_pull_request_comment_leads_with_replacements_deletions_capacity_quotas_charts_and_policies(
        monkeypatch):
    from synth import review

    helm = "kubernetes:helm.sh/v3:Release"
    before = plan({"l4": 8, "a10g": 4}, {"research": 6}, [
        resource("ml-cluster", name="ml"), resource("old-queue", type_="kueue:Queue"),
        resource("karpenter", type_=helm, chart="oci://x/karpenter", version="1.14.1")])
    after = plan({"l4": 8, "a10g": 8}, {"research": 8}, [
        resource("ml-cluster-2", name="ml"),
        resource("karpenter", type_=helm, chart="oci://x/karpenter", version="1.15.0")])
    deployment = {"kind": "Deployment", "metadata": {"namespace": "kube-system", "name": "karpenter"},
                  "spec": {"replicas": 2}}
    rendered = ({"karpenter/deployment": deployment},
                {"karpenter/deployment": deployment | {"spec": {"replicas": 3}}})
    checks = {"violations": ["[mandatory] rule: urn: broken"], "mandatory": 1, "advisory": 0, "broken": False}
    lines = review.stack_section("dev", before, after, rendered, checks)
    lead = lines[:lines.index(next(line for line in lines if line.startswith("<details>")))]
    # The chart bump's effect on what the release applies, folded below the lead.
    assert "<details><summary>Rendered by its Helm releases: 1 objects change</summary>" in lines
    assert any("update   karpenter: Deployment kube-system/karpenter" in line for line in lines)
    assert lead[:5] == ["### dev", "", "```diff", "- REPLACE aws:eks/cluster:Cluster ml-cluster -> ml-cluster-2",
                        "- DELETE  kueue:Queue old-queue"]
    assert "- GPU capacity: 12 -> 16 schedulable GPUs" in lead
    assert "- GPU pool a10g: 4 -> 8 GPUs" in lead
    assert "- team quota research: 6 -> 8 GPUs" in lead
    assert any(line.startswith("- chart of karpenter: oci://x/karpenter 1.14.1 -> oci://x/karpenter 1.15.0")
               for line in lead)
    assert "- policies: 1 mandatory and 0 advisory violations" in lead


def test_the_comment_reports_the_policy_results_of_the_new_code(tmp_path):
    from synth import pipeline, review
    from synth.diff import checks_in

    pipeline.run("local", out_dir=tmp_path / "local")
    assert review.policy_lines(checks_in(tmp_path / "local")) == ["policies: 0 mandatory and 0 advisory violations"]
    assert review.policy_lines({}) == ["policies: not checked (the synth wrote no results)"]


def test_a_team_stacks_section_says_when_the_pull_request_also_changes_its_platform(monkeypatch, tmp_path):
    from synth import review
    from synth.diff import Revisions

    def revisions(base: str, stacks: list[str], head: Path) -> Revisions:
        before, after = ({"dev": plan({"l4": capacity}, {}, []), "team-vision": plan({}, {}, [])}
                         for capacity in (12, 16))
        return Revisions(before, after, {}, {})

    monkeypatch.setattr(review, "synthesize_revisions", revisions)
    text = review.review("origin/main", [])
    team = text[text.index("### team-vision"):]
    assert team.splitlines()[2] == ("> Previewed against `dev` as deployed: this pull request also changes `dev`, "
                                    "which the team stack sees only once it is deployed.")
    assert "Previewed against" not in text[:text.index("### team-vision")]
    # Outputs alone changed (what team stacks read): the workflow's team previews learn it from the marker.
    assert delivery.changed_stacks(text) == ["dev"]
    assert delivery.changed_stacks("no marker") == []


def test_our_comment_starts_with_its_marker_and_fits_github_with_the_changed_stacks_kept():
    from synth import review

    lead = [review.COMMENT_MARKER, "## Offline preview", "", "### dev", "", "```diff", "- DELETE  x y", "```", ""]
    fold = ["<details><summary>big</summary>", "", "```", *[f"+ create resource-{i:06d}" for i in range(20000)]]
    text = "\n".join([*lead, *fold, "```", "</details>", f'{review.CHANGED_MARKER}["dev"] -->'])
    body = review.comment(text)
    assert len(text) > 65_536 >= len(body)
    assert body.startswith(review.COMMENT_MARKER + "\n")
    assert body.count("```") % 2 == 0 and body.count("<details>") == body.count("</details>")
    assert "cut here to fit a comment" in body and "- DELETE  x y" in body
    assert delivery.changed_stacks(body) == ["dev"]
    assert review.comment("short") == "short"


def test_the_aws_provider_refuses_credentials_of_any_account_but_the_stacks():
    from tests.conftest import aws_cluster, synth_with

    def allowed(**overrides: Any) -> list[str]:
        [provider] = synth_with(cluster=aws_cluster(**overrides)).of_type("pulumi:providers:aws")
        return json.loads(provider.inputs["allowedAccountIds"])  # a provider's config travels as strings

    # The account the role ARNs all name, or the one accountId gives when a role of another account is listed.
    assert allowed() == ["111122223333"]
    cross_account = ["arn:aws:iam::111122223333:role/deployer", "arn:aws:iam::210987654321:role/sso-admins"]
    assert allowed(adminRoleArns=cross_account, accountId="210987654321") == ["210987654321"]
    with pytest.raises(ConfigError, match=r"mlplatform:cluster.*accountId: .*111122223333, 210987654321; give "
                                          r"accountId, the 12-digit account"):
        synth_with(cluster=aws_cluster(adminRoleArns=cross_account))
    with pytest.raises(ConfigError, match="accountId.*12-digit AWS account ID"):
        synth_with(cluster=aws_cluster(accountId="1111-2222-3333"))
    # The example stacks name one account each, and are deployable as they are.
    for stack in ("dev", "prod"):
        spec = EksClusterConfig.model_validate(yaml.safe_load(
            (PROJECT_DIR / f"Pulumi.{stack}.yaml").read_text())["config"]["mlplatform:cluster"])
        assert spec.account == "111122223333"


def test_preview_and_read_roles_look_at_eks_and_change_nothing():
    from tests.conftest import aws_cluster, synth_with

    viewer, reader = "arn:aws:iam::111122223333:role/mlplatform-preview", "arn:aws:iam::111122223333:role/mlplatform-read"
    synthesis = synth_with(cluster=aws_cluster(viewRoleArns=[viewer], readRoleArns=[reader]))
    policies = {a.inputs["principalArn"]: a.inputs["policyArn"].rsplit("/", 1)[1]
                for a in synthesis.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    # Pull-request code sees no Secrets; the drift refresh on main reads Helm's release Secrets and custom resources.
    assert (policies[viewer], policies[reader]) == ("AmazonEKSViewPolicy", "AmazonEKSAdminViewPolicy")
    entries = {e.inputs["principalArn"] for e in synthesis.of_type("aws:eks/accessEntry:AccessEntry")}
    assert {viewer, reader} <= entries
    for twice in ({"viewRoleArns": ["arn:aws:iam::111122223333:role/deployer"]},
                  {"viewRoleArns": [viewer], "readRoleArns": [viewer]}):
        with pytest.raises(ConfigError, match="is in (adminRoleArns|viewRoleArns) already"):
            synth_with(cluster=aws_cluster(**twice))
