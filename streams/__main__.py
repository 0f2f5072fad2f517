"""`python -m streams ...` is the `distillwatch` command."""

from streams.cli import main

main()
