"""The errors a user's ordinary mistakes raise: the command line turns them into one line on stderr and exit code 2.

Kept free of every other import so that any module (and the command line before it imports anything heavy) can raise
and catch them.
"""


class ConfigError(ValueError):
    """Bad user input: the message is one line that names the key, value or file and what is allowed."""


class RecordError(ConfigError):
    """A record file that cannot be read as a record: the message names the file (and the line, for JSON lines)."""
