"""What CI needs to preview and deploy each stack, and what would stop a real deploy.

- `python -m synth.delivery stacks`: the stacks CI operates, as JSON for the workflows (runner labels, cloud,
  platform stack), one line per GitHub Actions output.
- `python -m synth.delivery deployable <stack>`: exit 1, naming each, when the stack file still holds
  documentation placeholders or lacks a secrets provider CI can use; the deploy job runs it before `pulumi up`.
- `python -m synth.delivery changed <review>`: the stacks a pull request changes, as `make review` marks them.

The synth calls `check` on every stack: a deployer that cannot reach the stack's Kubernetes API is an error
(a deploy would time out after creating the cluster), placeholders are warnings (example stacks keep them).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import PROJECT, ConfigError, stack_file
from config.loader import validate_stack
from config.models import PlatformConfig, TeamStackConfig
from core.fields import inside
from synth import PROJECT_DIR
from synth.stackfile import available_stacks, load_yaml_file

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
            if path.endswith(".projectNumber") and pattern is PLACEHOLDER_PATTERNS[0][0]:
                what = "a placeholder Google Cloud project number (the digits AWS's documentation uses)"
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

def ci_stacks(project_dir: Path = PROJECT_DIR) -> list[CiStack]:
    """Platform stacks on a cloud, and the team stacks on them, in deploy order (platforms first)."""
    platforms: list[CiStack] = []
    teams: list[CiStack] = []
    for name in available_stacks(project_dir):
        config = validated(read(name, project_dir))
        # CI operates the clouds whose stacks it can decrypt; kind and existing clusters live on someone's machine.
        if isinstance(config, PlatformConfig):
            if config.cluster.ci_secrets_providers:
                platforms.append(CiStack(name, config.deployer.runner, config.cluster.cloud))
        else:
            platform = _platform_of(config, project_dir)
            if platform.cluster.ci_secrets_providers:
                teams.append(CiStack(name, config.deployer.runner, platform.cluster.cloud,
                                     config.platform_stack_name))
    return platforms + teams


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


def main(argv: list[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth.delivery", description=(__doc__ or '').splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stacks", help="the stacks CI operates, as GitHub Actions outputs")
    deployable = commands.add_parser("deployable", help="refuse a stack that is not ready for a real deploy")
    deployable.add_argument("stack")
    changed = commands.add_parser("changed", help="the stacks a pull request changes (from make review)")
    changed.add_argument("preview", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "stacks":
            stacks = ci_stacks(project_dir)
            platforms = [{"stack": s.stack, "runner": s.runner, "cloud": s.cloud} for s in stacks if not s.platform]
            teams = [{"stack": s.stack, "runner": s.runner, "cloud": s.cloud, "platform": s.platform}
                     for s in stacks if s.platform]
            print(f"platforms={json.dumps(platforms)}")
            print(f"teams={json.dumps(teams)}")
            print(f"all={json.dumps(platforms + teams)}")
            print(f"runners={json.dumps({s.stack: s.runner for s in stacks})}")
            return 0
        if args.command == "changed":
            print(f"changed={json.dumps(changed_stacks(args.preview.read_text()))}")
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
