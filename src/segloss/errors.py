"""User-facing errors: one line that names the file or setting and what is wrong."""


class SeglossError(Exception):
    """Bad input or configuration; entry points print it as one line and exit non-zero."""


class ConfigError(SeglossError, ValueError):
    """A setting is out of range or inconsistent (the message names the setting)."""


class DataError(SeglossError, ValueError):
    """An input file is missing, unreadable or malformed (the message names the file)."""
