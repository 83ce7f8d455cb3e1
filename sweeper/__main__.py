"""`python -m sweeper`: the command line."""

from sweeper.cli.main import main

main()
