"""Closed loop: simulated users answer the worker's interventions, and the true uplift is known.

Why: ``retention report effect`` measures treated vs holdout retention; only a simulator
that knows each user's latent response can say whether that measurement is right.

Who responds, and how (at a user's decision time ``t``, retention = a purchase in
``(t, t + horizon]``, as the effect report counts it):

- **persuadable** users (a latent trait, more likely with a higher coupon affinity) who
  would not have bought within the horizon are retained only when treated: they come
  back within the horizon and buy (with the coupon, or the recommended item they like
  best). Their churn is not otherwise re-simulated: what they did afterwards in the
  generated log stays as it was.
- **sure things** (who buy within the horizon anyway) and **lost causes** (who do not
  and are not persuadable) are not moved: a coupon holder may attach the coupon to an
  order they were placing anyway (a redemption without an effect, more often with a
  higher coupon affinity), and anyone may click recommended items in categories they
  like, on the few recommendations they look at (:data:`LOOK_SHARE`). A click is a
  ``view`` of the item carrying the ``intervention_id``; there is no separate click
  event type.

Holdout users get nothing, so their outcome is the generated one; treated users' outcome
is the generated one plus the persuadable response. The true uplift over the users the
report counts is therefore the share of them who are persuadable and would not have
bought (:meth:`Responder.true_uplift`).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from retention_model.events import Event, EventType, OrderLine, parse_timestamp_ms
from retention_model.features.state import DAY_MS
from training.effect import first_decisions
from training.simulator import SimConfig, SimUser

__all__ = ["LoopFeed", "Responder", "TrueUplift", "persuadable_share"]

#: P(persuadable) = base + slope x coupon affinity (affinity ~ Beta(1, 4): about 0.27 on average).
PERSUADABLE_BASE = 0.15
PERSUADABLE_PER_AFFINITY = 0.6
#: A retained persuadable comes back between these many days after the intervention (within the horizon).
RETURN_DAYS = (0.5, 10.0)
#: Days a coupon can be attached to an order the user was placing anyway.
COUPON_WINDOW_DAYS = 14
#: Clicks on one recommendation, at most.
MAX_CLICKS = 2
#: The share of recommendations a user looks at (an active user; one who has faded out looks
#: a fifth as often), and, once looked at, each item's click chance: a floor, plus the user's
#: taste for its category and more for an item they favour, capped. Apart from the users a
#: recommendation wins back, about one in twenty gets a click (the few per cent reported for
#: recommendation e-mails and widgets), more when the list matches the user's tastes.
LOOK_SHARE = 0.15
ITEM_CLICK = (0.005, 0.15, 0.05, 0.25)


def persuadable_share(coupon_affinity: float) -> float:
    """P(persuadable) for a user with this coupon affinity."""
    return min(1.0, PERSUADABLE_BASE + PERSUADABLE_PER_AFFINITY * coupon_affinity)


@dataclass(frozen=True)
class TrueUplift:
    """The simulator's ground truth over the users the effect report counts."""

    uplift: float | None
    users: int
    #: Persuadable and would not have bought: retained only when treated.
    persuadables: int
    sure_things: int
    lost_causes: int
    #: Users whose first decision's horizon had not closed (not counted, as in the report).
    pending: int


def _user_number(user_id: str) -> int:
    return int(user_id.lstrip("u") or 0) if user_id.lstrip("u").isdigit() else 0


