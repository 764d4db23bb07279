"""`nudge status`: one screen for the person on call.

The engine's queues and lags (from the engine database, the same reads as the Prometheus
collector), the last training, the champions, the last feature build and the last review (from
the MLflow store and NUDGE_HOME), and the sends the rate limits are holding back. Nothing is
created: a missing MLflow store or feature folder is reported as such, never made.
`collect_status` gathers one JSON-able object (the shape of ``nudge status --json``);
`print_status` prints it. Registered in ``nudge/cli.py`` as ``app.command("status")(status)``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nudge.console import console

if TYPE_CHECKING:
    from nudge.settings import Settings

__all__ = ["collect_status", "print_engine", "print_models", "print_status", "status"]


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the shape: nudge/status.py).")
    ] = False,
) -> None:
    """One screen for the person on call: queues and lags, dead letters, the lake sync, the
    last training and feature build, champion versions, and sends held back by rate limits."""
    from nudge.engine_cli import print_json, settings

    report = collect_status(settings())
    if as_json:
        print_json(report)
        return
    print_status(report)


def collect_status(s: Settings, now: float | None = None) -> dict[str, Any]:
    """``{"generated_at", "engine": {...}, "models": {...}, "features": {...}}``: times ISO 8601
    UTC, ages in seconds (null where there is nothing to age)."""
    now = time.time() if now is None else now
    return {
        "generated_at": _iso(now),
        "engine": _engine(s, now),
        "models": _models(s),
        "features": _features(s),
    }


def _engine(s: Settings, now: float) -> dict[str, Any]:
    from engine.runtime.deliverability import marketing_pause
    from engine.store import EngineDB, migrate, reporting
    from engine.store.outbox import pending_by_channel

    url = s.engine_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return {"database": url, "problem": "no engine database yet (the engine creates it)"}
    store = EngineDB.open(url)
    try:
        with store.connect() as conn:
            queues = reporting.queue_status(conn, now)
            letters = reporting.dead_letter_counts(conn)
            lake = reporting.lake_watermarks(conn)
            sends = reporting.sends_since(conn, now - 60.0)
            processed, finished = reporting.last_activity(conn)
            channels = pending_by_channel(conn, now)
            revision = migrate.read_revision(conn, store.schema).current
            pause = marketing_pause(conn)  # the deliverability guard (issue 14)
    finally:
        store.dispose()
    return {
        "database": store.engine.url.render_as_string(hide_password=True),
        "problem": None,
        "revision": revision,
        "inbox": {
            "pending": queues.inbox.get("pending", 0),
            "oldest_pending_age_seconds": _age(now, queues.oldest_pending),
        },
        "processor_last_active": _iso(processed),
        "dispatcher_last_active": _iso(finished),
        "due_actions": queues.due,
        "oldest_due_age_seconds": _age(now, queues.oldest_due),
        "timers": queues.timers,
        "channels": [
            {
                "channel": q.channel,
                "pending": q.pending,
                "due": q.due,
                "oldest_due_age_seconds": _age(now, q.oldest_due_at),
                "throttled": q.throttled,
                "next_attempt_at": _iso(q.next_attempt_at),
            }
            for q in channels
        ],
        "sends_last_minute": sends,
        "dead_letters_open": {src: n for (src, done), n in sorted(letters.items()) if not done},
        "marketing_paused": pause,
        "lake_sync": {
            stream: {
                "position": sync.position,
                "behind": sync.behind,
                "lag_seconds": _age(now, sync.oldest_unsynced) or 0.0,
                "last_advanced": _iso(sync.updated_at),
            }
            for stream, sync in sorted(lake.items())
        },
    }


def _models(s: Settings) -> dict[str, Any]:
    """The last training and review, and the champions, from the MLflow store (if it exists)."""
    uri = s.tracking_uri
    out: dict[str, Any] = {"tracking_uri": uri, "last_training": None, "last_review": None,
                           "champions": {}, "problem": None}  # fmt: skip
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        out["problem"] = "no MLflow store yet (nudge pipeline train creates it)"
        return out
    try:
        from mlflow import MlflowClient

        from pipelines.review import TRIGGERS_EXPERIMENT
        from pipelines.tracking import CHAMPION, TRAIN_EXPERIMENT

        client = MlflowClient(uri, registry_uri=uri)
        for key, name in (
            ("last_training", TRAIN_EXPERIMENT),
            ("last_review", TRIGGERS_EXPERIMENT),
        ):
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                runs = client.search_runs([experiment.experiment_id], max_results=1,
                                          order_by=["attributes.start_time DESC"])  # fmt: skip
                if runs:
                    latest = max(runs[0].info.end_time or 0, runs[0].info.start_time or 0)
                    out[key] = _iso(latest / 1000)
        for model in client.search_registered_models():
            version = model.aliases.get(CHAMPION)
            if version is not None:
                found = client.get_model_version(model.name, version)
                out["champions"][model.name] = {
                    "version": str(version), "registered_at": _iso(found.creation_timestamp / 1000),
                }  # fmt: skip
    except Exception as exc:  # the on-call screen shows what it can reach
        out["problem"] = f"MLflow store {uri} could not be read: {type(exc).__name__}: {exc}"
    return out


def _features(s: Settings) -> dict[str, Any]:
    """When the feature tables (what the online store serves scores from) were last built."""
    folder = s.home_dir / "features"
    tables = list(folder.glob("*.parquet")) + list(folder.glob("*/*.parquet"))
    built = max((p.stat().st_mtime for p in tables), default=None)
    return {"folder": str(folder), "last_build": _iso(built), "tables": len(tables)}


def print_status(report: dict[str, Any]) -> None:
    """The report as a few short tables; what needs attention in yellow."""
    engine = report["engine"]
    if engine["problem"]:
        console.print(f"[bold]nudge status[/] at {report['generated_at']} — engine database "
                      f"{engine['database']}: [yellow]{engine['problem']}[/]", soft_wrap=True)  # fmt: skip
    else:
        print_engine(engine, report["generated_at"])
    print_models(report["models"], report["features"])


def print_engine(engine: dict[str, Any], now: str) -> None:
    """The queues, lags and send queues."""
    inbox = engine["inbox"]
    console.print(f"[bold]nudge status[/] at {now} — engine database {engine['database']} "
                  f"(revision {engine['revision']})", soft_wrap=True)  # fmt: skip
    work = Table(title="Engine", title_justify="left", show_edge=False, show_header=False)
    work.add_column(no_wrap=True)
    work.add_column(justify="right")
    for label, value in (
        ("events pending", f"{inbox['pending']:,}"),
        ("processing lag (oldest pending)", _duration(inbox["oldest_pending_age_seconds"])),
        ("processor last active", _ago(engine["processor_last_active"], now)),
        ("actions due now", f"{engine['due_actions']:,}"),
        ("dispatch lag (oldest due)", _duration(engine["oldest_due_age_seconds"])),
        ("dispatcher last active", _ago(engine["dispatcher_last_active"], now)),
        ("timers (due later)", f"{engine['timers']:,}"),
        ("dead letters open", ", ".join(f"{k} {v:,}" for k, v in engine["dead_letters_open"].items()) or "0"),
        ("sent in the last minute", ", ".join(f"{k} {v:,}" for k, v in engine["sends_last_minute"].items()) or "0"),
    ):  # fmt: skip
        work.add_row(label, value)
    for stream, sync in engine["lake_sync"].items():
        work.add_row(f"lake sync lag ({stream})", _duration(sync["lag_seconds"]))
    pause = engine.get("marketing_paused")
    if pause:
        work.add_row("marketing sends", f"[bold red]paused[/] (complaints {pause['rate']:.2%} on "
                     f"{pause['day']}: nudge suppressions resume-marketing)")  # fmt: skip
    console.print(work)
    if engine["channels"]:
        queues = Table(title="Send queues", title_justify="left", show_edge=False)
        for name in ("channel", "pending", "due", "oldest due", "held back by rate"):
            queues.add_column(name, justify="left" if name == "channel" else "right")
        for q in engine["channels"]:
            held = f"[yellow]{q['throttled']:,}[/]" if q["throttled"] else "0"
            queues.add_row(q["channel"], f"{q['pending']:,}", f"{q['due']:,}",
                           _duration(q["oldest_due_age_seconds"]), held)  # fmt: skip
        console.print(queues)


def print_models(models: dict[str, Any], features: dict[str, Any]) -> None:
    """The MLflow store: last training and review, the champions; the last feature build."""
    ml = Table(title="Models and reviews", title_justify="left", show_edge=False, show_header=False)
    ml.add_column(no_wrap=True)
    ml.add_column()
    ml.add_row("MLflow store", models["tracking_uri"])
    if models["problem"]:
        ml.add_row("", f"[yellow]{models['problem']}[/]")
    ml.add_row("last training", models["last_training"] or "never")
    ml.add_row("last review (optimize)", models["last_review"] or "never")
    ml.add_row("last feature build", features["last_build"] or "never")
    for name, champion in sorted(models["champions"].items()):
        ml.add_row(
            f"champion {name}", f"v{champion['version']} (registered {champion['registered_at']})"
        )
    if not models["champions"] and not models["problem"]:
        ml.add_row("champions", "[yellow]none[/]")
    console.print(ml)


def _iso(epoch: float | None) -> str | None:
    return (
        None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    )


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(now - then, 0.0), 3)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _ago(when: str | None, now: str) -> str:
    if when is None:
        return "never"
    seconds = (datetime.fromisoformat(now) - datetime.fromisoformat(when)).total_seconds()
    return f"{_duration(seconds)} ago"
