"""Exception types raised by jaxdl.

Each names what went wrong in terms a user can act on: the file, the dotted
config key, the bad value and the valid choices.
"""

from __future__ import annotations

__all__ = ["JaxdlError", "ConfigError", "DataError", "CheckpointError"]


class JaxdlError(Exception):
    """Base class of every error jaxdl raises on purpose."""


class ConfigError(JaxdlError, ValueError):
    """A configuration is invalid.

    Attributes:
      problems: one line per problem found, each naming the dotted key.
      source: the file (or "<dict>", "<override>") the config came from.
    """

    def __init__(self, problems: list[str] | str, source: str = "<config>"):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        self.source = source
        if len(self.problems) == 1:
            msg = f"{source}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{source}: {len(self.problems)} problems:\n{lines}"
        super().__init__(msg)


class DataError(JaxdlError, RuntimeError):
    """A dataset file is missing, corrupt, or could not be downloaded."""


class CheckpointError(JaxdlError, RuntimeError):
    """A run directory or checkpoint cannot be used as asked."""
