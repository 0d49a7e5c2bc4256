"""The one error the configuration raises: every problem found, each naming file, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a configuration file; ``line`` and ``column`` are 1-based."""

    source: str
    message: str
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = [self.source]
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(self.field)
        return f"{', '.join(parts)}: {self.message}"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message has one line per problem."""

    def __init__(self, message: str, problems: Sequence[ConfigProblem] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)

    @classmethod
    def from_problems(cls, problems: Sequence[ConfigProblem]) -> ConfigError:
        """One error listing every problem, one per line."""
        return cls("\n".join(str(problem) for problem in problems), problems)

    @property
    def lines(self) -> list[str]:
        """The message, one line per problem."""
        return self.message.splitlines()
