"""Run the installed Prefect 3.8 server on the installed FastAPI (0.165) and SQLAlchemy (2.1).

Two incompatibilities of the locked versions, measured here:

1. Prefect 3.8's server declares request bodies with ``Body(..., min_items=1)`` /
   ``max_items=200``, keywords FastAPI has removed: importing Prefect's API raises ``TypeError:
   Body() got an unexpected keyword argument 'min_items'``, so neither the ephemeral server nor
   ``prefect server start`` starts. `patch_fastapi` translates the two keywords to their current
   names (the same constraint).
2. Its scheduler inserts scheduled flow runs with an ORM ``INSERT ... ON CONFLICT DO NOTHING``
   executed over a list of rows, which SQLAlchemy 2.1 refuses ("Can't evaluate bulk DML
   statement"): deployments register but never get a scheduled run. `patch_scheduler` runs the
   same statement on the table (Core executemany), which SQLAlchemy accepts.

`install` applies both right when ``prefect.server.api`` / ``prefect.server.models.deployments``
are imported, and `subprocess_environment` makes Prefect's own server subprocesses do the same
(through ``site/sitecustomize.py`` on PYTHONPATH). Each patch does nothing when the library no
longer needs it. Remove this module once the lock holds a Prefect release that fixes both.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SITE_DIR", "install", "patch_fastapi", "patch_scheduler", "subprocess_environment"]

SITE_DIR = Path(__file__).resolve().parent / "site"
_RENAMED = {"min_items": "min_length", "max_items": "max_length"}


def install() -> None:
    """Apply the patches now where Prefect's server is imported already, else on its import."""
    if "prefect.server.api" in sys.modules:
        patch_fastapi()
    if "prefect.server.models.deployments" in sys.modules:
        patch_scheduler()
    if not any(isinstance(f, _PrefectServerImports) for f in sys.meta_path):
        sys.meta_path.insert(0, _PrefectServerImports())


def patch_fastapi() -> None:
    """Make `fastapi.Body` accept ``min_items`` / ``max_items`` (as min_length / max_length)."""
    import fastapi
    import fastapi.param_functions as functions

    original = functions.Body
    if (
        getattr(original, "_nudge_compat", False)
        or "min_items" in inspect.signature(original).parameters
    ):
        return
    patched = _renaming(original)
    functions.Body = patched
    fastapi.Body = patched


def patch_scheduler() -> None:
    """Insert scheduled flow runs with a Core executemany (see the module docstring, item 2)."""
    import sqlalchemy as sa
    from prefect.server.models import deployments

    original = deployments._insert_scheduled_flow_runs
    if getattr(original, "_nudge_compat", False) or sa.__version__.startswith("2.0"):
        return
    from prefect.server.database import provide_database_interface

    async def insert_scheduled_flow_runs(session: Any, runs: list[dict[str, Any]]) -> Any:
        if not runs:
            return []
        db = provide_database_interface()
        table = db.FlowRun.__table__
        columns = set(table.columns.keys())
        # The same ON CONFLICT DO NOTHING insert, on the table instead of the ORM entity.
        await session.execute(
            db.queries.insert(table).on_conflict_do_nothing(  # type: ignore[arg-type]  # a Table works at run time
                index_elements=db.orm.flow_run_unique_upsert_columns
            ),
            [{k: v for k, v in run.items() if k in columns} for run in runs],
        )
        # The rest (states of the newly inserted runs) already runs on Core statements: hand
        # the original an empty insert by letting it see the rows as present.
        return await _finish_inserted_runs(db, session, runs)

    insert_scheduled_flow_runs._nudge_compat = True  # type: ignore[attr-defined]
    deployments._insert_scheduled_flow_runs = insert_scheduled_flow_runs


async def _finish_inserted_runs(db: Any, session: Any, runs: list[dict[str, Any]]) -> Any:
    """Prefect 3.8's second half of `_insert_scheduled_flow_runs`: states for the new runs."""
    import sqlalchemy as sa
    from prefect._internal.uuid7 import uuid7

    inserted = sa.select(db.FlowRun.id).where(
        db.FlowRun.id.in_([r["id"] for r in runs]),
        ~sa.select(db.FlowRunState.id).where(db.FlowRunState.flow_run_id == db.FlowRun.id).exists(),
    )
    inserted_ids = (await session.execute(inserted)).scalars().all()
    states = [
        {"id": uuid7(), "flow_run_id": r["id"], **r["state"]}
        for r in runs
        if r["id"] in inserted_ids
    ]
    if states:
        await session.execute(db.FlowRunState.__table__.insert(), states)
        await session.execute(
            db.queries.set_state_id_on_inserted_flow_runs_statement(
                inserted_flow_run_ids=inserted_ids, insert_flow_run_states=states
            )
        )
    return inserted_ids


def subprocess_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """`environ` (default os.environ) with the compat `sitecustomize` first on PYTHONPATH."""
    env = dict(os.environ if environ is None else environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(SITE_DIR) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(SITE_DIR), *paths])
    return env


def _renaming(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def body(*args: Any, **kwargs: Any) -> Any:
        for old, new in _RENAMED.items():
            if old in kwargs:
                kwargs[new] = kwargs.pop(old)
        return original(*args, **kwargs)

    body._nudge_compat = True  # type: ignore[attr-defined]
    return body


class _PrefectServerImports(importlib.abc.MetaPathFinder):
    """Patches FastAPI before ``prefect.server.api`` is imported, and the scheduler's insert
    right after ``prefect.server.models.deployments`` is."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname == "prefect.server.api":
            patch_fastapi()
        elif fullname == "prefect.server.models.deployments":
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchAfterLoad(spec.loader, patch_scheduler)
            return spec
        return None


class _PatchAfterLoad(importlib.abc.Loader):
    """A loader that runs `after` once the wrapped loader has executed the module."""

    def __init__(self, loader: Any, after: Callable[[], None]) -> None:
        self._loader = loader
        self._after = after

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._after()
