"""The one exception data loading raises for bad user data (a missing file, a malformed file)."""


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the file and what is wrong."""
