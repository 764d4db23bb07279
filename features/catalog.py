"""The feature catalog generated from the model definitions: views, services, column recipes and
what each column means.

Plain Python (no Feast, no DuckDB), so that serving, training and the Feast repo share it. The
standard views (`features.schema`) are always there; a definition with feature groups of its own
— per-event-type groups, property features, its label's history — gets one more view,
``<model>_features``, whose columns are prefixed with the model's name (two models may read the
same event, and one online read fetches every served model's features at once). Its feature
service is the standard columns it picked, then its own view.

`describe` turns a feature and its value into words for reason codes: "42 days since the last
purchase", not ``recency_days``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from features.schema import (
    CHURN_VIEW,
    ENGAGEMENT_VIEW,
    LTV_VIEW,
    VIEW_FEATURES,
    Dtype,
)

if TYPE_CHECKING:
    from models.definitions import Definitions, ModelDefinition

__all__ = [
    "GROUP_VIEWS",
    "LABEL_WINDOWS",
    "Catalog",
    "CustomColumn",
    "catalog",
    "custom_view_name",
    "describe",
]

# The standard groups of a definition and the view each one is.
GROUP_VIEWS: Final = {"activity": CHURN_VIEW, "value": LTV_VIEW, "email": ENGAGEMENT_VIEW}
# Windows of the label-history group (days).
LABEL_WINDOWS: Final = (30, 90, 365)


@dataclass(frozen=True)
class CustomColumn:
    """One column of a definition's own view: how to compute it and what it means.

    `kind` is one of label_count, label_days_since, label_value, event_count, event_sum,
    event_mean, event_max, event_days_since, prop_share, prop_distinct, prop_last; `params`
    holds the event types, window, property and filter it needs.
    """

    name: str
    dtype: Dtype
    kind: str
    params: Mapping[str, Any]
    meaning: str  # a format string over {value}


@dataclass(frozen=True)
class Catalog:
    """Views (name → columns and dtypes), services (model → view → columns), custom columns."""

    views: dict[str, dict[str, Dtype]]
    services: dict[str, dict[str, tuple[str, ...]]]
    custom: dict[str, tuple[CustomColumn, ...]]  # view → its recipes
    view_of_model: dict[str, str] = field(default_factory=dict)  # model → its own view
    descriptions: dict[str, str] = field(default_factory=dict)  # model → service description

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.services)

    def model_features(self, model: str) -> dict[str, Dtype]:
        """A model's features and dtypes, in training order."""
        if model not in self.services:
            raise ValueError(
                f"unknown model {model!r}; the feature services are {list(self.services)}"
            )
        return {
            name: self.views[view][name]
            for view, names in self.services[model].items()
            for name in names
        }

    def feature_refs(self, model: str) -> list[str]:
        """A model's features as Feast references, ``view:feature``."""
        self.model_features(model)
        return [f"{view}:{n}" for view, names in self.services[model].items() for n in names]

    def view_of(self, column: str) -> str:
        """The view that holds `column`."""
        for view, columns in self.views.items():
            if column in columns:
                return view
        raise ValueError(f"no feature view has a column {column!r}")

    def meaning(self, column: str) -> str | None:
        for columns in self.custom.values():
            for col in columns:
                if col.name == column:
                    return col.meaning
        return _STANDARD_MEANINGS.get(column)


def custom_view_name(model: str) -> str:
    """The name of a definition's own view."""
    return f"{model}_features"


_CACHE: dict[int, tuple[Definitions, Catalog]] = {}


def catalog(definitions: Definitions | None = None) -> Catalog:
    """The catalog of `definitions` (default: `models.definitions.load_definitions()`).

    Raises `models.definitions.DefinitionError` (file and line) for a column of a standard group
    that does not exist or a custom column that clashes with another.
    """
    from models.definitions import load_definitions

    defs = definitions if definitions is not None else load_definitions()
    cached = _CACHE.get(id(defs))
    if cached is not None and cached[0] is defs:
        return cached[1]
    built = _build(defs)
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[id(defs)] = (defs, built)
    return built


def describe(column: str, value: float, meaning: str | None) -> str:
    """A feature's value in words, e.g. ``42 days since the last purchase``."""
    if meaning is None:
        return f"{column} = {_number(value)}"
    if value != value:  # NaN: the feature is undefined for this customer
        return meaning.split("|", 1)[1] if "|" in meaning else f"{column}: no data"
    text = meaning.split("|", 1)[0]
    return text.format(value=_number(value))


def _number(value: float) -> str:
    if value != value:
        return "unknown"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"


# -- building ------------------------------------------------------------------------------------


