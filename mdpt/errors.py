"""User-facing errors: one line that says what is wrong and what to do; the CLI exits with 2."""


class MDPTError(Exception):
    """An error caused by the user's input, files or environment (not a bug in MDPT)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
