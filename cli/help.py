"""Help that says what a value is (``--org SLUG``, ``SLUG``), never its Python type (``<str>``, ``<int>``)."""

from __future__ import annotations

from collections.abc import Iterator

from typer._click.core import Command, Context  # typer vendors its own click
from typer.core import TyperArgument, TyperOption


def _commands(command: Command) -> Iterator[Command]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


class NamedArgument(TyperArgument):
    """An argument shown by its name (``SLUG``, ``[REVISION]``), as Click shows them, not with its Python type."""

    @property
    def display_name_raw(self) -> str:
        return (self.metavar or self.name or "").upper()

    def display_type_rich(self, ctx: Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        return self.display_name_raw if self.required else f"[{self.display_name_raw}]"


# Options that mean the same thing in every command read the same way there.
COMMON_VALUES = {"org": "SLUG", "email": "EMAIL", "actor": "NAME", "out": "DIR", "since": "DATE", "until": "DATE"}


def name_values(root: Command) -> None:
    """Help shows what a value is, never its Python type (``<str>``, ``<int>``): an option that takes a value and
    has no metavar of its own shows a common one (``--org SLUG``) or its name (``--roles ROLES``), a flag nothing,
    an argument its name alone."""
    for command in _commands(root):
        for param in command.params:
            if isinstance(param, TyperArgument):
                param.__class__ = NamedArgument  # the same parameter, shown the way Click shows arguments
            elif isinstance(param, TyperOption) and param.metavar is None and param.name:
                named = COMMON_VALUES.get(param.name, param.name.upper())
                param.metavar = "" if param.is_flag or param.count else named
