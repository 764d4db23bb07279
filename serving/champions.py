"""The models being served: each registered model's alias (``champion``) loaded from MLflow,
watched, and swapped in place when the alias moves.

A swap replaces one immutable `Champion` in a new dict that is assigned in one step, so a request
that already picked up the old champion finishes with it and the next one sees the new one: no
request is dropped or blocked. A version that fails to load (or fails its probe) never replaces
the one serving; the failure is kept for `/v1/models` and logged, and tried again later.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from engine.dsl.score_models import is_uplift_model
from features.schema import (
    ENTITY_KEY,
    TIMESTAMP_COLUMN,
    VIEW_FEATURES,
    Dtype,
    feature_refs,
    model_features,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from models.pyfunc import ScoringModel
    from serving.settings import ServingSettings

__all__ = ["Champion", "Champions", "LoadError", "ModelState"]

log = logging.getLogger("serving.models")

# What `/v1/models` reports for a model (`serving.schemas.ModelInfo.status`).
ModelStatus: TypeAlias = Literal["serving", "serving_previous", "not_loaded"]

# Rows of the latest feature snapshot scored to estimate a model's population prior.
PRIOR_SAMPLE = 5_000


class LoadError(RuntimeError):
    """A model version that cannot be served (unreadable artifact, wrong features, bad probe)."""


@dataclass(frozen=True)
class Champion:
    """One loaded model version, ready to score; immutable so that swaps are atomic."""

    name: str
    version: str
    run_id: str | None
    trained_at: datetime | None
    loaded_at: datetime
    holdout_metrics: dict[str, float]
    model: ScoringModel  # unwrapped from its pyfunc
    features: dict[str, Dtype]
    prior: float
    prior_send_hour: int | None
    # What each feature means, in training order (reason codes in words; `features.catalog`).
    meanings: tuple[str | None, ...] = ()
    # Where each feature is read online, ``view:feature`` in training order: a definition's
    # feature service, or (an uplift model, which no definition declares) its own columns.
    refs: tuple[str, ...] = ()

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``score`` (and ``best_send_hour`` for engagement), one row per row of `frame`: the
        pyfunc path, the reference `score` is checked against when the version loads."""
        # The unwrapped ScoringModel: the features already carry the training dtypes and order,
        # so the pyfunc wrapper's per-call schema enforcement would only add latency.
        return self.model.predict(None, frame[list(self.features)])

    def score(
        self, matrix: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64] | None]:
        """`predict`'s ``score`` and ``best_send_hour`` (None unless engagement) of the rows of a
        matrix of the features in training order: the per-request path, no DataFrame."""
        return self.model.score_matrix(matrix)

    def contributions(self, matrix: NDArray[np.floating]) -> NDArray[np.float64]:
        """LightGBM per-feature contributions (pred_contrib) to the raw score, then the bias."""
        return self.model.contributions_matrix(matrix)

    def explained(
        self, matrix: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64] | None, NDArray[np.float64]]:
        """`score` and `contributions` of the same rows, in one model evaluation where the model
        can (`explained_matrix`), else two."""
        explained = getattr(self.model, "explained_matrix", None)
        if explained is not None:
            return explained(matrix)
        values, hours = self.score(matrix)
        return values, hours, self.contributions(matrix)


@dataclass
class ModelState:
    """What `/v1/models` says about one model: served version, alias target, last failure."""

    name: str
    champion: Champion | None = None
    alias_version: str | None = None
    failed_version: str | None = None
    failure: str | None = None
    failed_at: datetime | None = None
    _failed_clock: float = field(default=0.0, repr=False)

    @property
    def status(self) -> ModelStatus:
        if self.champion is None:
            return "not_loaded"
        if self.alias_version is not None and self.alias_version != self.champion.version:
            return "serving_previous"
        return "serving"


