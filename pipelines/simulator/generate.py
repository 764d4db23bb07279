"""Generate customers and their event history from a model with planted truth, vectorised.

The purchase process is BG/NBD-like: each customer buys at a Gamma-distributed rate while active
and, after each purchase, drops out with a Beta-distributed chance; order values are Gamma with a
Gamma-distributed mean. Around purchases sit browsing sessions (page and product views, cart adds,
abandoned carts), refunds, and marketing email with opens and clicks that depend on latent
engagement, fatigue and the local hour. Everything is drawn with numpy from one seeded generator,
so a seed gives the same data set every time.

Times are carried as float days since `start` (UTC midnight) and become timestamps at the end.

One module (~700 lines) on purpose: the draws share one random generator in a fixed order, which is
what makes a seed reproduce a data set; spreading them over modules would hide that order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from engine.events import EventType
from engine.lake import LAKE_SCHEMA
from pipelines.simulator.planted import RESPONSE_TYPES, PlantedConfig
from pipelines.simulator.zones import ZONE_COUNTRIES, ZONE_NAMES, ZONE_WEIGHTS, utc_offset_table

__all__ = [
    "Simulation",
    "SimulationParams",
    "part_count",
    "simulate",
    "simulate_part",
    "simulate_parts",
]

MINUTE = 1 / 1440
HOUR = 1 / 24

# Share of sessions started in each local hour: quiet nights, a lunch bump, busy evenings.
DIURNAL = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1.2,
        2.5,
        3.5,
        4,
        4.2,
        4.5,
        5.2,
        5,
        4.5,
        4.3,
        4.5,
        5,
        5.8,
        6.5,
        6.8,
        6,
        4,
        2,
    ]
)
DIURNAL = DIURNAL / DIURNAL.sum()
FIRST_NAMES = np.array(
    ["Ada", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
     "Mateo", "Nina", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei",
     "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carla", "Dev"]
)  # fmt: skip
CHANNELS = np.array(["organic", "paid_search", "social", "referral", "email", "affiliate"])
CHANNEL_WEIGHTS = np.array([0.35, 0.25, 0.18, 0.1, 0.07, 0.05])
DEVICES = np.array(["mobile", "desktop", "tablet"])
N_PRODUCTS = 400

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SimulationParams:
    """The inputs that determine a simulated data set."""

    n_customers: int
    days: int
    seed: int
    start: pd.Timestamp
    # A part of a larger population (`simulate_parts`): its customers are numbered from
    # `first_customer`, their ids padded for `population` customers, and their draws come from
    # a stream of the part's own. The defaults are a whole, one-piece simulation.
    first_customer: int = 1
    population: int | None = None

    @property
    def is_part(self) -> bool:
        return self.population is not None

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=self.days)


@dataclass
class Simulation:
    """A simulated data set: events (lake schema), customer profiles, and the planted truth."""

    params: SimulationParams
    planted: PlantedConfig
    events: pa.Table
    customers: pd.DataFrame
    truth: pd.DataFrame

    @property
    def effects(self) -> pd.DataFrame:
        """The planted effect table: segment × delay → conversion uplift."""
        rows = []
        for segment, table in self.planted.uplift.items():
            best = self.planted.best_delay(segment)
            for delay, uplift in table.items():
                rows.append(
                    {
                        "segment": segment,
                        "delay": delay,
                        "uplift": uplift,
                        "conversion_baseline": self.planted.segments[segment].conversion_baseline,
                        "is_best": delay == best,
                    }
                )
        return pd.DataFrame(rows)


def simulate(
    n_customers: int,
    days: int,
    seed: int,
    start: str | pd.Timestamp = "2025-01-01",
    planted: PlantedConfig | None = None,
    progress: Progress | None = None,
) -> Simulation:
    """Draw `n_customers` customers and `days` days of their events from the planted model."""
    _check_sizes(n_customers, days)
    planted = planted or PlantedConfig()
    start_ts = utc_midnight(start)
    return _simulate(SimulationParams(n_customers, days, seed, start_ts), planted, progress)


def simulate_parts(
    n_customers: int,
    days: int,
    seed: int,
    part_customers: int,
    start: str | pd.Timestamp = "2025-01-01",
    planted: PlantedConfig | None = None,
    progress: Progress | None = None,
) -> Iterator[Simulation]:
    """`n_customers` drawn as parts of at most `part_customers` customers, one part at a time,
    so that memory is bounded by one part (a million customers × 365 days is ~108 M events:
    ~55 GiB in one piece, about a tenth of that per 100k-customer part).

    Every customer is drawn from the same model as by `simulate`; each part draws from its own
    stream (the seed and the part's first customer), so the parts of a seed are the same every time, but the whole is not the
    one-piece data set of that seed. Customer ids run on across parts (c0000001 … c1000000) and
    event ids carry the part, so parts never collide.
    """
    say = progress or (lambda _msg: None)
    parts = part_count(n_customers, days, part_customers)
    for index in range(parts):
        first, size = _part_bounds(index, n_customers, part_customers)
        say(f"part {index + 1}/{parts}: customers {first + 1:,}–{first + size:,}")
        yield simulate_part(index, n_customers, days, seed, part_customers, start, planted)


def part_count(n_customers: int, days: int, part_customers: int) -> int:
    """How many parts `simulate_parts` draws (the sizes checked)."""
    if part_customers < 1:
        raise ValueError(f"part_customers must be at least 1 (got {part_customers})")
    _check_sizes(n_customers, days)
    return -(-n_customers // part_customers)


def _part_bounds(index: int, n_customers: int, part_customers: int) -> tuple[int, int]:
    """How many customers come before part `index`, and how many it has."""
    first = index * part_customers
    return first, min(part_customers, n_customers - first)


def _check_sizes(n_customers: int, days: int) -> None:
    if n_customers < 1:
        raise ValueError(f"n_customers must be at least 1 (got {n_customers})")
    if days < 1:
        raise ValueError(f"days must be at least 1 (got {days})")


def simulate_part(
    index: int,
    n_customers: int,
    days: int,
    seed: int,
    part_customers: int,
    start: str | pd.Timestamp = "2025-01-01",
    planted: PlantedConfig | None = None,
) -> Simulation:
    """Part `index` of `simulate_parts` alone (what a worker process draws)."""
    parts = part_count(n_customers, days, part_customers)
    if not 0 <= index < parts:
        raise ValueError(f"part index must be in [0, {parts}) (got {index})")
    first, size = _part_bounds(index, n_customers, part_customers)
    params = SimulationParams(
        size, days, seed, utc_midnight(start), first_customer=first + 1, population=n_customers
    )
    return _simulate(params, planted or PlantedConfig(), None)


def utc_midnight(start: str | pd.Timestamp) -> pd.Timestamp:
    """The UTC midnight that starts the day `start` (naive values are UTC)."""
    stamp = pd.Timestamp(start)
    return (stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")).normalize()


def _simulate(
    params: SimulationParams, planted: PlantedConfig, progress: Progress | None
) -> Simulation:
    n_customers, days, seed, start_ts = params.n_customers, params.days, params.seed, params.start
    say = progress or (lambda _msg: None)
    # A part draws from a stream of its own; a whole simulation from the seed alone (as ever).
    stream = [seed, 1_000_003, params.first_customer] if params.is_part else seed
    rng = np.random.default_rng(stream)
    offsets = utc_offset_table(start_ts, days)

    say("drawing customers")
    people = _draw_customers(rng, n_customers, days, planted)
    if planted.response_types is not None:
        # A stream of its own: with response types on, every other draw stays as without them.
        people["response_type"] = _draw_response_types(
            np.random.default_rng([*np.atleast_1d(stream), 18]), people, planted
        )
    say("drawing purchases and dropout")
    purchase_owner, purchase_t, dropout = _draw_purchases(rng, people, days, offsets)
    people["dropout"] = dropout
    say("drawing browsing sessions")
    parts = [_signups(people)]
    parts += _shopping_events(rng, people, purchase_owner, purchase_t, days, offsets, planted)
    say("drawing marketing email")
    email_parts, unsubscribed_at = _email_events(rng, people, days, offsets, planted)
    parts += email_parts
    people["unsubscribed"] = unsubscribed_at
    say("assembling events")
    events = _assemble(parts, params, people, planted)
    truth = _truth_table(people, params, planted, purchase_owner)
    customers = _profile_table(people, params)
    return Simulation(params, planted, events, customers, truth)


# -- customers -------------------------------------------------------------------------------------


def _draw_customers(
    rng: np.random.Generator, n: int, days: int, planted: PlantedConfig
) -> dict[str, np.ndarray]:
    specs = list(planted.segments.values())
    shares = np.array([s.share for s in specs])
    seg = rng.choice(len(specs), size=n, p=shares / shares.sum())

    def per_segment(attr: str) -> np.ndarray:
        return np.array([getattr(s, attr) for s in specs], dtype=float)[seg]

    shape = per_segment("purchase_rate_shape")
    rate = rng.gamma(shape, 1.0 / per_segment("purchase_interval_days") / shape)
    dropout_prob = rng.beta(per_segment("dropout_a"), per_segment("dropout_b"))
    order_mean = per_segment("order_value_mean") * rng.gamma(6.0, 1 / 6.0, size=n)
    engagement_mean = per_segment("email_engagement")
    concentration = 8.0
    engagement = rng.beta(engagement_mean * concentration, (1 - engagement_mean) * concentration)
    preferred_hour = (per_segment("preferred_hour") + np.round(rng.normal(0, 1.5, size=n))) % 24
    return {
        "segment": seg,
        "signup": rng.random(n) * days * planted.acquisition_share,
        "zone": rng.choice(len(ZONE_NAMES), size=n, p=ZONE_WEIGHTS),
        "rate": rate,
        "dropout_prob": dropout_prob,
        "order_mean": order_mean,
        "engagement": engagement,
        "preferred_hour": preferred_hour.astype(int),
        "consent_email": rng.random(n) < planted.consent_email_rate,
        "device": rng.choice(len(DEVICES), size=n, p=[0.55, 0.35, 0.10]),
        "channel": rng.choice(len(CHANNELS), size=n, p=CHANNEL_WEIGHTS),
        "first_name": np.where(  # None as a 0-d object array: numpy's ArrayLike leaves None out
            rng.random(n) < 0.06,
            np.array(None, dtype=object),
            FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), size=n)],
        ),
        "sessions_per_purchase": per_segment("sessions_per_purchase"),
        "cart_add_rate": per_segment("cart_add_rate"),
    }


def _draw_response_types(
    rng: np.random.Generator, people: dict[str, np.ndarray], planted: PlantedConfig
) -> np.ndarray:
    """Each customer's response type (an index into RESPONSE_TYPES): per segment, its shares of
    sure things among the frequent buyers, then of persuadables among the most and of sleeping
    dogs among the least engaged of the others, the lost causes between (rankings blended with
    chance by ``signal``)."""
    assert planted.response_types is not None
    types = planted.response_types
    code = {kind: index for index, kind in enumerate(RESPONSE_TYPES)}
    kinds = np.full(len(people["segment"]), code["lost_cause"], dtype=int)
    noise = rng.random((2, len(kinds)))

    def blended(values: np.ndarray, chance: np.ndarray) -> np.ndarray:
        rank = (np.argsort(np.argsort(values)) + 0.5) / len(values)
        return types.signal * rank + (1 - types.signal) * chance

    for index, segment in enumerate(planted.segment_names):
        members = np.flatnonzero(people["segment"] == index)
        if not len(members):
            continue
        share = types.shares[segment]
        counts = {k: round(share.get(k, 0.0) * len(members)) for k in RESPONSE_TYPES}
        by_rate = members[np.argsort(-blended(people["rate"][members], noise[0, members]))]
        kinds[by_rate[: counts["sure_thing"]]] = code["sure_thing"]
        rest = by_rate[counts["sure_thing"] :]
        if not len(rest):
            continue
        by_engagement = rest[np.argsort(-blended(people["engagement"][rest], noise[1, rest]))]
        kinds[by_engagement[: counts["persuadable"]]] = code["persuadable"]
        dogs = min(counts["sleeping_dog"], len(by_engagement) - counts["persuadable"])
        if dogs > 0:
            kinds[by_engagement[len(by_engagement) - dogs :]] = code["sleeping_dog"]
    return kinds


# -- purchases and dropout -------------------------------------------------------------------------


def _draw_purchases(
    rng: np.random.Generator, people: dict[str, np.ndarray], days: int, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Purchase times per customer, cut at each customer's planted dropout (NaN: still active)."""
    signup = people["signup"]
    owner, t = _poisson_process(rng, signup, np.full_like(signup, days), people["rate"])
    # Leave room before each purchase for the session that leads to it (at most 40 minutes).
    t = _to_daytime(rng, t, people["zone"][owner], offsets, lo=signup[owner] + 40 * MINUTE, hi=days)
    owner, t = _sorted_by_owner(owner, t)
    counts = np.bincount(owner, minlength=len(signup))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(t)) - first[owner]
    # After each purchase the customer leaves with chance p: the K-th purchase is the last.
    last = rng.geometric(people["dropout_prob"])
    keep = rank < last[owner]
    dropout = np.full(len(signup), np.nan)
    dies = np.nonzero(counts >= last)[0]
    dropout[dies] = t[first[dies] + last[dies] - 1]
    return owner[keep], t[keep], dropout


