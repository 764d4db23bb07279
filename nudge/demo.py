"""The later stages of `nudge demo`: the scoring service, the engine in a closed loop, the optimizer.

Composition and output only; the work is done by serving/, engine/, pipelines/.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from nudge.console import console, print_closed_loop
from nudge.local_server import free_port, wait_until_ready

if TYPE_CHECKING:
    import pandas as pd

    from nudge.settings import Settings

__all__ = ["engine_stage", "optimizer_stage", "report_stage", "score_sample", "scoring_service"]


@contextmanager
def scoring_service(settings: Settings) -> Iterator[tuple[str, str]]:
    """`nudge serve` on a free loopback port for the duration of the block: yields (url, api key)."""
    port = free_port()
    key = secrets.token_urlsafe(24)
    env = {**os.environ, "NUDGE_HOME": str(settings.home.resolve()), "NUDGE_API_KEY": key}
    if settings.secret_problem():  # the demo needs no set-up: a throw-away secret for this run
        env["NUDGE_SIGNING_SECRET"] = secrets.token_urlsafe(32)
    log = (settings.home.resolve() / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "nudge.cli", "serve", "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", process, 180, f"the scoring service (log: {log.name})")
        yield url, key
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def score_sample(url: str, key: str, customer_ids: list[str]) -> None:
    """Score a few customers with reasons and print them as a table."""
    import httpx

    response = httpx.post(f"{url}/v1/scores", json={"customer_ids": customer_ids, "explain": True},
                          headers={"X-API-Key": key}, timeout=30)  # fmt: skip
    response.raise_for_status()
    table = Table(title="Scores of a sample of customers", title_justify="left", show_edge=False)
    for column in ("customer", "model", "score", "band", "top reasons"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for item in response.json()["results"]:
        for model, score in (item.get("scores") or {}).items():
            reasons = ", ".join(
                f"{r['feature']} {r['contribution']:+.2f}" for r in (score.get("reasons") or [])[:2]
            )
            table.add_row(
                item["customer_id"],
                model,
                f"{score['value']:.3f}",
                str(score.get("band")),
                reasons or "-",
            )
    console.print(table)


def engine_stage(
    settings: Settings, simulation_dir: Path, start: Any, end: Any, scoring: tuple[str, str] | None
) -> Any:
    """The simulated period after training through the example triggers, customers answering."""
    from engine.runtime.replay import read_event_file
    from pipelines.closed_loop import run_period

    start_ts, end_ts = start.timestamp(), end.timestamp()
    database = settings.home.resolve() / "demo-engine.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)  # each demo replays the period afresh
    events = (
        e for e in read_event_file(simulation_dir / "events.parquet")
        if start_ts <= _epoch(e["timestamp"]) < end_ts
    )  # fmt: skip
    with console.status("engine: replaying the period …") as status:
        report = run_period(
            events=events, lake_root=settings.lake_dir, simulation_dir=simulation_dir,
            engine_url=f"sqlite:///{database}", triggers_dir=settings.trigger_folder,
            templates_dir=settings.template_folder, outbox_dir=settings.home.resolve() / "demo-outbox",
            start=start, end=end, scoring_url=scoring[0] if scoring else None, api_key=scoring[1] if scoring else None,
            progress=lambda at, n: status.update(f"engine: {at:%Y-%m-%d %H:%M} · {n:,} events"),
        )  # fmt: skip
    print_closed_loop(report, start, end)
    return report


def optimizer_stage(settings: Settings, truth: pd.DataFrame, planted: Any) -> None:
    """Run the optimize flow on the demo's engine log; recommendations beside the planted truth."""
    from engine.store import EngineDB
    from engine.store.customers import load_profiles, upsert_profiles
    from pipelines.prefect_env import configure_prefect

    database = settings.home.resolve() / "demo-engine.db"
    store = EngineDB.open(f"sqlite:///{database}")
    # The simulation's latent segment, as a profile attribute, so the analysis can split by it.
    profiles = store.read(load_profiles, truth["customer_id"])
    store.write(
        upsert_profiles,
        {
            c: {**profiles.get(c, {"customer_id": c}), "sim_segment": s}
            for c, s in zip(truth["customer_id"], truth["segment"], strict=True)
        },
        time.time(),
    )
    store.dispose()
    configure_prefect(settings.home)
    from pipelines.flows.optimize import optimize

    with console.status("optimizer: analysing experiments, logging to MLflow …"):
        summaries = optimize(home=str(settings.home_dir), engine_url=f"sqlite:///{database}",
                             tracking_uri=settings.tracking_uri, segment_by="sim_segment",
                             min_users=300)["experiments"]  # fmt: skip
    for summary in summaries:
        table = Table(title=f"Experiment {summary['trigger_id']} ({summary['exposures']:,} customers assigned)",
                      title_justify="left", show_edge=False)  # fmt: skip
        for column in ("segment", "recommendation", "planted best", "why"):
            table.add_column(column)
        for rec in summary["recommendations"]:
            best = (
                planted.best_delay(rec["segment"]) if rec["segment"] in planted.segments else None
            )
            table.add_row(
                rec["segment"],
                rec["variant"] or "none",
                f"d{best}" if best else "none (equal)",
                rec["reason"],
            )
        console.print(table)
    report_stage(settings, f"sqlite:///{database}")


def report_stage(settings: Settings, engine_url: str) -> None:
    """Every trigger's performance on the demo's log (``nudge triggers report``), and the
    commands that show it again and open MLflow on the reviews."""
    from engine.store import EngineDB
    from engine.store.reporting import trigger_report
    from nudge.report_cli import print_report

    store = EngineDB.open(engine_url)
    try:
        rows = store.read(trigger_report, window=settings.attribution_hours * 3600)
    finally:
        store.dispose()
    print_report(rows, since=None, window=f"{settings.attribution_hours:g}h")
    console.print(
        f"again: [bold]NUDGE_ENGINE_DB={engine_url} nudge triggers report[/]", soft_wrap=True
    )
    console.print(
        f"MLflow (experiments nudge-triggers and experiments/<trigger>): [bold]nudge mlflow ui[/] "
        f"(store {settings.tracking_uri}), then http://127.0.0.1:5000",
        soft_wrap=True,
    )


def _epoch(value: Any) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(value) if isinstance(value, str) else value).timestamp()