class Champions:
    """Loads, serves and hot-swaps the aliased version of each configured model."""

    def __init__(
        self,
        settings: ServingSettings,
        *,
        population: Callable[[Champion], pd.DataFrame | None] | None = None,
        on_swap: Callable[[Champion], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        from mlflow import MlflowClient

        self.settings = settings
        self.alias = settings.model_alias
        uri = settings.tracking_uri
        self.client: MlflowClient = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self._population = population or (lambda _model: None)
        self._on_swap = on_swap or (lambda _champion: None)
        self._on_failure = on_failure or (lambda _model: None)
        # NUDGE_MODELS when set; else the registry says (`discover`): every defined model with a
        # version under the alias, found again at each refresh.
        self._fixed = settings.models is not None
        self._states = {name: ModelState(name) for name in settings.models or ()}
        self._defined: list[str] = []  # the definitions' names, as `discover` last read them
        self._reported_missing: set[str] = set()  # defined, not registered: logged once each
        # Readers take this dict once per request; swaps assign a new one (never mutate it).
        self._served: dict[str, Champion] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- serving ------------------------------------------------------------------------------

    def served(self) -> Mapping[str, Champion]:
        """The champions of this instant; a request keeps this mapping for its whole life."""
        return self._served

    @property
    def models(self) -> list[str]:
        """The models this service serves: NUDGE_MODELS, else those found in the registry."""
        return list(self._states)

    @property
    def expected(self) -> list[str]:
        """The served models, then the defined ones not registered yet (readiness lists them,
        not loaded, so that a fresh service says which models it waits for)."""
        return self.models + [name for name in self._defined if name not in self._states]

    def states(self) -> list[ModelState]:
        return [self._states[name] for name in self.models]

    @property
    def ready(self) -> bool:
        """Every model serves — except, when the registry says what to serve, a trigger's
        uplift model: one that cannot load (trained on columns the online store lacks, say) is
        reported in `/v1/models` but must not take the churn, LTV and engagement scores down."""
        required = [m for m in self.models if self._fixed or not is_uplift_model(m)]
        return bool(required) and all(name in self._served for name in required)

    def discover(self) -> list[str]:
        """Add every model of the definitions that is registered, and every trigger's uplift
        model (``uplift_<trigger>``) that is (the registry, not a list in code, says what
        exists); returns the new names."""
        if self._fixed:
            return []
        from models.definitions import load_definitions

        try:
            defined = load_definitions().names
            self._defined = list(defined)
            registered = self._registered()
        except Exception as exc:  # registry unreachable: serve what is known, ask again later
            log.warning("cannot list the registered models: %s", exc)
            return []
        # A registered model without a version under the alias is listed too: `/v1/models`
        # says why it is not served, and the service is not ready until it is.
        for name in defined:
            if name not in registered and name not in self._reported_missing:
                self._reported_missing.add(name)
                log.warning(
                    "model %s is defined but not registered in MLflow yet (nudge pipeline train "
                    "registers it); it is served once it has a champion", name,
                )  # fmt: skip
        uplift = sorted(name for name in registered if is_uplift_model(name))
        wanted = [*defined, *(name for name in uplift if name not in defined)]
        found = [name for name in wanted if name in registered and name not in self._states]
        for name in found:
            self._states[name] = ModelState(name)
        return found

    def _registered(self) -> set[str]:
        """Every registered model's name (the registry answers a page at a time)."""
        names: set[str] = set()
        token: str | None = None
        while True:
            page = self.client.search_registered_models(max_results=1_000, page_token=token)
            names.update(m.name for m in page)
            token = page.token
            if not token:
                return names

    # -- loading ------------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Ask the registry where each alias points; load and swap in what moved.

        A version that failed is retried after `model_retry_seconds`, or at once with `force`.
        """
        with self._refresh_lock:
            self.discover()
            for name in self.models:
                self._refresh_one(self._states[name], force=force)

    def start_polling(self) -> None:
        """Check the aliases every `model_poll_seconds` in a daemon thread until `stop`."""
        if self._poller is not None:
            return
        self._stop.clear()
        self._poller = threading.Thread(target=self._poll, name="champion-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        """Stop polling (waits for a load in progress to finish)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
            self._poller = None

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.model_poll_seconds):
            try:
                self.refresh()
            except Exception:  # a poller that dies silently would freeze the served versions
                log.exception("champion poll failed; the served versions are unchanged")

    def _refresh_one(self, state: ModelState, *, force: bool) -> None:
        from mlflow.exceptions import MlflowException

        try:
            target = str(self.client.get_model_version_by_alias(state.name, self.alias).version)
        except MlflowException as exc:  # no such alias or model: keep what serves
            state.alias_version = None
            if state.champion is None:
                self._fail(state, None, f"no version has alias {self.alias!r}: {exc.message}")
            return
        except Exception as exc:  # registry unreachable: keep what serves, ask again later
            log.warning("cannot reach the model registry for %s: %s", state.name, exc)
            if state.champion is None:
                self._fail(state, None, f"model registry unreachable: {exc}")
            return
        state.alias_version = target
        if state.champion is not None and state.champion.version == target:
            return
        retry_at = state._failed_clock + self.settings.model_retry_seconds
        if state.failed_version == target and not force and time.monotonic() < retry_at:
            return
        try:
            champion = self.load(state.name, target)
        except Exception as exc:  # any failure to load must leave the serving version in place
            self._fail(state, target, f"{type(exc).__name__}: {exc}")
            return
        previous = state.champion
        state.champion = champion
        state.failed_version = state.failure = state.failed_at = None
        self._served = {**self._served, state.name: champion}
        self._on_swap(champion)
        log.info(
            "serving %s version %s (was %s)",
            state.name,
            champion.version,
            previous.version if previous else "none",
        )

    def _fail(self, state: ModelState, version: str | None, error: str) -> None:
        state.failed_version = version
        state.failure = error[:2_000]
        state.failed_at = datetime.now(UTC)
        state._failed_clock = time.monotonic()
        self._on_failure(state.name)
        serving = state.champion.version if state.champion else None
        if serving:
            log.error(
                "%s version %s failed to load; still serving version %s: %s",
                state.name,
                version,
                serving,
                state.failure,
            )
        else:
            log.error("%s: nothing to serve: %s", state.name, state.failure)

    def load(self, name: str, version: str) -> Champion:
        """Load, check and probe one registered version; raises `LoadError` when unusable."""
        import mlflow.pyfunc

        details = self.client.get_model_version(name, version)
        location = self.client.get_model_version_download_uri(name, version)
        pyfunc = mlflow.pyfunc.load_model(location)
        try:
            model = pyfunc.unwrap_python_model()
        except Exception as exc:
            raise LoadError(f"{name} v{version} is not a python-function ScoringModel") from exc
        names = list(getattr(model, "feature_names", []))
        if not all(hasattr(model, m) for m in ("score_matrix", "contributions_matrix")):
            raise LoadError(
                f"{name} v{version} has no NumPy scoring path (score_matrix, "
                "contributions_matrix): it is not a models.pyfunc.ScoringModel"
            )
        if is_uplift_model(name):
            features, refs = _own_layout(name, version, names)
        else:
            features, refs = model_features(name), tuple(feature_refs(name))
        if names != list(features):
            raise LoadError(
                f"{name} v{version} expects features {names[:5]}…, not the feature service's "
                "(in training order); it cannot score online features"
            )
        trained_at, metrics = self._run_facts(details.run_id)
        champion = Champion(
            name=name,
            version=str(version),
            run_id=details.run_id,
            trained_at=trained_at
            or datetime.fromtimestamp(details.creation_timestamp / 1000, tz=UTC),
            loaded_at=datetime.now(UTC),
            holdout_metrics=metrics,
            model=model,
            features=features,
            prior=math.nan,
            prior_send_hour=None,
            meanings=_meanings(features),
            refs=refs,
        )
        return _with_prior(champion, self._population(champion))

    def _run_facts(self, run_id: str | None) -> tuple[datetime | None, dict[str, float]]:
        """When the run started, and its holdout metrics (``model.<metric>`` in training runs)."""
        if not run_id:
            return None, {}
        try:
            run = self.client.get_run(run_id)
        except Exception:  # the run may be gone; the version still serves
            return None, {}
        metrics = run.data.metrics
        own = {k.removeprefix("model."): v for k, v in metrics.items() if k.startswith("model.")}
        chosen = own or dict(metrics)
        started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
        return started, {k: float(v) for k, v in chosen.items() if math.isfinite(v)}


def _own_layout(
    name: str, version: str, names: list[str]
) -> tuple[dict[str, Dtype], tuple[str, ...]]:
    """The features and online refs of a model that no definition declares (an uplift model):
    each of its features must be a column of a standard feature view."""
    view_of = {f: view for view, columns in VIEW_FEATURES.items() for f in columns}
    unknown = [f for f in names if f not in view_of]
    if not names or unknown:
        raise LoadError(
            f"{name} v{version}: feature(s) {unknown[:5] or names} are not columns of the "
            f"standard feature views ({', '.join(VIEW_FEATURES)}); it cannot score online features"
        )
    features = {f: VIEW_FEATURES[view_of[f]][f] for f in names}
    return features, tuple(f"{view_of[f]}:{f}" for f in names)


def _meanings(features: Mapping[str, Dtype]) -> tuple[str | None, ...]:
    from features.catalog import catalog

    found = catalog()
    return tuple(found.meaning(name) for name in features)


def population_from_tables(
    settings: ServingSettings,
) -> Callable[[Champion], pd.DataFrame | None]:
    """A sample of the latest feature snapshot of a champion's features, from the feature
    tables under home (the Parquet files Feast's offline store reads); None where they cannot
    be read."""
    cache: dict[tuple[str, ...], pd.DataFrame | None] = {}

    def population(champion: Champion) -> pd.DataFrame | None:
        if champion.refs not in cache:
            cache[champion.refs] = _latest_population(settings, champion)
        return cache[champion.refs]

    return population


def _latest_population(settings: ServingSettings, champion: Champion) -> pd.DataFrame | None:
    from features.compute import read_feature_table

    keys = [ENTITY_KEY, TIMESTAMP_COLUMN]
    model = champion.name
    per_view: dict[str, list[str]] = {}
    for ref in champion.refs:
        view, name = ref.split(":", 1)
        per_view.setdefault(view, []).append(name)
    try:
        frame: pd.DataFrame | None = None
        for view, names in per_view.items():
            table = read_feature_table(view, settings.home_dir)
            table = table.loc[table[TIMESTAMP_COLUMN] == table[TIMESTAMP_COLUMN].max()]
            part = table[[*keys, *names]]
            frame = part if frame is None else frame.merge(part, on=keys, how="inner")
    except (OSError, KeyError, ValueError) as exc:
        log.warning("no feature tables for the %s prior (%s); using a no-history row", model, exc)
        return None
    if frame is None or frame.empty:
        return None
    frame = frame.sample(min(len(frame), PRIOR_SAMPLE), random_state=0)
    return frame[list(champion.features)].astype(champion.features)


def _with_prior(champion: Champion, population: pd.DataFrame | None) -> Champion:
    """Probe the model and fill in its population prior: the mean score over the latest
    snapshot's population, or (no tables) its score of a customer without history."""
    probe = _no_history_row(champion.features)
    frame = population if population is not None and not population.empty else probe
    rows = pd.concat([probe, frame], ignore_index=True)
    try:
        out = champion.predict(rows)
        fast, fast_hours = champion.score(champion.model.matrix(rows))
    except Exception as exc:
        raise LoadError(f"{champion.name} v{champion.version} failed its probe: {exc}") from exc
    scores = np.asarray(out["score"], dtype=np.float64)
    if len(scores) != len(frame) + 1 or not np.isfinite(scores).all():
        raise LoadError(f"{champion.name} v{champion.version} returned non-finite scores")
    # Requests are scored from NumPy, not through pyfunc: a version whose two paths disagree
    # must not serve (both feed LightGBM the same float64 matrix, so they agree exactly).
    hours_agree = ("best_send_hour" not in out.columns and fast_hours is None) or (
        fast_hours is not None and np.array_equal(fast_hours, out["best_send_hour"].to_numpy())
    )
    if not hours_agree or not np.allclose(fast, scores, rtol=1e-12, atol=0):
        raise LoadError(
            f"{champion.name} v{champion.version}: its NumPy scoring path disagrees with "
            "its pyfunc predict"
        )
    prior = float(scores[1:].mean())
    send_hour = None
    if "best_send_hour" in out.columns:
        hours = np.asarray(out["best_send_hour"], dtype=np.int64)
        # The hour a customer without history gets (the learned population hour).
        send_hour = int(hours[0])
    return replace(champion, prior=prior, prior_send_hour=send_hour)


def _no_history_row(features: Mapping[str, Dtype]) -> pd.DataFrame:
    """A customer with no events: counts 0, undefined floats NaN, no preferred hour."""
    from features.schema import UNKNOWN_HOUR

    row: dict[str, Any] = {}
    for name, dtype in features.items():
        if dtype == "int64":
            row[name] = UNKNOWN_HOUR if name == "preferred_send_hour" else 0
        else:
            row[name] = np.nan
    return pd.DataFrame([row]).astype(dict(features))
