"""What CI needs to preview and deploy each stack, and what would stop a real deploy.

- `python -m synth.delivery stacks`: the stacks CI operates (those whose `deployer.operate` is true), as JSON
  for the workflows' matrices, one line per GitHub Actions output; exit 2, naming each problem, when a stack
  asks to be operated but is not ready (placeholders, secrets, a cloud CI does not deploy, its platform not
  operated).
- `python -m synth.delivery deployable <stack>`: exit 1, naming each, when the stack file still holds
  documentation placeholders or lacks a secrets provider CI can use; the deploy job runs it before `pulumi up`.
- `python -m synth.delivery reachable <stack>`: before a preview, whether the cluster the stack deploys to is
  deployed (`deployed=true|false`, a GitHub Actions output) and, when it is, that its Kubernetes API answers
  the caller; exit 2 when it does not, so that a preview of a deployed stack never passes without its cluster.
- `python -m synth.delivery changed <review>`: the stacks a pull request changes, as `make review` marks them.
- `python -m synth.delivery head-of-main <sha>`: exit 1 unless this run (GITHUB_REF, GITHUB_SHA) is on main
  and its commit is main's head: a re-run of an old run would deploy old code.
- `python -m synth.delivery last-deploy <history.json>`: from `pulumi stack history --json`, the commit of the
  last successful update (`commit=`, what drift compares the cloud with) and whether it changed anything
  (`changed=`, whether `make verify` runs).

The synth calls `check` on every stack: a deployer that cannot reach the stack's Kubernetes API is an error
(a deploy would time out after creating the cluster), placeholders are warnings (example stacks keep them).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import PROJECT, ConfigError, stack_file
from config.loader import validate_stack
from config.models import PlatformConfig, TeamStackConfig
from core.fields import inside
from core.outputs import KUBECONFIG
from synth import PROJECT_DIR
from synth.stackfile import available_stacks, load_yaml_file
from verify.__main__ import stack_outputs
from verify.api import ApiError, HttpApi, Unreachable, load_kubeconfig

# Secrets providers whose key CI reaches with the cloud credentials it already has.
CLOUD_SECRETS_PROVIDERS = ("awskms://", "gcpkms://")

# Documentation values (RFC 5737 and RFC 3849 addresses, AWS's example account and resource IDs, RFC 2606
# domains, example Google Cloud project IDs): fine in an example, never on a real cloud.
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
PLACEHOLDER_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!\d)(123456789012|111122223333|444455556666|777788889999)(?!\d)"),
     "an example AWS account ID from AWS's documentation"),
    (re.compile(r"\b((?:sg|subnet|vpc)-0123456789abcdef0)\b"), "an example AWS resource ID"),
    (re.compile(r"(?<=[@.])(example\.(?:com|org|net))\b"), "an example domain (RFC 2606)"),
    (re.compile(r"projects/((?:my|example)-[a-z0-9-]+)"), "an example Google Cloud project ID"),
)
EXAMPLE_PROJECT = re.compile(r"(?:my|example)-[a-z0-9-]+")
_ADDRESS = re.compile(r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?|[0-9a-fA-F]{1,4}:[0-9a-fA-F:]*(?:/\d{1,3})?)")


@dataclass(frozen=True)
class StackFile:
    name: str
    document: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        """The project's keys without their namespace; secure values and other namespaces' keys (aws:region)
        left out, as the program reads them."""
        config = self.document.get("config") or {}
        return {key.removeprefix(f"{PROJECT}:"): value for key, value in config.items()
                if (key.startswith(f"{PROJECT}:") or ":" not in key)
                and not (isinstance(value, dict) and set(value) == {"secure"})}

    @property
    def secrets_provider(self) -> str:
        return str(self.document.get("secretsprovider", "passphrase"))


@dataclass(frozen=True)
class CiStack:
    stack: str
    runner: list[str]
    cloud: str
    # For a team stack, the platform stack it is deployed after (its short name); empty for a platform.
    platform: str = ""
    # On a prod cluster: never previewed by pull-request code, deployed only after the other platforms.
    prod: bool = False

    def job(self) -> dict[str, Any]:
        """One entry of a workflow matrix."""
        return {"stack": self.stack, "runner": self.runner, "cloud": self.cloud,
                **({"platform": self.platform} if self.platform else {})}


def read(stack: str, project_dir: Path = PROJECT_DIR) -> StackFile:
    # Read as strictly as the synth reads it (duplicate keys, aliases, encodings): one reader for stack files.
    return StackFile(stack, load_yaml_file(project_dir / stack_file(stack)) or {})


def validated(file: StackFile) -> PlatformConfig | TeamStackConfig:
    # The same route as the program's: what `pulumi up` would refuse is refused here too.
    return validate_stack(dict(file.config), file.name)


def _platform_of(config: TeamStackConfig, project_dir: Path) -> PlatformConfig:
    platform = validated(read(config.platform_stack_name, project_dir))
    assert isinstance(platform, PlatformConfig), "a team stack's platform stack is a platform stack"
    return platform


# ---- placeholders ---------------------------------------------------------------------------------------

def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [item for key, child in value.items()
                for item in _strings(child, f"{path}.{key}" if path else str(key))]
    if isinstance(value, list):
        return [item for index, child in enumerate(value) for item in _strings(child, f"{path}[{index}]")]
    return [(path, str(value))] if value is not None else []


def _documentation_address(text: str) -> bool:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return any(inside(network, doc) for doc in DOCUMENTATION_NETWORKS)


def placeholders(file: StackFile) -> list[str]:
    """Each documentation value in the stack file, with its key path and what it is."""
    found = []
    for path, text in _strings({k: v for k, v in file.document.items() if k != "config"}, "") + _strings(
            file.document.get("config") or {}, ""):
        for address in _ADDRESS.findall(text):
            if _documentation_address(address):
                found.append(f"{stack_file(file.name)}: {path}: {address} is a documentation address "
                             "(RFC 5737/3849)")
        if path.endswith(".project") and EXAMPLE_PROJECT.fullmatch(text):
            found.append(f"{stack_file(file.name)}: {path}: {text} is an example Google Cloud project ID")
        for pattern, what in PLACEHOLDER_PATTERNS:
            for match in pattern.finditer(text):
                found.append(f"{stack_file(file.name)}: {path}: {match.group(1)} is {what}")
    return found


# ---- secrets --------------------------------------------------------------------------------------------

def secrets_problems(file: StackFile) -> list[str]:
    """Why CI could not decrypt this stack's secrets the same way on every run (empty when it can)."""
    provider, where = file.secrets_provider, stack_file(file.name)
    if provider.startswith(CLOUD_SECRETS_PROVIDERS):
        if "encryptedkey" not in file.document:
            return [f"{where}: secretsprovider {provider} has no encryptedkey: create the stack once with "
                    f"`pulumi stack init organization/{PROJECT}/{file.name} --secrets-provider '{provider}'` and "
                    "commit the encryptedkey it writes, or every run would make a new data key"]
        return []
    if provider == "passphrase":
        if "encryptionsalt" not in file.document:
            return [f"{where}: a passphrase stack without encryptionsalt gets a new salt on every CI run, and "
                    "then cannot decrypt the secrets it stored: run `pulumi stack init --secrets-provider "
                    "passphrase` once and commit the encryptionsalt, or use awskms:// or gcpkms://"]
        return []
    return [f"{where}: secretsprovider {provider} is not one CI can use: use awskms://, gcpkms:// or passphrase"]