class Responder:
    """Turns intervention records into the simulated users' response events (deterministic per seed)."""

    def __init__(
        self, per_user: list[list[Event]], truth: list[SimUser], config: SimConfig, *, horizon_days: int = 30
    ) -> None:
        self.config = config
        self.horizon_ms = horizon_days * DAY_MS
        self.users = {user.user_id: user for user in truth}
        self.purchases = {
            user.user_id: [e.ts_ms for e in events if e.type is EventType.PURCHASE]
            for user, events in zip(truth, per_user)
        }
        self.persuadable = {
            user.user_id: bool(
                np.random.default_rng([config.seed, _user_number(user.user_id), 18]).random()
                < persuadable_share(user.traits.get("coupon_affinity", 0.0))
            )
            for user in truth
        }
        self._retained_until: dict[str, int] = {}
        self._answered: set[str] = set()
        self.counts = {"responses": 0, "retained": 0, "redemptions": 0, "clicks": 0}

    def would_buy(self, user_id: str, start_ms: int, end_ms: int) -> bool:
        """Whether the generated log has a purchase of the user in ``(start_ms, end_ms]``."""
        times = self.purchases.get(user_id, [])
        i = bisect.bisect_right(times, start_ms)
        return i < len(times) and times[i] <= end_ms

    def respond(self, intervention: Mapping[str, Any]) -> list[Event]:
        """The user's answer to one intervention (nothing for a repeat or an unknown user)."""
        iid, user_id = str(intervention.get("intervention_id")), str(intervention.get("user_id"))
        user = self.users.get(user_id)
        t = parse_timestamp_ms(intervention.get("event_time"))
        if user is None or iid in self._answered or not isinstance(t, int):
            return []
        self._answered.add(iid)
        rng = np.random.default_rng([self.config.seed, _user_number(user_id), int(iid[:12], 16) if _hex(iid) else 0])
        kind = intervention.get("kind")
        moved = (
            self.persuadable[user_id]
            and self._retained_until.get(user_id, 0) <= t
            and not self.would_buy(user_id, t, t + self.horizon_ms)
        )
        if moved:
            self._retained_until[user_id] = t + self.horizon_ms
            events = self._come_back(user, intervention, t, rng)
            self.counts["retained"] += 1
        elif kind == "coupon":
            events = self._redeem_anyway(user, iid, t, rng)
        else:
            events = self._clicks(user, intervention, t, rng)
        self.counts["responses"] += bool(events)
        self.counts["redemptions"] += sum(e.type is EventType.COUPON_REDEEM for e in events)
        self.counts["clicks"] += sum(e.type is EventType.VIEW for e in events)
        return events

    def _come_back(
        self, user: SimUser, intervention: Mapping[str, Any], t: int, rng: np.random.Generator
    ) -> list[Event]:
        """A return visit and an order within the horizon: the persuadable response."""
        iid = str(intervention["intervention_id"])
        days = min(RETURN_DAYS[1], self.horizon_ms / DAY_MS)
        at = t + int(rng.uniform(RETURN_DAYS[0], days) * DAY_MS)
        picks = _liked(user, intervention)
        item, category = picks[0] if picks else self._favourite(user, rng)
        price = round(float(rng.lognormal(np.log(user.traits.get("price_level", 25.0)), 0.3)), 2)
        coupon = intervention.get("kind") == "coupon"
        ids = _ids(user.user_id, iid)
        session = f"{user.user_id}-rs{iid[:8]}"
        out = [Event(next(ids), user.user_id, EventType.SESSION_START, at, session_id=session)]
        out.append(
            Event(
                next(ids),
                user.user_id,
                EventType.VIEW,
                at + 20_000,
                session_id=session,
                item_id=item,
                category=category,
                price=price,
                intervention_id=None if coupon else iid,
            )
        )
        out.append(
            Event(
                next(ids),
                user.user_id,
                EventType.ADD_TO_CART,
                at + 60_000,
                session_id=session,
                item_id=item,
                category=category,
                price=price,
                quantity=1,
            )
        )
        if coupon:
            out.append(
                Event(next(ids), user.user_id, EventType.COUPON_REDEEM, at + 90_000, coupon_id=iid, intervention_id=iid)
            )
        out.append(
            Event(
                next(ids),
                user.user_id,
                EventType.PURCHASE,
                at + 100_000,
                session_id=session,
                order_id=f"{user.user_id}-ro{iid[:8]}",
                price=price,
                quantity=1,
                category=category,
                coupon_id=iid if coupon else None,
                intervention_id=iid,
                items=[OrderLine(item, category, price, 1)],
            )
        )
        return out

    def _redeem_anyway(self, user: SimUser, iid: str, t: int, rng: np.random.Generator) -> list[Event]:
        """A coupon attached to an order the user places anyway (no effect on retention)."""
        times = self.purchases.get(user.user_id, [])
        i = bisect.bisect_right(times, t)
        if i == len(times) or times[i] > t + COUPON_WINDOW_DAYS * DAY_MS:
            return []
        if rng.random() >= user.traits.get("coupon_affinity", 0.0):
            return []
        return [
            Event(
                next(_ids(user.user_id, iid)),
                user.user_id,
                EventType.COUPON_REDEEM,
                max(t + 1, times[i] - 1_000),
                coupon_id=iid,
                intervention_id=iid,
            )
        ]

    def _clicks(self, user: SimUser, intervention: Mapping[str, Any], t: int, rng: np.random.Generator) -> list[Event]:
        """Views of recommended items the user likes, when they look at the list at all."""
        iid = str(intervention["intervention_id"])
        items = (intervention.get("recommendation") or {}).get("items") or []
        active = user.silent_ms is None or t < user.silent_ms
        if rng.random() >= LOOK_SHARE * (1.0 if active else 0.2):
            return []
        floor, per_taste, favoured, cap = ITEM_CLICK
        ids = _ids(user.user_id, iid)
        out: list[Event] = []
        for entry in items:
            item, category = str(entry.get("item_id")), str(entry.get("category") or "")
            p = floor + per_taste * user.taste.get(category, 0.0) + (favoured if item in user.favourite_items else 0.0)
            if rng.random() < min(cap, p) and len(out) < MAX_CLICKS:
                at = t + int(rng.uniform(0.05, 3.0) * DAY_MS)
                out.append(
                    Event(
                        next(ids),
                        user.user_id,
                        EventType.VIEW,
                        at,
                        item_id=item,
                        category=category or None,
                        intervention_id=iid,
                    )
                )
        return out

    def _favourite(self, user: SimUser, rng: np.random.Generator) -> tuple[str, str]:
        liked = sorted(user.favourite_items)
        top = max(user.taste, key=lambda c: user.taste[c]) if user.taste else "c00"
        in_top = [i for i in liked if i.startswith("i" + top[1:])] or liked or [f"i{top[1:]}-000"]
        item = in_top[int(rng.integers(0, len(in_top)))]
        return item, "c" + item[1:3]

    def true_uplift(self, decisions: Iterable[Mapping[str, Any]], events_until_ms: int) -> TrueUplift:
        """The true uplift over users whose first decision's horizon closed by ``events_until_ms``.

        Pass the last event time of the log the report reads, so both count the same users.
        """
        persuadables = sure = lost = pending = 0
        for user_id, (t, _, _) in first_decisions(decisions).items():
            if t + self.horizon_ms > events_until_ms:
                pending += 1
            elif self.would_buy(user_id, t, t + self.horizon_ms):
                sure += 1
            elif self.persuadable.get(user_id, False):
                persuadables += 1
            else:
                lost += 1
        n = persuadables + sure + lost
        return TrueUplift(persuadables / n if n else None, n, persuadables, sure, lost, pending)


