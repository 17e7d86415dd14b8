"""Subcommands of `mammoseg`: each module has `add_arguments(parser)` and `run(args) -> int`."""