def _shopping_events(
    rng: np.random.Generator,
    people: dict[str, np.ndarray],
    purchase_owner: np.ndarray,
    purchase_t: np.ndarray,
    days: int,
    offsets: np.ndarray,
    planted: PlantedConfig,
) -> list[pa.Table]:
    signup, dropout = people["signup"], people["dropout"]
    active_end = np.where(np.isnan(dropout), days, dropout)
    browse_rate = people["rate"] * people["sessions_per_purchase"] + 0.01
    own_a, t_a = _poisson_process(rng, signup, active_end, browse_rate)
    # After dropout a customer rarely comes back to look, and never buys.
    own_d, t_d = _poisson_process(rng, active_end, np.full_like(signup, days), browse_rate * 0.1)
    owner = np.concatenate([own_a, own_d])
    t = _to_daytime(
        rng, np.concatenate([t_a, t_d]), people["zone"][owner], offsets, lo=signup[owner], hi=days
    )
    n_browse, n_buy = len(t), len(purchase_t)
    session_owner = np.concatenate([owner, purchase_owner])
    lead = rng.uniform(5, 40, size=n_buy) * MINUTE
    session_start = np.concatenate([t, purchase_t - lead])
    session_id = np.arange(n_browse + n_buy)
    device = np.where(
        rng.random(len(session_owner)) < 0.8,
        people["device"][session_owner],
        rng.integers(0, len(DEVICES), size=len(session_owner)),
    )
    parts = [
        _table(
            EventType.SESSION_START, session_owner, session_start, session=session_id, device=device
        )
    ]

    # Page views in every session, product views in most.
    n_pages = 1 + rng.poisson(1.5, size=len(session_id))
    s = np.repeat(session_id, n_pages)
    parts.append(
        _table(
            EventType.PAGE_VIEW,
            session_owner[s],
            session_start[s] + rng.uniform(0.5, 4, len(s)) * MINUTE,
            session=s,
            device=device[s],
            properties=_json(("page", _prefixed("/c/", rng.integers(0, 20, len(s))))),
        )
    )
    n_products = rng.poisson(1.2, size=len(session_id))
    n_products[n_browse:] = np.maximum(n_products[n_browse:], 1)
    s = np.repeat(session_id, n_products)
    product = _zipf_products(rng, len(s))
    parts.append(
        _table(
            EventType.PRODUCT_VIEW,
            session_owner[s],
            session_start[s] + rng.uniform(1, 4.5, len(s)) * MINUTE,
            session=s,
            device=device[s],
            properties=_json(("product_id", _prefixed("p", product)), ("price", _PRICES[product])),
        )
    )

    # Browsing sessions that add to cart end in an abandoned cart an hour later.
    adds = np.nonzero(rng.random(n_browse) < people["cart_add_rate"][owner])[0]
    cart_value = np.round(rng.gamma(4.0, people["order_mean"][owner[adds]] / 4.0), 2)
    product = _zipf_products(rng, len(adds))
    add_t = session_start[adds] + 5 * MINUTE
    parts.append(
        _table(
            EventType.CART_ADD,
            owner[adds],
            add_t,
            session=adds,
            device=device[adds],
            properties=_json(("product_id", _prefixed("p", product)), ("price", _PRICES[product])),
        )
    )
    abandon_t = add_t + HOUR
    ok = abandon_t < days
    parts.append(
        _table(
            EventType.CART_ABANDONED,
            owner[adds[ok]],
            abandon_t[ok],
            session=adds[ok],
            device=device[adds[ok]],
            amount=cart_value[ok],
            properties=_json(
                ("cart_value", cart_value[ok]),
                ("items", 1 + rng.poisson(0.6, ok.sum())),
                ("product_id", _prefixed("p", product[ok])),
            ),
        )
    )

    # Purchase sessions: cart, checkout, order.
    buy_session = session_id[n_browse:]
    amount = np.round(rng.gamma(4.0, people["order_mean"][purchase_owner] / 4.0), 2)
    amount = np.maximum(amount, 1.0)
    items = 1 + rng.poisson(0.8, n_buy)
    order_id = _prefixed("o", np.arange(n_buy))
    product = _zipf_products(rng, n_buy)
    buy_device = device[n_browse:]
    parts.append(
        _table(
            EventType.CART_ADD,
            purchase_owner,
            purchase_t - lead / 2,
            session=buy_session,
            device=buy_device,
            properties=_json(("product_id", _prefixed("p", product)), ("price", _PRICES[product])),
        )
    )
    parts.append(
        _table(
            EventType.CHECKOUT_STARTED,
            purchase_owner,
            purchase_t - 2 * MINUTE,
            session=buy_session,
            device=buy_device,
            amount=amount,
            properties=_json(("cart_value", amount), ("items", items)),
        )
    )
    parts.append(
        _table(
            EventType.PURCHASE_COMPLETED,
            purchase_owner,
            purchase_t,
            session=buy_session,
            device=buy_device,
            amount=amount,
            properties=_json(("order_id", order_id), ("total", amount), ("items", items)),
        )
    )

    refunded = np.nonzero(rng.random(n_buy) < planted.refund_rate)[0]
    refund_t = purchase_t[refunded] + rng.uniform(3, 20, len(refunded))
    ok = refund_t < days
    refunded = refunded[ok]
    parts.append(
        _table(
            EventType.REFUND,
            purchase_owner[refunded],
            refund_t[ok],
            amount=amount[refunded],
            properties=_json(
                ("order_id", pc.take(order_id, refunded)), ("amount", amount[refunded])
            ),
        )
    )
    return parts


