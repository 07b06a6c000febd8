"""`python -m synth <stack>`: synthesize a stack offline into out/<stack>/ and print a summary.

Exit status: 0 when the stack synthesized and broke no mandatory rule; 1 when it broke one (the output is
still written, to look at); 2 on bad configuration (a message, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from config.errors import ConfigError
from synth import PROJECT_DIR, synthesize
from synth.checks import check, enforcement_levels
from synth.output import write
from synth.summary import summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synth", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("stack", nargs="?", default="local", help="the stack to synthesize (default: local)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: out/<stack>)")
    parser.add_argument("--policy-config", type=Path, default=None,
                        help="rule enforcement levels, as for `pulumi preview --policy-pack-config`")
    args = parser.parse_args(argv)
    out_dir = args.out or PROJECT_DIR / "out" / args.stack
    try:
        levels = enforcement_levels(args.policy_config)
        synthesis = synthesize(args.stack)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write(synthesis, out_dir)
    violations = check(synthesis, levels)
    shown = out_dir.relative_to(PROJECT_DIR) if out_dir.is_relative_to(PROJECT_DIR) else out_dir
    print(summarize(synthesis, shown, violations))
    return 1 if any(v.mandatory for v in violations) else 0


if __name__ == "__main__":
    sys.exit(main())
