"""Seeded simulator of e-commerce behaviour with experience-driven churn.

Each user has latent traits (visit rate, propensity to buy, price level, category
taste, coupon affinity, how often things go wrong for them). Sessions follow a
view -> cart -> purchase funnel; orders may be cancelled, returned or reviewed.
The daily churn hazard rises after bad experiences (cancellations, returns, low
ratings) and long gaps; a churning user fades out over days before going silent,
as real users do. Ground truth (who churned, when) is kept for evaluation.

Items: within a category, popularity falls off as a power law, and each user has a
few favourite items per category that they come back to (and so buy again); an
order carries its cart as ``items``. Those choices draw on a second random stream
of their own, so every other draw, and with it every event's type, time, price and
category, is what it was before items had any structure.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson

from retention_model.events import Event, EventType, OrderLine, encode_event
from retention_model.features.state import DAY_MS, HOUR_MS

__all__ = ["SimConfig", "SimUser", "encode_stream", "simulate", "simulate_users"]

#: Items per category, the power of their popularity's fall-off, a user's favourites per category.
ITEMS_PER_CATEGORY = 50
ITEM_POPULARITY_POWER = 1.0
FAVOURITES_PER_CATEGORY = 3
_ITEM_CDF = np.cumsum(1.0 / np.arange(1, ITEMS_PER_CATEGORY + 1) ** ITEM_POPULARITY_POWER)
_ITEM_CDF /= _ITEM_CDF[-1]

BAD_PAYLOADS: tuple[bytes, ...] = (
    b'{"event_id": "x", "user_id": "u1", "type": "view"',  # truncated JSON
    b'{"event_id": "x", "user_id": 12.5, "type": "view", "ts": 1700000000000}',  # wrong type
    b'{"event_id": "x", "user_id": "u1", "type": "purchase", "ts": 1700000000000, "price": -5}',
    b'{"event_id": "x", "type": "view", "ts": 1700000000000}',  # missing user_id
    b'["not", "an", "object"]',
    b'{"event_id": "x", "user_id": "u1", "type": "view", "ts": "yesterday"}',
    b"\xff\xfe\x00garbage",  # invalid UTF-8
    b'{"event_id": "x", "user_id": "u1", "type": "add_to_cart", "ts": 1700000000000, "quantity": 1e9}',
)


@dataclass(frozen=True)
class SimConfig:
    """Size and seed of a simulation."""

    users: int = 2000
    days: int = 180
    seed: int = 7
    start: datetime = field(default_factory=lambda: datetime(2025, 1, 1, tzinfo=UTC))
    categories: int = 16
    #: Share of users who sign up in the first days (the rest arrive uniformly).
    early_share: float = 0.35


@dataclass
class SimUser:
    """Ground truth about one simulated user."""

    user_id: str
    signup_ms: int
    churn_ms: int | None  # when the fade-out began; None if still active at the end
    silent_ms: int | None  # from when no more events come (after the last one)
    #: Latent traits (coupon_affinity, buy_prob, mishap, ...): the ground truth that
    #: the campaign simulation's coupon effects depend on.
    traits: dict[str, float] = field(default_factory=dict)
    #: Category -> share of the user's attention (the same taste their views are drawn from).
    taste: dict[str, float] = field(default_factory=dict)
    #: Items the user keeps coming back to, a few per category.
    favourite_items: frozenset[str] = frozenset()


def _user_events(uid: int, config: SimConfig, rng: np.random.Generator) -> tuple[list[Event], SimUser]:
    start_ms = int(config.start.timestamp() * 1000)
    user_id = f"u{uid:06d}"
    if rng.random() < config.early_share:
        signup_day = float(rng.uniform(0, 5))
    else:
        signup_day = float(rng.uniform(0, config.days * 0.8))
    visit_rate = float(rng.lognormal(math.log(0.35), 0.6))
    buy_prob = float(rng.beta(2.0, 6.0))
    price_level = float(rng.lognormal(math.log(25.0), 0.6))
    taste = rng.dirichlet(np.full(config.categories, 0.3))
    coupon_affinity = float(rng.beta(1.0, 4.0))
    mishap = float(rng.beta(1.0, 14.0))
    base_hazard = float(rng.lognormal(math.log(0.006), 0.6))

    # Item choice has its own stream: the main one draws exactly what it did before.
    item_rng = np.random.default_rng([config.seed, uid, 21])
    loyalty = float(item_rng.beta(2.0, 2.0))
    favourites = np.searchsorted(_ITEM_CDF, item_rng.random((config.categories, FAVOURITES_PER_CATEGORY)))

    def pick_item(cat: int, draw: int) -> str:
        """The main stream's uniform draw, turned into a popular or a favourite item."""
        if item_rng.random() < loyalty:
            index = int(favourites[cat, int(item_rng.integers(0, FAVOURITES_PER_CATEGORY))])
        else:
            index = int(np.searchsorted(_ITEM_CDF, (draw + item_rng.random()) / ITEMS_PER_CATEGORY))
        return f"i{cat:02d}-{index:03d}"

    events: list[Event] = []
    seq = 0

    def emit(event_type: EventType, ts_ms: int, **fields: object) -> None:
        nonlocal seq
        seq += 1
        events.append(Event(event_id=f"{user_id}-{seq}", user_id=user_id, type=event_type, ts_ms=ts_ms, **fields))  # type: ignore[arg-type]

    churn_ms: int | None = None
    silent_ms: int | None = None
    fade_days = float(rng.uniform(5, 25))
    bad_until = -1.0
    last_purchase_day = signup_day
    day = signup_day
    first = True
    while day < config.days:
        day_ms = start_ms + int(day * DAY_MS)
        if churn_ms is None:
            hazard = base_hazard
            if day < bad_until:
                hazard *= 4.0
            if day - last_purchase_day > 60:
                hazard *= 1.6
            if rng.random() < hazard:
                churn_ms = day_ms
        fade = 1.0
        if churn_ms is not None:
            faded = (day_ms - churn_ms) / DAY_MS / fade_days
            if faded >= 1.0:
                silent_ms = churn_ms + int(fade_days * DAY_MS)
                break
            fade = 1.0 - faded
        n_sessions = 1 if first else int(rng.poisson(visit_rate * fade))
        first = False
        for _ in range(n_sessions):
            t = day_ms + int(rng.uniform(0, DAY_MS - 2 * HOUR_MS))
            session_id = f"{user_id}-s{seq}"
            emit(EventType.SESSION_START, t, session_id=session_id)
            cart: list[tuple[str, str, float, int]] = []
            for _ in range(int(rng.poisson(0.7))):
                t += int(rng.uniform(5_000, 60_000))
                emit(EventType.SEARCH, t, session_id=session_id)
            for _ in range(1 + int(rng.geometric(0.35))):
                t += int(rng.uniform(5_000, 120_000))
                cat = int(rng.choice(config.categories, p=taste))
                category = f"c{cat:02d}"
                item = pick_item(cat, int(rng.integers(0, ITEMS_PER_CATEGORY)))
                price = round(float(rng.lognormal(math.log(price_level), 0.4)), 2)
                emit(EventType.VIEW, t, session_id=session_id, item_id=item, category=category, price=price)
                if rng.random() < 0.3:
                    t += int(rng.uniform(2_000, 30_000))
                    qty = 1 + int(rng.poisson(0.3))
                    emit(
                        EventType.ADD_TO_CART,
                        t,
                        session_id=session_id,
                        item_id=item,
                        category=category,
                        price=price,
                        quantity=qty,
                    )
                    if rng.random() < 0.2:
                        t += int(rng.uniform(2_000, 30_000))
                        emit(
                            EventType.REMOVE_FROM_CART,
                            t,
                            session_id=session_id,
                            item_id=item,
                            category=category,
                            price=price,
                            quantity=qty,
                        )
                    else:
                        cart.append((item, category, price, qty))
            # Deal seekers leave more carts behind, waiting for a discount.
            if cart and rng.random() < min(0.9, buy_prob * 2.5) * (1.0 - 0.6 * coupon_affinity):
                t += int(rng.uniform(10_000, 120_000))
                coupon_id = None
                if rng.random() < coupon_affinity * 0.8:
                    coupon_id = f"cp-{int(rng.integers(0, 20))}"
                    emit(EventType.COUPON_REDEEM, t, session_id=session_id, coupon_id=coupon_id)
                    t += 1_000
                order_id = f"{user_id}-o{seq}"
                total = round(sum(p * q for _, _, p, q in cart), 2)
                items = sum(q for *_, q in cart)
                main_category = cart[0][1]
                emit(
                    EventType.PURCHASE,
                    t,
                    session_id=session_id,
                    order_id=order_id,
                    price=total,
                    quantity=items,
                    category=main_category,
                    coupon_id=coupon_id,
                    items=_order_lines(cart),
                )
                last_purchase_day = day
                went_wrong = rng.random() < mishap * 3
                if went_wrong and rng.random() < 0.5:
                    emit(
                        EventType.CANCEL_ORDER,
                        t + int(rng.uniform(HOUR_MS, 30 * HOUR_MS)),
                        order_id=order_id,
                        price=total,
                    )
                    bad_until = day + 30
                elif went_wrong or rng.random() < 0.04:
                    emit(
                        EventType.RETURN,
                        t + int(rng.uniform(3, 10) * DAY_MS),
                        order_id=order_id,
                        price=total,
                        category=main_category,
                    )
                    bad_until = max(bad_until, day + 20)
                if rng.random() < 0.3:
                    rating = float(rng.integers(1, 3)) if went_wrong else float(rng.choice([3, 4, 5, 5]))
                    if rating <= 2:
                        bad_until = max(bad_until, day + 30)
                    emit(
                        EventType.REVIEW,
                        t + int(rng.uniform(2, 7) * DAY_MS),
                        order_id=order_id,
                        rating=rating,
                        category=main_category,
                    )
        day += 1.0
    end_ms = start_ms + config.days * DAY_MS
    # A few users opt out of marketing (and some opt back in); behaviour is unchanged.
    if events and rng.random() < 0.03:
        first_ms, last_ms = events[0].ts_ms, events[-1].ts_ms
        out_ms = int(rng.uniform(first_ms, last_ms + 1))
        emit(EventType.OPT_OUT, out_ms)
        if rng.random() < 0.3:
            emit(EventType.OPT_IN, int(rng.uniform(out_ms, last_ms + 2)))
    events = [e for e in events if e.ts_ms < end_ms]
    events.sort(key=lambda e: e.ts_ms)
    if silent_ms is not None and events:
        # Returns and reviews of the last orders may trail the fade-out.
        silent_ms = max(silent_ms, events[-1].ts_ms + 1)
    traits = {
        "visit_rate": visit_rate,
        "buy_prob": buy_prob,
        "price_level": price_level,
        "coupon_affinity": coupon_affinity,
        "mishap": mishap,
        "base_hazard": base_hazard,
    }
    taste_by_category = {f"c{c:02d}": float(share) for c, share in enumerate(taste)}
    liked = frozenset(f"i{c:02d}-{int(i):03d}" for c, row in enumerate(favourites) for i in row)
    user = SimUser(user_id, start_ms + int(signup_day * DAY_MS), churn_ms, silent_ms, traits, taste_by_category, liked)
    return events, user


