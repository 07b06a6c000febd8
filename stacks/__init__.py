"""Stack compositions: one module per kind of stack, each building on validated config."""

from config.loader import is_team_stack


def main() -> None:
    """The program of every stack: a team's stack when its config names a platform stack, else a platform."""
    if is_team_stack():
        from stacks.team import main as team
        team()
    else:
        from stacks.platform import main as platform
        platform()
