"""``retention report effect``: did the interventions keep users, and at what cost?

Reads the decisions the worker logged and the event stream after them. The holdout
group (decisions ``held_out``) is a randomised control, so comparing it with the
treated group (``sent``) measures the causal effect: retention = a purchase within
H days after the decision. Each user counts once, at their first treated or
held-out decision, under that decision's tier; decisions whose horizon has not yet
passed in the event stream are reported as pending, not counted.

Attribution: events that carry the decision's ``intervention_id`` (a coupon
redemption, a view or purchase from a recommendation) give redemption and
click-through rates.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from retention_model.events import Event, EventType, parse_timestamp_ms
from retention_model.features.state import DAY_MS
from retention_model.monitoring.effect import Z_95, uplift_interval
from training.effect_plots import plot_curve, plot_qini, plot_tiers

__all__ = ["effect_report", "first_decisions", "headline", "qini_curve", "retention_curve", "write_effect_report"]

CLICK_TYPES = (EventType.VIEW, EventType.ADD_TO_CART, EventType.PURCHASE)


def _group_stats(treated: list[bool], control: list[bool]) -> dict[str, Any]:
    n_t, n_c = len(treated), len(control)
    p_t = sum(treated) / n_t if n_t else None
    p_c = sum(control) / n_c if n_c else None
    out: dict[str, Any] = {
        "treated_users": n_t,
        "holdout_users": n_c,
        "treated_retention": p_t,
        "holdout_retention": p_c,
        "uplift": None,
        "uplift_ci95": None,
        "incremental_retained": None,
    }
    interval = uplift_interval(sum(treated), n_t, sum(control), n_c)
    if interval is not None:
        uplift, low, high = interval
        out["uplift"] = uplift
        out["uplift_ci95"] = [low, high]
        out["incremental_retained"] = uplift * n_t
    return out


def _share(flags: list[bool]) -> tuple[float | None, list[float] | None]:
    """The share of True and its 95% normal-approximation interval, clipped to [0, 1]."""
    if not flags:
        return None, None
    p = sum(flags) / len(flags)
    half = Z_95 * math.sqrt(p * (1 - p) / len(flags))
    return p, [max(0.0, p - half), min(1.0, p + half)]


def retention_curve(
    first: Mapping[str, tuple[int, str, bool]],
    purchases: Mapping[str, list[int]],
    events_until_ms: int,
    horizon_days: int,
) -> list[dict[str, Any]]:
    """Treated vs holdout retention by day 1..``horizon_days`` after each user's first decision.

    A point at day d counts the users whose first d days have passed in the event stream
    (so n falls towards the end while later decisions are still open): retained by day d
    = a purchase in (decision, decision + d days]. Each group's share comes with its 95%
    interval and its n, and the uplift with the interval of a difference of shares.
    """
    curve = []
    for day in range(1, horizon_days + 1):
        span = day * DAY_MS
        groups: tuple[list[bool], list[bool]] = ([], [])
        for user, (ts, _, treated) in first.items():
            if ts + span <= events_until_ms:
                retained = any(ts < t <= ts + span for t in purchases.get(user, ()))
                groups[0 if treated else 1].append(retained)
        stats = _group_stats(*groups)
        (p_t, ci_t), (p_c, ci_c) = _share(groups[0]), _share(groups[1])
        curve.append(
            {
                "day": day,
                "treated_users": len(groups[0]),
                "treated_retention": p_t,
                "treated_ci95": ci_t,
                "holdout_users": len(groups[1]),
                "holdout_retention": p_c,
                "holdout_ci95": ci_c,
                "uplift": stats["uplift"],
                "uplift_ci95": stats["uplift_ci95"],
            }
        )
    return curve


def qini_curve(rows: list[tuple[float, bool, bool]], points: int = 20) -> list[dict[str, Any]]:
    """Incremental retained users when targeting the riskiest share first: the Qini curve.

    ``rows``: (risk at the first decision, treated, retained) per counted user. At each
    share of users, riskiest first: treated retained minus holdout retained scaled to the
    treated count (R_t - R_c N_t / N_c), beside the straight line of random targeting.
    Holdout users are scored too, so the ranking covers both groups alike.
    """
    ranked = sorted(rows, key=lambda row: -row[0])
    total = _qini_at(ranked)
    curve = []
    for step in range(1, points + 1):
        share = step / points
        top = ranked[: round(share * len(ranked))]
        curve.append(
            {
                "share": share,
                "users": len(top),
                "treated_users": sum(treated for _, treated, _ in top),
                "holdout_users": sum(not treated for _, treated, _ in top),
                "incremental_retained": _qini_at(top),
                "random": None if total is None else share * total,
            }
        )
    return curve


def _qini_at(rows: list[tuple[float, bool, bool]]) -> float | None:
    n_t = sum(treated for _, treated, _ in rows)
    n_c = len(rows) - n_t
    if not n_c:
        return None
    r_t = sum(retained for _, treated, retained in rows if treated)
    r_c = sum(retained for _, treated, retained in rows if not treated)
    return r_t - r_c * n_t / n_c


def first_decisions(decisions: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, str, bool]]:
    """User -> (time, tier, treated) of their first ``sent`` or ``held_out`` decision: the one each user counts at."""
    first: dict[str, tuple[int, str, bool]] = {}
    for decision in decisions:
        action = decision.get("action")
        if action not in ("sent", "held_out"):
            continue
        ts = parse_timestamp_ms(decision["event_time"])
        if not isinstance(ts, int):
            msg = f"decision {decision.get('decision_id')}: event_time {decision.get('event_time')!r}: {ts.detail}"
            raise ValueError(msg)
        user = decision["user_id"]
        if user in first and first[user][0] <= ts:
            continue
        first[user] = (ts, decision["tier"], action == "sent")
    return first


def effect_report(
    decisions: Iterable[Mapping[str, Any]], events: Iterable[Event], horizon_days: int = 30
) -> dict[str, Any]:
    """Retention of treated vs holdout users by tier and overall, with attribution rates."""
    horizon = horizon_days * DAY_MS
    purchases: dict[str, list[int]] = defaultdict(list)
    attributed: dict[str, set[EventType]] = defaultdict(set)
    click_counts: Counter[str] = Counter()
    last_event_ms = 0
    for event in events:
        last_event_ms = max(last_event_ms, event.ts_ms)
        if event.type is EventType.PURCHASE:
            purchases[event.user_id].append(event.ts_ms)
        if event.intervention_id is not None:
            attributed[event.intervention_id].add(event.type)
            click_counts[event.intervention_id] += event.type is EventType.VIEW

    decisions = list(decisions)
    first = first_decisions(decisions)
    sent_by_kind: dict[str, list[Mapping[str, Any]]] = {"coupon": [], "recommendation": []}
    for decision in decisions:
        if decision.get("action") == "sent" and decision.get("kind") in sent_by_kind:
            sent_by_kind[decision["kind"]].append(decision)
    coupons = sent_by_kind["coupon"]
    redeemed = [d for d in coupons if EventType.COUPON_REDEEM in attributed.get(d["decision_id"], set())]
    recos = sent_by_kind["recommendation"]
    clicked = [d for d in recos if attributed.get(d["decision_id"], set()) & set(CLICK_TYPES)]
    clickers = {d["user_id"] for d in clicked}

    risk_at = {
        (d["user_id"], parse_timestamp_ms(d["event_time"])): float(d.get("risk") or 0.0)
        for d in decisions
        if d.get("action") in ("sent", "held_out")
    }
    qini_rows: list[tuple[float, bool, bool]] = []
    pending = 0
    by_tier: dict[str, tuple[list[bool], list[bool]]] = defaultdict(lambda: ([], []))
    for user, (ts, tier, treated) in first.items():
        if ts + horizon > last_event_ms:
            pending += 1
            continue
        retained = any(ts < t <= ts + horizon for t in purchases.get(user, ()))
        qini_rows.append((risk_at.get((user, ts), 0.0), treated, retained))
        keys = (tier, "overall", *(("clicked",) if treated and user in clickers else ()))
        for key in keys:
            by_tier[key][0 if treated else 1].append(retained)
    if "clicked" in by_tier:  # users who clicked a recommendation vs the whole holdout (not randomised)
        by_tier["clicked"][1].extend(by_tier["overall"][1])
    coupon_cost = sum(float(d["intervention"]["offer"]["coupon_value"]) for d in redeemed)
    groups = {
        tier: _group_stats(*by_tier[tier])
        for tier in sorted(by_tier, key=lambda t: (t == "clicked", t == "overall", t))
    }
    overall = groups.get("overall", _group_stats([], []))
    incremental = overall["incremental_retained"]
    return {
        "horizon_days": horizon_days,
        "events_until_ms": last_event_ms,
        "decisions_counted": sum(
            g["treated_users"] + g["holdout_users"] for k, g in groups.items() if k not in ("overall", "clicked")
        ),
        "decisions_pending": pending,
        "groups": groups,
        "coupons_sent": len(coupons),
        "coupons_redeemed": len(redeemed),
        "coupon_redemption_rate": len(redeemed) / len(coupons) if coupons else None,
        "recommendations_sent": len(recos),
        "recommendations_clicked": len(clicked),
        "recommendation_click_through_rate": len(clicked) / len(recos) if recos else None,
        "recommendation_clicks": sum(n for d in recos for n in [click_counts.get(d["decision_id"], 0)]),
        "coupon_cost_redeemed": coupon_cost,
        "cost_per_retained_user": coupon_cost / incremental if incremental and incremental > 0 else None,
        "notes": _notes(groups, pending, len(first), horizon_days),
        "retention_curve": retention_curve(first, purchases, last_event_ms, horizon_days),
        "qini_curve": qini_curve(qini_rows),
    }


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The overall figures in a few keys (the demo's summary): uplift, its interval, n, redemptions, clicks."""
    overall = report["groups"].get("overall") or _group_stats([], [])
    ci = overall["uplift_ci95"] or [None, None]
    n_t, n_c = overall["treated_users"], overall["holdout_users"]
    return {
        "uplift": overall["uplift"],
        "ci_low": ci[0],
        "ci_high": ci[1],
        "n_treated": n_t,
        "n_holdout": n_c,
        "redemptions": report["coupons_redeemed"],
        "clicks": report["recommendation_clicks"],
        "small_sample": min(n_t, n_c) < SMALL_SAMPLE,
    }


