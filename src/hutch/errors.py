"""hutch's one error hierarchy; each class carries its documented exit code."""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_ENGINE = 4
EXIT_BUILD = 5
EXIT_SETUP = 125
EXIT_INTERRUPTED = 130


class HutchError(Exception):
    """A failure hutch explains to its user: what went wrong and what to do next."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(HutchError):
    exit_code = EXIT_USAGE


class ConfigError(HutchError):
    exit_code = EXIT_CONFIG


class EngineUnavailable(HutchError):
    exit_code = EXIT_ENGINE


class BuildFailed(HutchError):
    exit_code = EXIT_BUILD


class SetupFailed(HutchError):
    """The sandbox could not be set up before the command started."""

    exit_code = EXIT_SETUP
