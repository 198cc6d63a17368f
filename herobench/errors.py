"""User-facing errors. The CLI prints ``error: <message>`` on one line and exits non-zero."""


class HerobenchError(Exception):
    """A problem with the user's input (task name, config, label file, weights, run folder)."""


class UnknownNameError(HerobenchError):
    """A name that is not in a registry (message carries the closest suggestion)."""


class ConfigError(HerobenchError):
    """A malformed config, task spec or ``--set`` override; the message names the offending key."""


class BudgetExceededError(HerobenchError):
    """Recording these labels would exceed the feedback budget."""
