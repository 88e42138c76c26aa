"""The errors kwsbench raises on bad input; the CLI prints them on one line and exits 2."""


class KwsbenchError(Exception):
    """Bad input from the user: the message names the input and the fix."""


class DataError(KwsbenchError):
    """A dataset, audio file or archive that cannot be used as given."""


class ConfigError(KwsbenchError):
    """An option, YAML key or value that is not valid."""


class ModelError(KwsbenchError):
    """An unknown model name, a bad override or a checkpoint that does not fit."""


class BackendError(KwsbenchError):
    """A runtime backend that cannot run a model (missing package, export failure, parity failure)."""