def _build(defs: Definitions) -> Catalog:
    from models.definitions import EventGroup, GroupRef, PropertyFeature

    views: dict[str, dict[str, Dtype]] = {name: dict(cols) for name, cols in VIEW_FEATURES.items()}
    services: dict[str, dict[str, tuple[str, ...]]] = {}
    custom: dict[str, tuple[CustomColumn, ...]] = {}
    own_views: dict[str, str] = {}
    descriptions: dict[str, str] = {}
    for definition in defs:
        located = defs.where(definition.name)
        parts: dict[str, list[str]] = {}
        columns: list[CustomColumn] = []
        label_history = False
        for index, entry in enumerate(definition.feature_entries):
            where = f"features.{index}"
            if isinstance(entry, GroupRef):
                if entry.group == "label_history":
                    label_history = True
                    continue
                view = GROUP_VIEWS[entry.group]
                chosen = list(entry.only) if entry.only is not None else list(VIEW_FEATURES[view])
                unknown = [c for c in chosen if c not in VIEW_FEATURES[view]]
                if unknown:
                    raise located.error(
                        f"{where}.only",
                        f"group {entry.group} has no column(s) {unknown}; it has "
                        f"{', '.join(VIEW_FEATURES[view])}",
                    )
                parts.setdefault(view, [])
                parts[view] += [c for c in chosen if c not in parts[view]]
            elif isinstance(entry, EventGroup):
                columns += _event_columns(definition.name, entry)
            elif isinstance(entry, PropertyFeature):
                columns.append(_property_column(definition.name, entry))
        if label_history or _needs_label_history(definition):
            columns = _label_columns(definition) + columns
        if columns:
            view = custom_view_name(definition.name)
            if view in views:
                raise located.error("name", f"the view {view!r} already exists")
            names = [c.name for c in columns]
            clash = sorted({n for n in names if names.count(n) > 1})
            if clash:
                raise located.error("features", f"feature groups repeat column(s) {clash}")
            views[view] = {c.name: c.dtype for c in columns}
            custom[view] = tuple(columns)
            own_views[definition.name] = view
            parts[view] = names
        if not parts:
            raise located.error("features", "the model has no features")
        services[definition.name] = {v: tuple(c) for v, c in parts.items()}
        horizon = definition.label.horizon_days
        descriptions[definition.name] = (definition.description or definition.name).replace(
            "{h}", str(horizon)
        )
    return Catalog(views, services, custom, own_views, descriptions)


def _needs_label_history(definition: ModelDefinition) -> bool:
    return any(b in {"recency_frequency", "label_average"} for b in definition.baseline_names)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def _events_text(events: tuple[str, ...]) -> str:
    return " or ".join(events)


def _label_text(definition: ModelDefinition) -> str:
    label = definition.label
    text = _events_text(label.event)
    if label.where:
        tests = ", ".join(
            f"{k.removeprefix('properties.')} {_test_text(v)}" for k, v in label.where.items()
        )
        text += f" ({tests})"
    return text


def _test_text(test: Any) -> str:
    symbols = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "equals": "=", "not_equals": "≠"}
    if not isinstance(test, Mapping):
        return f"= {test}"
    return " and ".join(f"{symbols.get(op, op)} {value}" for op, value in test.items())


def _label_columns(definition: ModelDefinition) -> list[CustomColumn]:
    name, label = definition.name, definition.label
    what = _label_text(definition)
    params = {"events": label.event, "where": label.where or {}, "value": label.value}
    columns = [
        CustomColumn(
            f"{name}_label_count_{w}d",
            "int64",
            "label_count",
            {**params, "window": w},
            f"{{value}} × {what} in the last {w} days",
        )
        for w in LABEL_WINDOWS
    ]
    columns.append(
        CustomColumn(
            f"{name}_label_days_since",
            "float64",
            "label_days_since",
            params,
            f"{{value}} days since the last {what}|no {what} yet",
        )
    )
    if label.value is not None:
        columns.append(
            CustomColumn(
                f"{name}_label_value_365d",
                "float64",
                "label_value",
                {**params, "window": 365},
                f"{{value}} of {label.value.removeprefix('properties.')} over {what} in the "
                "last 365 days",
            )
        )
    return columns


def _event_columns(model: str, entry: Any) -> list[CustomColumn]:
    columns: list[CustomColumn] = []
    longest = max(entry.windows)
    for event in entry.events:
        slug = _slug(event)
        base = {"events": (event,)}
        for w in entry.windows:
            columns.append(
                CustomColumn(f"{model}_{slug}_count_{w}d", "int64", "event_count",
                             {**base, "window": w}, f"{{value}} × {event} in the last {w} days")
            )  # fmt: skip
            columns.append(
                CustomColumn(f"{model}_{slug}_amount_{w}d", "float64", "event_sum",
                             {**base, "window": w},
                             f"{{value}} total amount of {event} in the last {w} days")
            )  # fmt: skip
        columns.append(
            CustomColumn(f"{model}_{slug}_amount_mean_{longest}d", "float64", "event_mean",
                         {**base, "window": longest},
                         f"{{value}} mean amount of {event} in the last {longest} days"
                         f"|no {event} in the last {longest} days")
        )  # fmt: skip
        columns.append(
            CustomColumn(f"{model}_{slug}_amount_max_{longest}d", "float64", "event_max",
                         {**base, "window": longest},
                         f"{{value}} largest amount of {event} in the last {longest} days"
                         f"|no {event} in the last {longest} days")
        )  # fmt: skip
        columns.append(
            CustomColumn(f"{model}_{slug}_days_since", "float64", "event_days_since", base,
                         f"{{value}} days since the last {event}|no {event} yet")
        )  # fmt: skip
    return columns


