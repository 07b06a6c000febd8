"""`python -m synth <stack>`: synthesize a stack offline into out/<stack>/ and print a summary.

Exit status: 0 when the stack synthesized and broke no mandatory rule; 1 when it broke one (the output is
still written, to look at); 2 on bad configuration or environment (a message naming the file and key, never a
traceback, nothing written); 3 on an internal error, a bug in mlplatform (with the traceback to report).
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
from pathlib import Path

from config.errors import ConfigError
from synth import PROJECT_DIR, pipeline
from synth.applied import applied_objects
from synth.checks import enforcement_levels
from synth.summary import summarize

OK, POLICY_VIOLATION, BAD_INPUT, BUG = 0, 1, 2, 3
# What the Pulumi CLI accepts as a stack's name (and keeps the stack file inside the project).
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("stack", nargs="?", default="local", help="the stack to synthesize (default: local)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: out/<stack>)")
    parser.add_argument("--policy-config", type=Path, default=None,
                        help="rule enforcement levels, as for `pulumi preview --policy-pack-config`")
    parser.add_argument("--checkov", action="store_true",
                        help="also run checkov (its own virtualenv: make checkov-venv) over everything applied")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except Exception:  # noqa: BLE001 (anything else is ours to fix, and says so)
        traceback.print_exc()
        print("error: internal error: this is a bug in mlplatform, not a mistake in the stack file; please report "
              "it with the traceback above.", file=sys.stderr)
        return BUG


def _run(args: argparse.Namespace) -> int:
    if not _STACK_NAME.fullmatch(args.stack) or set(args.stack) == {"."}:
        raise ConfigError(f"{args.stack!r} is not a stack name: use letters, digits, '-', '_' and '.' (at most "
                          "100), the <name> of a Pulumi.<name>.yaml")
    out_dir = args.out or PROJECT_DIR / "out" / args.stack
    levels = enforcement_levels(args.policy_config)
    # Everything is checked and synthesized before anything is written: bad input leaves out/ untouched.
    result = pipeline.run(args.stack, levels=levels, out_dir=out_dir)
    shown = out_dir.relative_to(PROJECT_DIR) if out_dir.is_relative_to(PROJECT_DIR) else out_dir
    print(summarize(result.synthesis, shown, result.violations, result.rendering, result.applied))
    if args.checkov:
        from synth.checkov import LISTING_FILE, run_checkov

        report = run_checkov(applied_objects(result.synthesis, result.rendering))
        (out_dir / LISTING_FILE).write_text(report.listing())
        lines = report.summary() + (result.applied.not_run() if result.applied is not None else [])
        print("\n".join([*lines, f"  every failed check, per object: {shown / LISTING_FILE}"]))
    return POLICY_VIOLATION if result.failed else OK


if __name__ == "__main__":
    sys.exit(main())