# ---- the stacks CI operates -----------------------------------------------------------------------------

def _environment(config: PlatformConfig) -> str:
    # EKS and GKE, the clouds CI deploys, say dev or prod; a cluster without the setting is never prod.
    return str(getattr(config.cluster, "environment", "dev"))


def ci_stacks(project_dir: Path = PROJECT_DIR) -> list[CiStack]:
    """The stacks whose file opts in (`deployer.operate`), in deploy order: platforms first, then team stacks.

    ConfigError, naming every problem, when one opts in but CI could not operate it: a stack file with
    documentation placeholders or secrets CI cannot decrypt, a cluster CI does not deploy (kind, existing), a
    team stack whose platform CI does not operate (it would deploy into a cluster CI never made).
    """
    platforms: list[CiStack] = []
    teams: list[CiStack] = []
    problems: list[str] = []
    for name in available_stacks(project_dir):
        file = read(name, project_dir)
        config = validated(file)
        if not config.deployer.operate:
            continue
        found = placeholders(file) + secrets_problems(file)
        platform = config if isinstance(config, PlatformConfig) else _platform_of(config, project_dir)
        if not platform.cluster.ci_secrets_providers:
            found.append(f"CI does not deploy a {platform.cluster.cloud} cluster (it lives on someone's machine)")
        if isinstance(config, TeamStackConfig) and not platform.deployer.operate:
            found.append(f"its platform stack {config.platform_stack_name} is not operated by CI: set operate in "
                         f"{stack_file(config.platform_stack_name)} too")
        if found:
            problems += [f"{stack_file(name)} sets {PROJECT}:deployer.operate, but:", *[f"  {f}" for f in found]]
        if isinstance(config, PlatformConfig):
            platforms.append(CiStack(name, config.deployer.runner, config.cluster.cloud,
                                     prod=_environment(config) == "prod"))
        else:
            teams.append(CiStack(name, config.deployer.runner, platform.cluster.cloud, config.platform_stack_name,
                                 prod=_environment(platform) == "prod"))
    if problems:
        raise ConfigError("stacks that ask CI to operate them are not ready; fix each of these, or remove "
                          "operate until they are:\n  " + "\n  ".join(problems))
    return platforms + teams


