"""User-facing errors: the CLI prints their message on one line per problem and exits 2."""

from __future__ import annotations


class VlmbenchError(Exception):
    """A mistake in user input (a file, a name, an option) rather than a bug in vlmbench."""

    exit_code = 2
    field: tuple[str, ...] | None = None  # the spec field at fault, when known (for 'file:line: field')

    def lines(self) -> list[str]:
        return [str(self)]


class SpecError(VlmbenchError):
    """One or more problems in a YAML spec, each already located as 'file:line: field: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


class UnknownNameError(VlmbenchError):
    """A task or judge name that the catalogue does not hold."""

    def __init__(self, kind: str, name: str, suggestions: list[str]):
        hint = f" (did you mean: {', '.join(suggestions)}?)" if suggestions else ""
        super().__init__(f"unknown {kind} '{name}'{hint}; `vlmbench {kind}s list` shows them all")


class CapabilityError(VlmbenchError):
    """A judge was asked a kind of question it does not answer."""


class Interrupted(VlmbenchError):
    """Ctrl-C: the work stopped cleanly (exit 130)."""

    exit_code = 130
