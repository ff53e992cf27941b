"""Errors caused by what the user gave us (files, names, options).

The CLI prints them as one line naming the culprit, without a traceback; from Python they are
ordinary exceptions. Sub-classes say which layer raised them.
"""


class UserError(Exception):
    """Bad input: a missing file, a malformed record, an unknown name, an invalid option."""


class DataError(UserError):
    """A benchmark file or record is missing or malformed."""


class ConfigError(UserError):
    """A run configuration is invalid or does not match the run directory it points at."""


class TrainingError(UserError):
    """Training cannot go on (a NaN or infinite loss); earlier results are kept."""


class RunDirectoryError(UserError):
    """A run directory's file is missing, damaged or not what the run needs to continue."""


class WriteError(UserError):
    """A file cannot be written (a full disk, a read-only folder); nothing half-written is left."""