def workflow_outputs(stacks: list[CiStack]) -> dict[str, list[dict[str, Any]]]:
    """The workflows' matrices: dev-like platforms and their team stacks (previewed on pull requests, deployed
    first), prod platforms and theirs (deployed after; previewed only by code on main), and all (drift)."""
    def jobs(team: bool, prod: bool) -> list[dict[str, Any]]:
        return [s.job() for s in stacks if bool(s.platform) == team and s.prod == prod]

    return {"platforms": jobs(False, False), "teams": jobs(True, False),
            "prod-platforms": jobs(False, True), "prod-teams": jobs(True, True),
            "all": [s.job() for s in stacks]}


def check(stack: str, project_dir: Path = PROJECT_DIR) -> list[str]:
    """The synth's delivery check: ConfigError when the deployer cannot reach the API; placeholder warnings.

    A program given its config in-process (no stack file) has no deployer to check.
    """
    if not (project_dir / stack_file(stack)).is_file():
        return []
    file = read(stack, project_dir)
    config = validated(file)
    cluster = _platform_of(config, project_dir).cluster if isinstance(config, TeamStackConfig) else config.cluster
    if reason := cluster.unreachable_by(config.deployer):
        raise ConfigError(f"{stack_file(stack)}: {PROJECT}:deployer: {reason}.")
    found = placeholders(file)
    return [f"{len(found)} documentation placeholder(s) to replace before a deploy:", *found] if found else []


def changed_stacks(review: str) -> list[str]:
    """The stacks whose resources or outputs a pull request changes, as `make review` marks them."""
    match = re.search(r"^<!-- changed stacks: (\[.*\]) -->$", review, re.MULTILINE)
    return [str(stack) for stack in json.loads(match.group(1))] if match else []


