"""Errors meant for people. Library code raises them; only cli.py prints and exits."""


class PipglrError(Exception):
    """A failure with a message that says what went wrong and how to fix it."""


class ConfigError(PipglrError):
    """pipglr.toml or a flag has a bad value."""


class ToolMissing(PipglrError):
    """A host program the build needs is not installed."""


class CommandFailed(PipglrError):
    """An external command exited non-zero."""


class RunnerSourceError(PipglrError):
    """gitlab-runner could not be obtained or failed verification."""


class MirrorError(PipglrError):
    """The Debian mirror did not say what its archive holds."""
