"""Benchmark of the scoring service over loopback HTTP, against `mlflow models serve`.

    .venv/bin/python bench/scoring.py [--customers 2000] [--seconds 10] [--home DIR]

Builds a $NUDGE_HOME (simulated customers → lake → feature tables → Feast, embedded SQLite
online store → the three models fitted and registered as `champion` in a SQLite MLflow store),
unless --home names one that has them. Then, each server in a process of its own:

- `nudge serve` (serving.app): single-customer requests for all three models, paced at a fixed
  rate (100/s: the latency target's load), then closed-loop with concurrent clients for
  throughput; and 100-customer batches, closed-loop;
- batch scaling (issue 20): one customer and 1,000 customers × 3 models, one client, with
  Feast's own online read (`NUDGE_DIRECT_ONLINE_READS=false`: the code before), with the
  direct SQLite read (`NUDGE_ONLINE_SNAPSHOT_MAX_CUSTOMERS=0`), and with the direct read from
  views held in memory (the default); `--only-batches` runs only these;
- `mlflow models serve --env-manager local` on the same churn model: single-row `/invocations`
  with the same concurrency (it does no feature lookup: the features are in the request).

Both get the same load generator (raw keep-alive HTTP/1.1 sockets, one thread per connection,
a few tens of microseconds of CPU per request: on two cores the generator competes with the
server it measures). Prints a markdown table, with the CPU time the server process (and its
children) spent per request. Targets (issue 4): single-customer p99 ≤ 15 ms at 100 requests/s,
and throughput at least the MLflow server's while also doing the feature lookup.

The home is `pipelines.sample_home.prepare_home`'s, the serving tests' fixture data too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nudge.local_server import free_port, wait_until_ready
from pipelines.sample_home import PreparedHome, prepare_home

__all__ = ["main", "prepared_home", "start_scoring", "stop_server"]

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"

# -- load generation -------------------------------------------------------------------------------
#
# Both servers get the same generator: a thread per connection on raw keep-alive HTTP/1.1
# sockets. The machine has two cores, so every millisecond of CPU the generator spends is taken
# from the server it measures: an httpx client cost about 1 ms of CPU per request, the raw
# exchange a few tens of microseconds. Threads (not asyncio) because `time.sleep` keeps the
# paced schedule to ~0.1 ms, where the event loop's millisecond timers added up to 1 ms.


@dataclass
class Result:
    label: str
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    server_cpu: float = float("nan")  # CPU seconds the server process used meanwhile

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / self.requests * 1_000 if self.requests else float("nan")

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1_000


class _Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the whole answer."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 10) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.timeout = timeout
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\n{extra}"
        ).encode("latin-1")
        self.sock: Any = None
        self.buffer = b""

    def post(self, body: dict[str, Any]) -> bool:
        """Whether the request failed: not a 200, a broken connection, or no answer in time."""
        try:
            return self._exchange(json.dumps(body).encode()) != 200
        except OSError:  # timeouts and resets; a half-read answer must not leak into the next
            self.close()
            return True

    def _exchange(self, payload: bytes) -> int:
        import socket

        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(payload), payload))
        head = self._until(b"\r\n\r\n").lower()
        fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
        if b"content-length" in fields:
            self._exactly(int(fields[b"content-length"]))
        elif b"chunked" in fields.get(b"transfer-encoding", b""):
            while size := int(self._until(b"\r\n").split(b";")[0], 16):
                self._exactly(size + 2)
            self._until(b"\r\n")
        if fields.get(b"connection", b"").strip() == b"close":
            self.close()
        return int(head[9:12])

    def _until(self, delimiter: bytes) -> bytes:
        while (end := self.buffer.find(delimiter)) < 0:
            self._receive()
        data, self.buffer = self.buffer[:end], self.buffer[end + len(delimiter) :]
        return data

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._receive()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def _receive(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buffer = None, b""


def _run_clients(
    clients: int, work: Callable[[int, _Connection], None], url: str, headers: dict[str, str]
) -> None:
    """Run `work(k, connection)` for k < `clients`, each in a thread of its own."""
    connections = [_Connection(url, headers) for _ in range(clients)]
    threads = [threading.Thread(target=work, args=(k, c)) for k, c in enumerate(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for connection in connections:
        connection.close()


def closed_loop(
    label: str,
    url: str,
    make_body: Callable[[int], dict[str, Any]],
    *,
    clients: int,
    seconds: float,
    headers: dict[str, str],
) -> Result:
    """`clients` connections, each sending its next request as soon as the last one answered."""
    latencies: list[float] = []  # list.append is atomic: the threads share it
    errors: list[bool] = []
    deadline = time.perf_counter() + seconds

    def worker(offset: int, http: _Connection) -> None:
        i = offset
        while time.perf_counter() < deadline:
            body = make_body(i)
            started = time.perf_counter()
            errors.append(http.post(body))
            latencies.append(time.perf_counter() - started)
            i += clients

    begun = time.perf_counter()
    _run_clients(clients, worker, url, headers)
    return Result(label, len(latencies), sum(errors), time.perf_counter() - begun, latencies)


def paced(
    label: str,
    url: str,
    make_body: Callable[[int], dict[str, Any]],
    *,
    rate: float,
    seconds: float,
    headers: dict[str, str],
    clients: int = 8,
) -> Result:
    """Open loop: requests start on a fixed schedule (`rate` per second) whatever the answers,
    so a slow answer delays none of the others (latency is measured from the scheduled start)."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: list[bool] = []
    begun = time.perf_counter() + 0.05

    def worker(offset: int, http: _Connection) -> None:
        for i in range(offset, total, clients):
            due = begun + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            errors.append(http.post(make_body(i)))
            latencies.append(time.perf_counter() - max(due, begun))

    _run_clients(clients, worker, url, headers)
    return Result(label, len(latencies), sum(errors), time.perf_counter() - begun, latencies)