def _signups(people: dict[str, np.ndarray]) -> pa.Table:
    owner = np.arange(len(people["signup"]))
    return _table(
        EventType.SIGNUP,
        owner,
        people["signup"],
        properties=_json(("channel", pa.array(CHANNELS[people["channel"]]))),
    )


# -- marketing email -------------------------------------------------------------------------------


def _email_events(
    rng: np.random.Generator,
    people: dict[str, np.ndarray],
    days: int,
    offsets: np.ndarray,
    planted: PlantedConfig,
) -> tuple[list[pa.Table], np.ndarray]:
    n = len(people["signup"])
    rate = np.where(people["consent_email"], planted.campaign_sends_per_week / 7, 0.0)
    owner, t = _poisson_process(rng, people["signup"], np.full(n, float(days)), rate)
    # Campaigns go out on the hour, between 07:00 and 21:00 local time.
    zone = people["zone"][owner]
    day = np.floor(t).astype(int)
    offset = offsets[zone, np.clip(day + 1, 0, offsets.shape[1] - 1)]
    local_hour = rng.integers(7, 22, size=len(t))
    t = np.floor(t + offset) + local_hour * HOUR - offset
    valid = (t >= people["signup"][owner]) & (t < days)
    owner, t, local_hour = owner[valid], t[valid], local_hour[valid]
    order = np.lexsort((t, owner))
    owner, t, local_hour = owner[order], t[order], local_hour[order]

    # Fatigue: how many marketing emails this customer got in the 7 days before this one.
    key = owner * (10.0 * days + 100) + t
    recent = np.arange(len(t)) - np.searchsorted(key, key - 7, side="left")
    dropout = people["dropout"][owner]
    inactive = ~np.isnan(dropout) & (t > dropout)

    # Unsubscribing happens from one email; no marketing email follows it.
    p_unsub = planted.unsubscribe_rate * (1 + recent) * np.where(inactive, 2.0, 1.0)
    if planted.response_types is not None:  # sleeping dogs: mail pushes them away
        extra = np.array([planted.response_types.types[k].unsubscribe for k in RESPONSE_TYPES])
        p_unsub = p_unsub + extra[people["response_type"][owner]]
    unsub = rng.random(len(t)) < p_unsub
    first_unsub = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_unsub, owner[unsub], np.nonzero(unsub)[0])
    keep = np.arange(len(t)) <= first_unsub[owner]
    owner, t, local_hour, recent, inactive = (
        a[keep] for a in (owner, t, local_hour, recent, inactive)
    )
    is_unsub = np.zeros(len(t), dtype=bool)
    is_unsub[np.searchsorted(np.nonzero(keep)[0], first_unsub[first_unsub < len(keep)])] = True

    message = _prefixed("m", np.arange(len(t)))
    props = _json(("message_id", message), ("campaign", pa.array(np.full(len(t), "newsletter"))))
    parts = [_table(EventType.EMAIL_SENT, owner, t, properties=props, source="esp")]
    bounced = rng.random(len(t)) < planted.bounce_rate
    is_unsub &= ~bounced
    for etype, mask in ((EventType.EMAIL_BOUNCED, bounced), (EventType.EMAIL_DELIVERED, ~bounced)):
        idx = np.nonzero(mask)[0]
        parts.append(
            _table(etype, owner[idx], t[idx] + MINUTE, properties=props.take(idx), source="esp")
        )

    distance = np.abs(local_hour - people["preferred_hour"][owner])
    distance = np.minimum(distance, 24 - distance)
    p_open = (
        people["engagement"][owner]
        * (0.35 + 0.65 * np.exp(-(distance**2) / (2 * 2.5**2)))
        / (1 + 0.35 * recent)
        * np.where(inactive, 0.4, 1.0)
    )
    opened = ~bounced & ((rng.random(len(t)) < p_open) | is_unsub)
    open_t = t + MINUTE + rng.exponential(1.5 * HOUR, len(t))
    opened &= open_t < days
    idx = np.nonzero(opened)[0]
    parts.append(
        _table(
            EventType.EMAIL_OPENED,
            owner[idx],
            open_t[idx],
            properties=props.take(idx),
            source="esp",
        )
    )
    p_click = 0.12 + 0.35 * people["engagement"][owner]
    click_t = open_t + rng.exponential(10 * MINUTE, len(t))
    clicked = opened & (rng.random(len(t)) < p_click) & (click_t < days)
    idx = np.nonzero(clicked)[0]
    parts.append(
        _table(
            EventType.EMAIL_CLICKED,
            owner[idx],
            click_t[idx],
            properties=props.take(idx),
            source="esp",
        )
    )
    unsub_t = open_t + 2 * MINUTE
    idx = np.nonzero(is_unsub & opened & (unsub_t < days))[0]
    parts.append(
        _table(
            EventType.UNSUBSCRIBED,
            owner[idx],
            unsub_t[idx],
            source="esp",
            properties=_json(
                ("message_id", message.take(idx)),
                ("list", pa.array(np.full(len(idx), "marketing"))),
            ),
        )
    )
    unsubscribed_at = np.full(n, np.nan)
    unsubscribed_at[owner[idx]] = unsub_t[idx]
    return parts, unsubscribed_at


