"""`mdpt` command line: subcommands live in modules with a `register(subparsers)` function."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mdpt import __version__
from mdpt.compile_cache import enable_compile_cache
from mdpt.errors import MDPTError

COMMAND_MODULES = (
    "mdpt.cli.data_cmd",
    "mdpt.cli.train_cmd",
    "mdpt.cli.study_cmd",
    "mdpt.cli.reproduce_cmd",
)


SIZES = "batch sizes, seeds, candidates, episodes or network widths"  # what to lower when memory runs out


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit code 2), with a hint to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class StdoutHandler(logging.Handler):
    """Messages of the `mdpt` logger to whatever sys.stdout is at the time (tests redirect it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_logging(quiet: bool = False, verbose: bool = False) -> None:
    logger = logging.getLogger("mdpt")
    if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
        logger.addHandler(StdoutHandler())
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mdpt", description="Modular Diffusion Policy Training for offline RL. Exit codes: "
                           "0 success, 2 usage or input error, 3 a run stopped itself (NaN, diverging critic), "
                           "4 a sweep with failed trials, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"mdpt {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (2, its one line printed), --help or --version (0)
        return e.code if isinstance(e.code, int) else 0
    configure_logging(args.quiet, args.verbose)
    enable_compile_cache()
    try:
        result = args.func(args)
    except MDPTError as e:
        print(f"mdpt: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # full disk, permissions: the environment, not a bug
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"mdpt: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mdpt: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as e:  # out of memory where no caller named what ran out
        from mdpt.training.profiling import is_out_of_memory, out_of_memory_message

        if not is_out_of_memory(e):
            raise
        print(f"mdpt: error: {out_of_memory_message(e, f'mdpt {args.command}', SIZES)}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
