"""One module per CLI command.

Takes: parsed command-line arguments.
Gives: one subcommand each, as a composition of the stages before it
(load, check, compile, simulate, diff, report, reconcile, watch); the exit
code. cli.py finds them and builds `pepc --help`.
Start with: check.py (the shortest path through the pipeline); _common.py
and _host.py hold the options and helpers the commands share.

Each module defines NAME, HELP, ORDER (position in `pepc --help`),
`register(parser)` to add its options and `run(args) -> int`. The CLI
discovers them, so adding a command touches no shared file.
"""