# -- assembly --------------------------------------------------------------------------------------


def _assemble(
    parts: list[pa.Table],
    params: SimulationParams,
    people: dict[str, np.ndarray],
    planted: PlantedConfig,
) -> pa.Table:
    raw = pa.concat_tables(parts)
    t = raw["t"].to_numpy()
    owner = raw["owner"].to_numpy()
    # Follow-up events of the last minutes may fall past the window; the window is the truth.
    order = np.lexsort((owner, t))
    order = order[t[order] < params.days]
    raw = raw.take(order)
    t, owner = t[order], owner[order]
    micros = params.start.value // 1000 + np.round(t * 86_400_000_000).astype(np.int64)
    tag = _dataset_tag(params, planted)
    ids = _customer_ids(params)
    session = raw["session"].to_numpy()
    session_id = pc.if_else(
        pa.array(session >= 0),
        _prefixed(f"{tag}-s", np.maximum(session, 0)),
        pa.nulls(len(session), pa.string()),
    )
    columns = {
        "event_id": _prefixed(f"{tag}-", np.arange(raw.num_rows)),
        "customer_id": pc.take(ids, pa.array(owner)),
        "event_type": _decode(raw["event_type"], [t.value for t in EventType]),
        "timestamp": pa.array(micros, type=pa.int64()).view(pa.timestamp("us", tz="UTC")),
        "properties": pc.fill_null(raw["properties"], "{}"),
        "amount": raw["amount"],
        "session_id": session_id,
        "source": _decode(raw["source"], SOURCES),
        "device": _decode(raw["device"], list(DEVICES)),
        "location": pa.nulls(raw.num_rows, pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=LAKE_SCHEMA)


def _truth_table(
    people: dict[str, np.ndarray],
    params: SimulationParams,
    planted: PlantedConfig,
    purchase_owner: np.ndarray,
) -> pd.DataFrame:
    n = len(people["signup"])
    truth = pd.DataFrame(
        {
            "customer_id": _customer_ids(params).to_numpy(zero_copy_only=False),
            "segment": np.array(planted.segment_names)[people["segment"]],
            "signup_at": _timestamps(params, people["signup"]),
            "timezone": ZONE_NAMES[people["zone"]],
            "purchase_rate_per_day": people["rate"],
            "dropout_prob": people["dropout_prob"],
            "dropout_at": _timestamps(params, people["dropout"]),
            "alive_at_end": np.isnan(people["dropout"]),
            "order_value_mean": people["order_mean"],
            "email_engagement": people["engagement"],
            "preferred_hour": people["preferred_hour"],
            "consent_email": people["consent_email"],
            "unsubscribed_at": _timestamps(params, people["unsubscribed"]),
            "n_purchases": np.bincount(purchase_owner, minlength=n),
        }
    )
    if planted.response_types is not None:
        # The oracle: each customer's type, conversion chance without an email, and the email's
        # uplift at the best delay (the responder applies it scaled by the delay's factor).
        types = planted.response_types.types
        kind = np.array(RESPONSE_TYPES)[people["response_type"]]
        truth["response_type"] = kind
        truth["conversion_baseline"] = [types[k].baseline for k in kind]
        truth["oracle_uplift"] = [
            min(max(types[k].baseline + types[k].uplift, 0.0), 1.0) - types[k].baseline
            for k in kind
        ]
    return truth


def _profile_table(people: dict[str, np.ndarray], params: SimulationParams) -> pd.DataFrame:
    ids = _customer_ids(params).to_numpy(zero_copy_only=False)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "email": np.char.add(ids.astype(str), "@example.com"),
            "first_name": people["first_name"],
            "timezone": ZONE_NAMES[people["zone"]],
            "country": ZONE_COUNTRIES[people["zone"]],
            "consent_email": people["consent_email"] & np.isnan(people["unsubscribed"]),
            "consent_sms": False,
            "signup_at": _timestamps(params, people["signup"]),
            "acquisition_channel": CHANNELS[people["channel"]],
        }
    )