#: Below this many users in a group, its retention rate and uplift are flagged as a small sample.
SMALL_SAMPLE = 30


def _notes(groups: dict[str, dict[str, Any]], pending: int, decided_users: int, horizon_days: int) -> list[str]:
    """What a reader must know before trusting the figures: nothing to count yet, or too little."""
    if decided_users == 0:
        return [
            "no decisions yet: no user was sent or held out an intervention. A short run scores few users in a "
            "tier that acts (see the decisions topic's rules), so run longer or with more users, or lower "
            "[risk] in the policy file"
        ]
    notes = []
    if not groups:
        notes.append(
            f"all {pending} decided users are still inside their {horizon_days}-day horizon: their outcome is not "
            "known yet; read the report again later, or with a shorter --horizon-days"
        )
    for tier, group in groups.items():
        for side in ("treated", "holdout"):
            n = group[f"{side}_users"]
            if n < SMALL_SAMPLE:
                notes.append(
                    f"small sample: {side} users in {tier} number {n} (under {SMALL_SAMPLE}); its retention and "
                    "uplift are rough, and the interval is wide or missing"
                )
    return notes


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def write_effect_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``effect.md``, ``effect.json`` and, with matplotlib, the plots (by tier, by day, Qini)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "effect.json"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Effect of retention interventions",
        "",
        f"Retention = a purchase within {report['horizon_days']} days after the decision. "
        f"{report['decisions_counted']} users counted, {report['decisions_pending']} still inside their horizon.",
        "",
        "| tier | treated | holdout | treated retention | holdout retention | uplift | 95% CI |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for tier, g in report["groups"].items():
        ci = g["uplift_ci95"]
        ci_text = f"{_pct(ci[0])} .. {_pct(ci[1])}" if ci else "n/a"
        lines.append(
            f"| {tier} | {g['treated_users']} | {g['holdout_users']} | {_pct(g['treated_retention'])} | "
            f"{_pct(g['holdout_retention'])} | {_pct(g['uplift'])} | {ci_text} |"
        )
    cost = report["cost_per_retained_user"]
    lines += [
        "",
        f"- Coupons: {report['coupons_sent']} sent, {report['coupons_redeemed']} redeemed "
        f"({_pct(report['coupon_redemption_rate'])}).",
        f"- Recommendations: {report['recommendations_sent']} sent, {report['recommendations_clicked']} clicked "
        f"({_pct(report['recommendation_click_through_rate'])}; {report['recommendation_clicks']} clicks). "
        "The `clicked` row compares users who clicked with the whole holdout: not randomised, so it shows "
        "who clicks as much as what clicking does.",
        f"- Cost per retained user: {'n/a (no measurable uplift)' if cost is None else f'{cost:.2f}'}.",
    ]
    curve = report.get("retention_curve") or []
    if curve:
        lines += [
            "",
            "Retention by day after the decision (users whose first d days have passed):",
            "",
            "| day | treated (n) | holdout (n) | uplift | 95% CI |",
            "|---:|---|---|---:|---|",
        ]
        for point in curve:
            if point["day"] % 7 and point["day"] != len(curve):
                continue
            ci = point["uplift_ci95"]
            lines.append(
                f"| {point['day']} | {_pct(point['treated_retention'])} ({point['treated_users']}) | "
                f"{_pct(point['holdout_retention'])} ({point['holdout_users']}) | {_pct(point['uplift'])} | "
                + (f"{_pct(ci[0])} .. {_pct(ci[1])} |" if ci else "n/a |")
            )
    qini = {round(p["share"], 2): p for p in report.get("qini_curve") or []}
    if qini.get(1.0) and qini[1.0]["incremental_retained"] is not None:
        shown = [
            f"{s:.0%}: {qini[s]['incremental_retained']:.1f} (random {qini[s]['random']:.1f})"
            for s in (0.2, 0.5, 1.0)
            if qini[s]["incremental_retained"] is not None
        ]
        lines += ["", f"- Qini, riskiest first (`qini_curve` in the JSON): incremental retained at {'; '.join(shown)}."]
    if report.get("notes"):
        lines += ["", "**Read with care:**", *(f"- {note}" for note in report["notes"])]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        lines += ["", "(Install the `report` extra for the plots.)"]
    else:
        written.append(plot_tiers(report, out / "effect.png"))
        lines += ["", "![Retention, treated vs holdout](effect.png)"]
        if curve:
            written.append(plot_curve(curve, out / "effect-curve.png"))
            lines += ["", "![Retention by day, treated vs holdout](effect-curve.png)"]
        if qini.get(1.0) and qini[1.0]["incremental_retained"] is not None:
            written.append(plot_qini(report["qini_curve"], out / "effect-qini.png"))
            lines += ["", "![Qini curve, riskiest first, beside random](effect-qini.png)"]
    markdown = out / "effect.md"
    markdown.write_text("\n".join(lines) + "\n")
    written.append(markdown)
    return written
