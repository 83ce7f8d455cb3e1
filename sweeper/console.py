"""The rich console sweeper prints to: the terminal's width, or wide enough for tables in logs and pipes."""

from rich.console import Console

PIPE_WIDTH = 200  # columns when not a terminal: a plan table must not be cut to 80 in a CI log


def console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)