def _property_column(model: str, entry: Any) -> CustomColumn:
    slug, prop = _slug(entry.event), _slug(entry.property)
    params = {"events": (entry.event,), "property": entry.property, "window": entry.window}
    kind = entry.kind()
    if kind == "share":
        value = _slug(str(entry.share))
        return CustomColumn(
            f"{model}_{slug}_{prop}_share_{value}_{entry.window}d",
            "float64",
            "prop_share",
            {**params, "share": entry.share},
            f"{{value}} share of {entry.event} with {entry.property} = {entry.share} in the last "
            f"{entry.window} days|no {entry.event} in the last {entry.window} days",
        )
    if kind == "distinct":
        return CustomColumn(
            f"{model}_{slug}_{prop}_distinct_{entry.window}d",
            "int64",
            "prop_distinct",
            params,
            f"{{value}} distinct {entry.property} of {entry.event} in the last {entry.window} days",
        )
    return CustomColumn(
        f"{model}_{slug}_{prop}_last",
        "float64",
        "prop_last",
        params,
        f"{entry.property} {{value}} on the last {entry.event}|no numeric {entry.property} on "
        f"a {entry.event} yet",
    )


# What the standard columns mean (reason codes); "text|text when undefined".
_STANDARD_MEANINGS: Final[dict[str, str]] = {
    "recency_days": "{value} days since the last purchase|no purchase yet",
    "purchases_7d": "{value} purchases in the last 7 days",
    "purchases_30d": "{value} purchases in the last 30 days",
    "purchases_90d": "{value} purchases in the last 90 days",
    "purchases_365d": "{value} purchases in the last 365 days",
    "spend_7d": "{value} spent in the last 7 days",
    "spend_30d": "{value} spent in the last 30 days",
    "spend_90d": "{value} spent in the last 90 days",
    "spend_365d": "{value} spent in the last 365 days",
    "tenure_days": "a customer for {value} days",
    "ipt_mean_days": "{value} days between purchases on average|fewer than two purchases",
    "ipt_std_days": "{value} days of spread between purchases|fewer than three purchases",
    "sessions_7d": "{value} sessions in the last 7 days",
    "sessions_30d": "{value} sessions in the last 30 days",
    "days_since_last_session": "{value} days since the last session|no session yet",
    "session_trend_30d": "sessions trend ×{value} (last 30 days vs the 30 before)",
    "purchase_trend_90d": "purchases trend ×{value} (last 90 days vs the 90 before)",
    "cart_abandons_30d": "{value} abandoned carts in the last 30 days",
    "cart_abandons_90d": "{value} abandoned carts in the last 90 days",
    "refunds_90d": "{value} refunds in the last 90 days",
    "refunds_365d": "{value} refunds in the last 365 days",
    "refund_amount_365d": "{value} refunded in the last 365 days",
    "purchases_total": "{value} purchases in total",
    "spend_total": "{value} spent in total",
    "avg_order_value": "{value} average order value|no order yet",
    "max_order_value": "{value} largest order|no order yet",
    "spend_trend_90d": "spend trend {value} (last 90 days vs the 90 before, −1 to 1)",
    "bgnbd_x": "{value} repeat purchase days",
    "bgnbd_t_x": "{value} days between the first and the last purchase day|no purchase yet",
    "bgnbd_age": "{value} days since the first purchase|no purchase yet",
    "gg_monetary": "{value} spent per repeat purchase day|no repeat purchase yet",
    "emails_sent_7d": "{value} emails sent in the last 7 days",
    "emails_sent_30d": "{value} emails sent in the last 30 days",
    "emails_sent_90d": "{value} emails sent in the last 90 days",
    "emails_opened_30d": "{value} emails opened in the last 30 days",
    "emails_opened_90d": "{value} emails opened in the last 90 days",
    "emails_clicked_30d": "{value} emails clicked in the last 30 days",
    "emails_clicked_90d": "{value} emails clicked in the last 90 days",
    "emails_bounced_90d": "{value} bounced emails in the last 90 days",
    "emails_sent_decayed": "{value} recent emails sent (time-decayed)",
    "emails_opened_decayed": "{value} recent emails opened (time-decayed)",
    "emails_clicked_decayed": "{value} recent emails clicked (time-decayed)",
    "email_open_rate_90d": "{value} open rate over the last 90 days",
    "email_click_rate_90d": "{value} click rate over the last 90 days",
    "email_open_rate_decayed": "{value} recent open rate (time-decayed)",
    "days_since_last_open": "{value} days since the last email open|no email opened yet",
    "days_since_last_email": "{value} days since the last email|no email sent yet",
    "email_unsubscribed": "unsubscribed from email: {value} (1 = yes)",
    "preferred_send_hour": "opens most at {value}:00 local time (−1: unknown)",
    "preferred_send_hour_opens": "{value} opens at the preferred hour",
}
