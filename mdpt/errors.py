"""User-facing errors: one line that says what is wrong and what to do, and the exit code.

Exit codes of the `mdpt` command (README "Exit codes"):
  0 success; 1 a bug (a traceback); 2 a usage or input error (`MDPTError`); 3 a run stopped
  because its values went non-finite or its critic diverged (`RunStopped`); 4 a sweep or study
  with failed runs (`SweepFailed`); 130 interrupted.
"""


class MDPTError(Exception):
    """An error caused by the user's input, files or environment (not a bug in MDPT)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(_cut(word) for word in str(message).split()))


def _cut(word: str, limit: int = 200) -> str:
    """A word of a message cut to `limit` characters: a value a user gave can be megabytes long."""
    return word if len(word) <= limit else f"{word[:limit - 40]}...{word[-20:]} ({len(word)} characters)"


class RunStopped(MDPTError):
    """A run that stopped itself: non-finite values, or a critic past its value bound."""

    exit_code = 3


class SweepFailed(MDPTError):
    """A sweep or study in which some runs failed (the others finished)."""

    exit_code = 4
