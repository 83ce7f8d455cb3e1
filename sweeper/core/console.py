"""The rich console sweeper prints to: the terminal's width, or wide enough for tables in logs and pipes.

The stream is bound when the console is made, so that output keeps going to the user's terminal
while Ray's own chatter is redirected into the sweep's ray.log.
"""

import sys

from rich.console import Console

PIPE_WIDTH = 200  # columns when not a terminal: a plan table must not be cut to 80 in a CI log


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    probe = Console(file=stream)
    return probe if probe.is_terminal else Console(file=stream, width=PIPE_WIDTH)