def _hex(text: str) -> bool:
    return len(text) >= 12 and all(c in "0123456789abcdef" for c in text[:12])


def _ids(user_id: str, iid: str) -> Iterator[str]:
    return (f"{user_id}-r{iid[:10]}-{n}" for n in itertools.count())


def _liked(user: SimUser, intervention: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Recommended items, best liked first (favourites, then by taste for the category)."""
    items = (intervention.get("recommendation") or {}).get("items") or []
    pairs = [(str(e["item_id"]), str(e.get("category") or "")) for e in items if e.get("item_id")]
    return sorted(pairs, key=lambda p: (p[0] not in user.favourite_items, -user.taste.get(p[1], 0.0)))


class LoopFeed:
    """Generated events merged with responses in event-time order; responses may arrive while it is read.

    A response whose time the stream has already passed goes out next (late, as a real
    one would be). ``tail_s``: once the generated events are out, keep going until no
    response has come for that long (wall clock), so answers to the last interventions
    are not lost.
    """

    def __init__(self, events: Iterable[Event], *, tail_s: float = 0.0) -> None:
        self._events = iter(events)
        self._heap: list[tuple[int, int, Event]] = []
        self._lock = threading.Lock()
        self._count = itertools.count()
        self._last_added = time.monotonic()
        self.tail_s = tail_s
        self.emitted: list[Event] = []

    def add(self, events: Iterable[Event]) -> None:
        """Queue response events (thread-safe)."""
        with self._lock:
            for event in events:
                heapq.heappush(self._heap, (event.ts_ms, next(self._count), event))
                self._last_added = time.monotonic()

    def _due(self, until_ms: float) -> list[Event]:
        with self._lock:
            out = []
            while self._heap and self._heap[0][0] <= until_ms:
                out.append(heapq.heappop(self._heap)[2])
            return out

    def __iter__(self) -> Iterator[Event]:
        for event in self._events:
            for response in self._due(event.ts_ms):
                self.emitted.append(response)
                yield response
            self.emitted.append(event)
            yield event
        with self._lock:
            self._last_added = max(self._last_added, time.monotonic())
        while True:
            due = self._due(float("inf"))
            for response in due:
                self.emitted.append(response)
                yield response
            if not due and time.monotonic() - self._last_added >= self.tail_s:
                return
            if not due:
                time.sleep(0.05)