def measured(process: subprocess.Popen, scenario: Callable[[], Result]) -> Result:
    """`scenario()`, with the CPU time `process` spent while it ran."""
    before = _cpu_seconds(process.pid)
    result = scenario()
    result.server_cpu = _cpu_seconds(process.pid) - before
    return result


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process and its descendants (`mlflow models
    serve` runs its server in a child process); Linux /proc, nan elsewhere."""
    stats: dict[int, tuple[int, float]] = {}  # pid → (parent pid, CPU seconds)
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        ticks = int(fields[11]) + int(fields[12])
        stats[int(entry.parent.name)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    if pid not in stats:
        return float("nan")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats[current][1]
        todo.extend(child for child, (parent, _) in stats.items() if parent == current)
    return total


# -- servers ---------------------------------------------------------------------------------------


def stop_server(process: subprocess.Popen) -> None:
    """Terminate a server process (killed if it has not ended within 20 s)."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# (label, NUDGE_DIRECT_ONLINE_READS, views in memory) of the batch-scaling servers.
READS = (
    ("Feast read", False, False),
    ("direct read", True, False),
    ("direct read, views in memory", True, True),
)


def start_scoring(
    prepared: PreparedHome,
    port: int,
    *,
    direct: bool = True,
    in_memory: bool = True,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`nudge serve` on `prepared` in a process of its own, ready; `extra_env` adds to or
    overrides its environment (e.g. the production Feast store's settings)."""
    env = {
        **os.environ,
        "NUDGE_DIRECT_ONLINE_READS": "true" if direct else "false",
        "NUDGE_ONLINE_SNAPSHOT_MAX_CUSTOMERS": "1000000" if in_memory else "0",
        "NUDGE_HOME": str(prepared.home),
        "NUDGE_API_KEY": API_KEY,
        "MLFLOW_TRACKING_URI": prepared.tracking_uri,
        "NUDGE_SERVE_PORT": str(port),
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "serving"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
    )
    wait_until_ready(f"http://127.0.0.1:{port}/readyz", process, 120, "nudge serve", poll=0.2)
    return process


def start_mlflow(prepared: PreparedHome, port: int) -> subprocess.Popen:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": prepared.tracking_uri,
        # It execs `uvicorn` from PATH and unpickles models.pyfunc.ScoringModel from the repo.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    mlflow_cli = venv_bin / "mlflow"
    process = subprocess.Popen(
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            f"models:/churn/{prepared.versions['churn']}",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=prepared.home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_ready(f"http://127.0.0.1:{port}/ping", process, 120, "mlflow models serve", poll=0.2)
    return process


# -- main ------------------------------------------------------------------------------------------


def run(
    prepared: PreparedHome, *, seconds: float, clients: int, rate: float, only_batches: bool = False
) -> list[Result]:
    """Every measurement, each server alone on the machine while it is measured."""
    from features.schema import model_features
    from features.store import online_features, open_store

    ids = prepared.known_ids
    headers = {"X-API-Key": API_KEY}
    results = []

    def one(i: int) -> dict[str, Any]:
        return {"customer_ids": [ids[i % len(ids)]]}

    def batch(i: int) -> dict[str, Any]:
        start = (i * 100) % max(len(ids) - 100, 1)
        return {"customer_ids": ids[start : start + 100]}

    def thousand(i: int) -> dict[str, Any]:
        start = (i * 1000) % max(len(ids) - 1000, 1)
        return {"customer_ids": ids[start : start + 1000]}

    def scenarios(
        server: subprocess.Popen,
        url: str,
        auth: dict[str, str],
        cases: list[tuple[str, Callable[[int], dict[str, Any]], dict[str, Any]]],
    ) -> None:
        """Warm up, then run each (label, body, load) case, with the server's CPU time."""
        closed_loop("warm-up", url, cases[0][1], clients=2, seconds=2, headers=auth)
        for label, make_body, load in cases:
            generator: Callable[..., Result] = paced if "rate" in load else closed_loop
            scenario = partial(
                generator, label, url, make_body, seconds=seconds, headers=auth, **load
            )
            results.append(measured(server, scenario))

    # Batch scaling, issue 20: one customer and 1,000 customers, one client, Feast's own online
    # read (the code before), the direct one, and the direct one from views held in memory,
    # each in a server of its own.
    for read, direct, in_memory in READS:
        port = free_port()
        server = start_scoring(prepared, port, direct=direct, in_memory=in_memory)
        try:
            scenarios(
                server,
                f"http://127.0.0.1:{port}/v1/scores",
                headers,
                [
                    (f"nudge serve ({read}) · 1 customer × 3 models · 1 client", one,
                     {"clients": 1}),
                    (f"nudge serve ({read}) · 1,000 customers × 3 models · 1 client", thousand,
                     {"clients": 1}),
                ],
            )  # fmt: skip
        finally:
            stop_server(server)
    if only_batches:
        return results

    port = free_port()
    server = start_scoring(prepared, port)
    try:
        scenarios(
            server,
            f"http://127.0.0.1:{port}/v1/scores",
            headers,
            [
                (f"nudge serve · 1 customer × 3 models · paced {rate:g}/s", one, {"rate": rate}),
                (
                    f"nudge serve · 1 customer × 3 models · {clients} clients",
                    one,
                    {"clients": clients},
                ),
                (
                    f"nudge serve · 100 customers × 3 models · {clients} clients",
                    batch,
                    {"clients": clients},
                ),
            ],
        )
    finally:
        stop_server(server)

    # The MLflow server gets the same churn feature rows the service would have looked up.
    store = open_store(prepared.home, production=False)
    features = list(model_features("churn"))
    rows = online_features(store, "churn", ids[:500])[features]
    payloads = [
        {"dataframe_split": json.loads(rows.iloc[[i]].to_json(orient="split", index=False))}
        for i in range(len(rows))
    ]

    def row(i: int) -> dict[str, Any]:
        return payloads[i % len(payloads)]

    port = free_port()
    server = start_mlflow(prepared, port)
    try:
        scenarios(
            server,
            f"http://127.0.0.1:{port}/invocations",
            {},
            [
                (f"mlflow models serve · churn, 1 row · paced {rate:g}/s", row, {"rate": rate}),
                (
                    f"mlflow models serve · churn, 1 row · {clients} clients",
                    row,
                    {"clients": clients},
                ),
            ],
        )
    finally:
        stop_server(server)
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | requests | errors | p50 ms | p99 ms | throughput req/s | server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.label} | {r.requests} | {r.errors} | {r.quantile(0.5):.1f} | "
            f"{r.quantile(0.99):.1f} | {r.throughput:.0f} | {r.cpu_ms_per_request:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, help="A prepared NUDGE_HOME to reuse (or create).")
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument(
        "--only-batches", action="store_true", help="Only the batch-scaling scenarios."
    )
    args = parser.parse_args(argv)

    with bench_home(args.home, "nudge-bench-") as home:
        started = time.perf_counter()
        prepared = prepared_home(home, args.customers)
        print(f"prepared {home} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        results = run(
            prepared,
            seconds=args.seconds,
            clients=args.clients,
            rate=args.rate,
            only_batches=args.only_batches,
        )
    print(table(results))
    print()
    for read, _, _ in READS:
        one = next(r for r in results if f"({read}) · 1 customer" in r.label)
        many = next(r for r in results if f"({read}) · 1,000" in r.label)
        ratio = many.quantile(0.5) / one.quantile(0.5)
        rate = many.throughput * 1_000
        print(
            f"- {read}: 1,000-batch p50 {many.quantile(0.5):.0f} ms = {ratio:.1f}× one customer's "
            f"{one.quantile(0.5):.1f} ms (target ≤ 15×); {rate:,.0f} customers/s "
            f"(target ≥ 10,000): {'met' if ratio <= 15 and rate >= 10_000 else 'NOT met'}"
        )
    if args.only_batches:
        print(f"- cores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}")
        return
    single = next(r for r in results if "paced" in r.label and "nudge" in r.label)
    ours = next(r for r in results if "1 customer" in r.label and "clients" in r.label)
    theirs = next(r for r in results if "mlflow" in r.label and "clients" in r.label)
    print()
    print(
        f"- single-customer p99 at {args.rate:g}/s: {single.quantile(0.99):.1f} ms "
        f"(target ≤ 15 ms): {'met' if single.quantile(0.99) <= 15 else 'NOT met'}"
    )
    ratio = ours.throughput / theirs.throughput if theirs.throughput else float("nan")
    print(
        f"- throughput ratio nudge / mlflow (single customer, {args.clients} clients): "
        f"{ratio:.2f} (target ≥ 1): {'met' if ratio >= 1 else 'NOT met'}"
    )
    print(f"- cores: {os.cpu_count()}; load average at the end: {os.getloadavg()[0]:.2f}")


@contextmanager
def bench_home(home: Path | None, prefix: str) -> Iterator[Path]:
    """`home` when given (kept, reused by later runs), else a scratch one removed afterwards."""
    if home is not None:
        yield home
        return
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield scratch / "home"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def prepared_home(home: Path, customers: int) -> PreparedHome:
    """Reuse a home this script prepared before (its facts are in bench.json), else build one."""
    facts = home / "bench.json"
    if facts.exists():
        raw = json.loads(facts.read_text())
        return PreparedHome(
            home=home.resolve(),
            tracking_uri=raw["tracking_uri"],
            versions=raw["versions"],
            known_ids=raw["known_ids"],
            unknown_ids=raw["unknown_ids"],
            snapshot=pd.Timestamp(raw["snapshot"]),
        )
    prepared = prepare_home(home, customers=customers)
    facts.write_text(
        json.dumps(
            {
                "tracking_uri": prepared.tracking_uri,
                "versions": prepared.versions,
                "known_ids": prepared.known_ids,
                "unknown_ids": prepared.unknown_ids,
                "snapshot": prepared.snapshot.isoformat(),
            }
        )
    )
    return prepared


if __name__ == "__main__":
    main()