# -- vectorised helpers ----------------------------------------------------------------------------


def _poisson_process(
    rng: np.random.Generator, starts: np.ndarray, ends: np.ndarray, rates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points of independent Poisson processes on [start_i, end_i): (owner index, time)."""
    span = np.maximum(ends - starts, 0.0)
    counts = rng.poisson(rates * span)
    owner = np.repeat(np.arange(len(starts)), counts)
    return owner, starts[owner] + rng.random(len(owner)) * span[owner]


def _to_daytime(
    rng: np.random.Generator,
    t: np.ndarray,
    zone: np.ndarray,
    offsets: np.ndarray,
    lo: np.ndarray,
    hi: float,
) -> np.ndarray:
    """Move each time to a diurnally drawn hour of the same local day, kept within [lo, hi)."""
    day = np.clip(np.floor(t).astype(int) + 1, 0, offsets.shape[1] - 1)
    offset: NDArray[np.float64] = offsets[zone, day]
    hour = rng.choice(24, size=len(t), p=DIURNAL) + rng.random(len(t))
    moved = np.floor(t + offset) + hour * HOUR - offset
    return np.clip(moved, lo + MINUTE, hi - MINUTE)


def _sorted_by_owner(owner: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((t, owner))
    return owner[order], t[order]


_PRICES = np.round(np.random.default_rng(7).lognormal(3.3, 0.6, N_PRODUCTS), 2)


def _zipf_products(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.zipf(1.3, n) - 1) % N_PRODUCTS


def _prefixed(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _json(*fields: tuple[str, np.ndarray | pa.Array]) -> pa.Array:
    """JSON objects built column-wise: strings are quoted, numbers written as they are."""
    pieces: list[pa.Array | str] = []
    for i, (name, values) in enumerate(fields):
        pieces.append(("{" if i == 0 else ",") + f'"{name}":')
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        if pa.types.is_string(array.type):
            pieces += ['"', array, '"']
        else:
            pieces.append(pc.cast(array, pa.string()))
    pieces.append("}")
    return pc.binary_join_element_wise(*pieces, "")


def _table(
    event_type: EventType,
    owner: np.ndarray,
    t: np.ndarray,
    *,
    session: np.ndarray | None = None,
    device: np.ndarray | None = None,
    amount: np.ndarray | None = None,
    properties: pa.Array | None = None,
    source: str = "web",
) -> pa.Table:
    """One kind of event as columns; types, sources and devices travel as small integer codes."""
    n = len(owner)
    return pa.table(
        {
            "owner": pa.array(owner, type=pa.int64()),
            "t": pa.array(t, type=pa.float64()),
            "event_type": pa.array(np.full(n, _TYPE_CODES[event_type], dtype=np.int8)),
            "session": pa.array(
                session if session is not None else np.full(n, -1), type=pa.int64()
            ),
            "device": pa.array(device if device is not None else np.full(n, -1), type=pa.int8()),
            "amount": pa.array(
                amount if amount is not None else np.full(n, np.nan), from_pandas=True
            ),
            "properties": properties if properties is not None else pa.nulls(n, pa.string()),
            "source": pa.array(np.full(n, SOURCES.index(source), dtype=np.int8)),
        }
    )


_TYPE_CODES = {t: i for i, t in enumerate(EventType)}
SOURCES = ["web", "esp"]


def _decode(codes: pa.ChunkedArray, labels: list[str]) -> pa.Array:
    """Small integer codes (-1: missing) → strings, via a dictionary array."""
    values = codes.combine_chunks()
    values = pc.if_else(pc.less(values, 0), pa.nulls(len(values), pa.int8()), values)
    return pa.DictionaryArray.from_arrays(values, pa.array(labels)).cast(pa.string())


def _customer_ids(params: SimulationParams) -> pa.Array:
    width = max(7, len(str(params.population or params.n_customers)))
    numbers = np.arange(params.first_customer, params.first_customer + params.n_customers)
    return pc.binary_join_element_wise(
        "c", pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width, "0"), ""
    )


def _timestamps(params: SimulationParams, days: np.ndarray) -> pd.Series:
    micros = np.round(np.nan_to_num(days, nan=0.0) * 86_400_000_000).astype(np.int64)
    stamps = pd.to_datetime(params.start.value // 1000 + micros, unit="us", utc=True)
    return pd.Series(stamps).where(~np.isnan(days))


def _dataset_tag(params: SimulationParams, planted: PlantedConfig) -> str:
    """A short id of the inputs, so that two different simulations never share event ids."""
    size = params.population or params.n_customers
    digest = hashlib.blake2b(
        f"{size}|{params.days}|{params.seed}|{params.start.isoformat()}|{planted.model_dump_json()}".encode(),
        digest_size=4,
    ).hexdigest()
    return f"sim{params.seed}-{digest}" + (f"-p{params.first_customer}" if params.is_part else "")
