"""The one place where a mistake in the input becomes ``error: <message>`` and exit code 2.

Every Typer app of the CLI is made with ``cls=Commands``: whatever its commands raise as an
``engine.errors.UserError`` (a bad file, option, setting or input, raised by the packages where
the mistake is found) is printed as one line by ``user_errors``, without a traceback. Any other
exception — a ``ValueError`` that is not a ``UserError`` included — is a bug and keeps its
traceback. The sub-apps carry it too, so that they behave the same when mounted on their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from typer.core import TyperGroup

from engine.errors import UserError
from nudge.console import fail

if TYPE_CHECKING:
    from typer._click import Context  # the click that typer carries (TyperGroup.invoke's)

__all__ = ["Commands", "UserError", "user_errors"]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a ``UserError`` raised in the block into ``error: <message>`` and exit 2."""
    try:
        yield
    except UserError as exc:
        fail(str(exc))


class Commands(TyperGroup):
    """A command group whose commands' user errors go through ``user_errors``."""

    def invoke(self, ctx: Context) -> Any:
        with user_errors():
            return super().invoke(ctx)
