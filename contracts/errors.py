"""One exception tree for the whole project: the CLI turns these into one clear line and a
non-zero exit code, never a traceback."""


class KppError(Exception):
    """An error the user can act on; `str()` is the whole message."""

    exit_code = 1


class ConfigError(KppError):
    """Invalid or missing configuration (flags, environment, files)."""

    exit_code = 2
