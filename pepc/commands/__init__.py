"""One module per CLI command.

Each module defines NAME, HELP, ORDER (position in `pepc --help`),
`register(parser)` to add its options and `run(args) -> int`. The CLI
discovers them, so adding a command touches no shared file.
"""
