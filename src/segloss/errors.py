"""User-facing errors: one line that names the file or setting and what is wrong."""


class SeglossError(Exception):
    """Bad input or configuration; entry points print it as one line and exit non-zero."""


class ConfigError(SeglossError, ValueError):
    """A setting is out of range or inconsistent (the message names the setting)."""


class DataError(SeglossError, ValueError):
    """An input file is missing, unreadable or malformed (the message names the file)."""


def first_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's text (library messages can run to pages); an
    exception without text gives its type's name, an empty message ``""``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""