def reachable(stack: str, project_dir: Path = PROJECT_DIR,
              outputs_of: Callable[[str], dict[str, Any]] = stack_outputs) -> tuple[bool, str]:
    """Whether the cluster the stack deploys to exists (its platform's kubeconfig output), with what to say.

    ConfigError when it exists and its Kubernetes API does not answer a read by the caller: the provider
    would only warn, and the preview pass without a server-side look at a single Kubernetes resource.
    """
    config = validated(read(stack, project_dir))
    platform = config.platform_stack if isinstance(config, TeamStackConfig) else f"organization/{PROJECT}/{stack}"
    kubeconfig = outputs_of(platform).get(KUBECONFIG)
    if not kubeconfig:
        if isinstance(config, TeamStackConfig):
            return False, (f"{config.platform_stack_name} is not deployed yet: {stack} is previewed once "
                           f"{config.platform_stack_name} is deployed (a push to main deploys it first)")
        return False, f"{stack} is not deployed yet: its preview creates the cluster"
    try:
        HttpApi(load_kubeconfig(str(kubeconfig))).request("GET", "/api/v1/namespaces?limit=1")
    except (ApiError, Unreachable) as exc:
        raise ConfigError(
            f"{stack}: the Kubernetes API of the deployed {platform} did not answer a read by this job's "
            f"credentials ({exc}); a preview without it checks no Kubernetes resource. Give the preview role "
            f"view access ({PROJECT}:cluster.viewRoleArns on EKS, or readRoleArns for the read role on main; "
            f"viewServiceAccounts or readServiceAccounts, and roles/container.clusterViewer, on GKE) and check that "
            f"{stack_file(stack)}'s {PROJECT}:deployer reaches the API") from None
    return True, f"{platform}'s Kubernetes API answers"


def stale_deploy(ref: str, sha: str, main_head: str) -> str | None:
    """Why this run must not deploy (None when it may): only main's head is deployed."""
    if ref != "refs/heads/main":
        return f"stacks deploy only from main, not from {ref}"
    if sha != main_head:
        return (f"{sha} is no longer the head of main ({main_head} is): a re-run of an old run would deploy old "
                f"code over newer; the run of {main_head} deploys it")
    return None


def last_deploy(history: list[dict[str, Any]]) -> tuple[str, bool]:
    """The commit of the newest successful update in `pulumi stack history --json`, and whether it changed
    a resource; ("", False) when the stack has none."""
    for update in history:
        if update.get("kind") == "update" and update.get("result") == "succeeded":
            changes = update.get("resourceChanges") or {}
            changed = any(count for op, count in changes.items() if op != "same")
            return str((update.get("environment") or {}).get("git.head", "")), changed
    return "", False


def main(argv: list[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth.delivery", description=(__doc__ or '').splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stacks", help="the stacks CI operates, as GitHub Actions outputs")
    deployable = commands.add_parser("deployable", help="refuse a stack that is not ready for a real deploy")
    deployable.add_argument("stack")
    reach = commands.add_parser("reachable", help="is the stack's cluster deployed, and does its API answer")
    reach.add_argument("stack")
    changed = commands.add_parser("changed", help="the stacks a pull request changes (from make review)")
    changed.add_argument("preview", type=Path)
    head = commands.add_parser("head-of-main", help="refuse a deploy of anything but main's head")
    head.add_argument("main_head", help="the commit main points to now")
    history = commands.add_parser("last-deploy", help="the commit of the last update and whether it changed anything")
    history.add_argument("history", type=Path, help="what `pulumi stack history --json` printed")
    args = parser.parse_args(argv)
    if args.command == "head-of-main":
        reason = stale_deploy(os.environ.get("GITHUB_REF", ""), os.environ.get("GITHUB_SHA", ""), args.main_head)
        print(f"error: {reason}" if reason else f"{args.main_head} is the head of main", file=sys.stderr)
        return 1 if reason else 0
    if args.command == "last-deploy":
        commit, changed_anything = last_deploy(json.loads(args.history.read_text() or "[]"))
        print(f"commit={commit}")
        print(f"changed={json.dumps(changed_anything)}")
        return 0
    try:
        if args.command == "stacks":
            for name, jobs in workflow_outputs(ci_stacks(project_dir)).items():
                print(f"{name}={json.dumps(jobs)}")
            return 0
        if args.command == "changed":
            print(f"changed={json.dumps(changed_stacks(args.preview.read_text()))}")
            return 0
        if args.command == "reachable":
            deployed, note = reachable(args.stack, project_dir)
            print(note, file=sys.stderr)
            print(f"deployed={json.dumps(deployed)}")
            print(f"note={note}")
            return 0
        file = read(args.stack, project_dir)
        check(args.stack, project_dir)
        problems = placeholders(file) + secrets_problems(file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"{stack_file(args.stack)} is not ready to deploy; replace or fix each of these first:",
              file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{stack_file(args.stack)}: no placeholders, secrets provider {file.secrets_provider}, API reachable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