def _order_lines(cart: list[tuple[str, str, float, int]]) -> list[OrderLine]:
    """A cart as order lines, one per item (an item carted twice adds up)."""
    lines: dict[str, OrderLine] = {}
    for item, category, price, quantity in cart:
        before = lines[item].quantity or 0 if item in lines else 0
        lines[item] = OrderLine(item, category, price, before + quantity)
    return list(lines.values())


def simulate_users(config: SimConfig) -> tuple[list[list[Event]], list[SimUser]]:
    """Every user's events (time-ordered) and ground truth; deterministic for a seed."""
    rng = np.random.default_rng(config.seed)
    seeds = rng.integers(0, 2**63 - 1, size=config.users)
    per_user: list[list[Event]] = []
    truth: list[SimUser] = []
    for uid in range(config.users):
        events, user = _user_events(uid, config, np.random.default_rng(int(seeds[uid])))
        per_user.append(events)
        truth.append(user)
    return per_user, truth


def simulate(config: SimConfig) -> Iterator[Event]:
    """All events of a simulation, merged in event-time order."""
    per_user, _ = simulate_users(config)
    return heapq.merge(*per_user, key=lambda e: e.ts_ms)


def encode_stream(
    events: Iterator[Event], *, seed: int = 0, malformed_rate: float = 0.0, unknown_rate: float = 0.0
) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, kind) records for Kafka or a file; kind is valid, malformed or unknown.

    ``malformed_rate`` of records are replaced by known-bad payloads (to exercise the
    dead-letter path), ``unknown_rate`` get an event type the schema does not know.
    """
    rng = np.random.default_rng(seed)
    for event in events:
        key = event.user_id.encode()
        draw = rng.random() if (malformed_rate or unknown_rate) else 1.0
        if draw < malformed_rate:
            yield key, BAD_PAYLOADS[int(rng.integers(0, len(BAD_PAYLOADS)))], "malformed"
        elif draw < malformed_rate + unknown_rate:
            body = orjson.loads(encode_event(event))
            body["type"] = "wishlist_add"
            yield key, orjson.dumps(body), "unknown"
        else:
            yield key, encode_event(event), "valid"
