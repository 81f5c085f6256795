"""`mdpt train` subcommands (placeholder until implemented)."""


def register(subparsers) -> None:
    pass
