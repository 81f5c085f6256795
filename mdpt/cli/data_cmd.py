"""`mdpt data` subcommands (placeholder until implemented)."""


def register(subparsers) -> None:
    pass
