"""`python -m verify <stack>` (`make verify STACK=<stack>`): check a deployed stack; exit 1 on any failure.

It reads the stack's outputs (kubeconfig, GPU pools, monitoring namespace) with the Pulumi CLI, logged in to
the stack's backend, and reaches the cluster as its kubeconfig says (the same credentials as `pulumi up`).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from core.outputs import PlatformOutputs, is_platform
from core.progress import progress
from verify.api import ApiError, HttpApi, RecordingApi, Unreachable, load_kubeconfig
from verify.run import Verifier, table


def stack_outputs(stack: str) -> dict[str, object]:
    if shutil.which("pulumi") is None:
        raise SystemExit("error: make verify reads the stack's outputs (its kubeconfig, GPU pools) with the Pulumi "
                         "CLI, which is not on PATH: install it (the release requirements.txt pins the SDK at) and "
                         "log in to the stack's backend (`pulumi login`), as for `pulumi up`")
    progress(f"reading the outputs of stack {stack} with the Pulumi CLI")
    result = subprocess.run(["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"error: cannot read the outputs of stack {stack}: {result.stderr.strip()}")
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verify", description=(__doc__ or '').splitlines()[0])
    parser.add_argument("stack", help="a deployed platform stack")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each pool (default 1800)")
    parser.add_argument("--record", type=Path, help="save every API exchange to this JSON file (test fixtures)")
    args = parser.parse_args(argv)
    outputs = stack_outputs(args.stack)
    if not is_platform(outputs):
        print(f"error: {args.stack} is not a platform stack (it has no gpuPools output)", file=sys.stderr)
        return 2
    api = RecordingApi(HttpApi(load_kubeconfig(PlatformOutputs.read(outputs).kubeconfig)))
    verifier = Verifier(api, outputs, run_id=secrets.token_hex(3), timeout=args.timeout)
    try:
        results, rule_problems = verifier.run()
    except ApiError as exc:
        print(f"error: the Kubernetes API refused a request: {exc}", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"error: the Kubernetes API of {args.stack} did not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.record:
            args.record.write_text(json.dumps(api.exchanges, indent=1))
    print(table(results, rule_problems, verifier.nccl_results))
    return 0 if all(r.ok for r in [*results, *verifier.nccl_results]) and not rule_problems else 1


if __name__ == "__main__":
    sys.exit(main())
