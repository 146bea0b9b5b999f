"""User-facing errors: each one becomes a single line on stderr and a non-zero exit, never a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad config, bad input file, failed gate). Its message is one line."""

    exit_code = 2


class ConfigError(UserError):
    """params.yaml or a command-line override is wrong: unknown key, wrong type, missing file."""


class DataError(UserError):
    """An input or processed data file breaks a rule; the message names the file, row or column."""


class GateError(UserError):
    """A quality gate (teacher accuracy, student retention, ...) stopped the pipeline."""

    exit_code = 3
