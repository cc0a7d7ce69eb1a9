"""The traffic model behind ``lakehouse produce``: what the Roman Numeral Service would publish.

Generation is pure and deterministic (:func:`generate` yields the exact Kafka records for a
:class:`TrafficProfile`); :func:`produce` only ships them. Generation is built from pre-rendered
JSON fragments and table look-ups, because a ``json.dumps`` per event would cap the producer far
below the 100k events/s the benchmarks need on two cores.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import NamedTuple

from confluent_kafka import Producer

from tasks.kafka import CLIENT_LOG, ensure_topic
from tasks.roman import MAX_VALUE, NUMERALS
from tasks.settings import Settings

KINDS = ("valid", "duplicate", "late", "malformed", "wrong_conversion")
MALFORMED_KINDS = (
    "truncated", "not_json", "not_object", "wrong_type", "bad_enum", "missing_field",
    "unknown_version", "inconsistent", "empty", "tombstone", "huge",
)
PLANS = ("free", "pro", "enterprise")
DUPLICATE_PARTITIONS = 3
"""Duplicates that name a partition pick one of 0..2; the producer folds it into the topic."""

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DEFAULT_END = datetime(2025, 1, 1, tzinfo=timezone.utc)
ANONYMOUS_SHARE = 0.15
HUGE_EVERY = 100_000
"""About one multi-MB value per this many records (plus one guaranteed in runs of 1000+)."""

# Where users live (ISO 3166-1 alpha-2, weight) and which region serves them.
_COUNTRIES = (
    ("US", 24), ("DE", 9), ("IN", 8), ("GB", 7), ("FR", 6), ("BR", 5), ("JP", 5), ("CA", 4),
    ("IT", 4), ("ES", 4), ("NL", 3), ("PL", 3), ("AU", 3), ("MX", 3), ("KR", 2), ("SE", 2),
    ("CH", 2), ("AT", 2), ("IE", 1), ("PT", 1), ("NG", 1), ("ZA", 1), ("SG", 1), ("AR", 1),
)
_REGIONS = {
    "US": ("us-east-1", "us-west-2"), "CA": ("us-east-1",), "MX": ("us-west-2",),
    "BR": ("sa-east-1",), "AR": ("sa-east-1",),
    "JP": ("ap-northeast-1",), "KR": ("ap-northeast-1",), "IN": ("ap-south-1",),
    "SG": ("ap-southeast-1",), "AU": ("ap-southeast-2",),
    "DE": ("eu-central-1",), "AT": ("eu-central-1",), "CH": ("eu-central-1",), "PL": ("eu-central-1",),
}
_DEFAULT_REGIONS = ("eu-west-1",)
_CLIENTS = (('"web"', 45), ('"sdk"', 25), ('"cli"', 15), ('"mobile"', 5), (None, 7), ("null", 3))

# Inputs that fail, with the service's answer: (direction, input, error_code, http_status, weight).
_FAILURES = (
    ("to_roman", "0", "OUT_OF_RANGE", 422, 12), ("to_roman", "4000", "OUT_OF_RANGE", 422, 10),
    ("to_roman", "5000", "OUT_OF_RANGE", 422, 4), ("to_roman", "10000", "OUT_OF_RANGE", 422, 4),
    ("to_roman", "-1", "OUT_OF_RANGE", 422, 5), ("to_roman", "-42", "OUT_OF_RANGE", 422, 2),
    ("to_roman", "99999", "OUT_OF_RANGE", 422, 2), ("to_roman", "1000000", "OUT_OF_RANGE", 422, 2),
    ("to_roman", "", "MALFORMED_REQUEST", 400, 4), ("to_roman", "abc", "MALFORMED_REQUEST", 400, 3),
    ("to_roman", "12.5", "MALFORMED_REQUEST", 400, 3), ("to_roman", "1e3", "MALFORMED_REQUEST", 400, 2),
    ("to_roman", " 42", "MALFORMED_REQUEST", 400, 2), ("to_roman", "XIV", "MALFORMED_REQUEST", 400, 4),
    ("to_roman", "forty-two", "MALFORMED_REQUEST", 400, 1), ("to_roman", "0x1F", "MALFORMED_REQUEST", 400, 1),
    ("to_roman", "\u0661\u0662", "MALFORMED_REQUEST", 400, 1), ("to_roman", "42\n", "MALFORMED_REQUEST", 400, 1),
    ("from_roman", "IIII", "INVALID_NUMERAL", 422, 8), ("from_roman", "IC", "INVALID_NUMERAL", 422, 4),
    ("from_roman", "iv", "INVALID_NUMERAL", 422, 6), ("from_roman", "mcmxciv", "INVALID_NUMERAL", 422, 3),
    ("from_roman", "MMMM", "INVALID_NUMERAL", 422, 4), ("from_roman", "VX", "INVALID_NUMERAL", 422, 2),
    ("from_roman", "XXXX", "INVALID_NUMERAL", 422, 2), ("from_roman", "IL", "INVALID_NUMERAL", 422, 2),
    ("from_roman", "IIX", "INVALID_NUMERAL", 422, 2), ("from_roman", "ABC", "INVALID_NUMERAL", 422, 2),
    ("from_roman", "1994", "INVALID_NUMERAL", 422, 3), ("from_roman", "\u216b", "INVALID_NUMERAL", 422, 1),
    ("from_roman", "", "MALFORMED_REQUEST", 400, 4), ("from_roman", " ", "MALFORMED_REQUEST", 400, 1),
    ("from_roman", '"XII"', "MALFORMED_REQUEST", 400, 1), ("from_roman", "<script>", "MALFORMED_REQUEST", 400, 1),
)
_FAILURE_SHARE = 0.04
_TO_ROMAN_SHARE = 0.6
_ENDPOINTS = {"to_roman": "/v1/to-roman", "from_roman": "/v1/from-roman"}
_TABLE = 1 << 16  # entries of the sampling tables (a power of two: indexed with getrandbits)
_LATENCIES = 1 << 12

_UUID_MASK = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID_BITS = (0x8000 << 48) | (4 << 76)


class OutRecord(NamedTuple):
    """One Kafka record to send; ``kind`` and ``detail`` are bookkeeping for tests, never sent."""

    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    partition: int | None  # None: the key decides; else an index the producer folds into the topic
    kind: str
    detail: str = ""


INCIDENT_KINDS = ("error_burst", "latency_spike", "traffic_drop")
INCIDENT_DIRECTIONS = ("to_roman", "from_roman", "both")
DEFAULT_MAGNITUDE = {"error_burst": 0.25, "latency_spike": 4.0, "traffic_drop": 0.6}
"""error_burst: share of the direction's calls that fail instead; latency_spike: factor on every
latency; traffic_drop: share of the direction's calls that never arrive."""
RANDOM_INCIDENT_WARMUP_DAYS = 7
"""Random incidents avoid the first week of spans of two weeks or more: a detector needs history."""


@dataclass(frozen=True)
class Incident:
    """A known fault injected into the traffic, from ``start`` (a whole UTC hour) for ``hours``."""

    kind: str
    start: datetime
    hours: int = 1
    direction: str = "both"
    magnitude: float | None = None  # None: DEFAULT_MAGNITUDE[kind]

    def __post_init__(self) -> None:
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(f"incident kind must be one of {', '.join(INCIDENT_KINDS)}, got {self.kind!r}")
        if self.direction not in INCIDENT_DIRECTIONS:
            raise ValueError(f"incident direction must be one of {', '.join(INCIDENT_DIRECTIONS)}, "
                             f"got {self.direction!r}")
        if isinstance(self.hours, bool) or not isinstance(self.hours, int) or self.hours < 1:
            raise ValueError(f"incident hours must be an integer >= 1, got {self.hours!r}")
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise ValueError(f"incident start must be a timezone-aware datetime, got {self.start!r}")
        start = self.start.astimezone(timezone.utc)
        if (start.minute, start.second, start.microsecond) != (0, 0, 0):
            raise ValueError(f"incident start must be a whole UTC hour, got {start.isoformat()}")
        object.__setattr__(self, "start", start)
        if self.magnitude is None:
            object.__setattr__(self, "magnitude", DEFAULT_MAGNITUDE[self.kind])
        m = self.magnitude
        ok = isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m)
        if self.kind == "latency_spike" and not (ok and m > 1):
            raise ValueError(f"latency_spike magnitude is a latency factor > 1, got {m!r}")
        if self.kind != "latency_spike" and not (ok and 0 < m <= 1):
            raise ValueError(f"{self.kind} magnitude is a share in (0, 1], got {m!r}")

    @property
    def end(self) -> datetime:
        """The first hour after the incident (exclusive)."""
        return self.start + timedelta(hours=self.hours)

    @property
    def directions(self) -> tuple[str, ...]:
        return ("to_roman", "from_roman") if self.direction == "both" else (self.direction,)

    def as_truth(self) -> dict:
        return {"kind": self.kind, "direction": self.direction, "start": _iso_hour(self.start),
                "end": _iso_hour(self.end), "hours": self.hours, "magnitude": self.magnitude}


def parse_incident(text: str) -> Incident:
    """``KIND@START[+HOURS][:DIRECTION][*MAGNITUDE]``, e.g. ``error_burst@2025-01-03T14:00+2:to_roman``
    (START a UTC hour); the CLI's way to choose an incident's time."""
    form = "KIND@YYYY-MM-DDTHH[:00][+HOURS][:DIRECTION][*MAGNITUDE]"
    match = re.fullmatch(r"\s*(\w+)@(\d{4}-\d{2}-\d{2}T\d{2}(?::00)?)(?:\+(\d+))?(?::(\w+))?(?:\*([0-9.]+))?\s*", text)
    if match is None:
        raise ValueError(f"incident {text!r} is not {form}")
    kind, start, hours, direction, magnitude = match.groups()
    when = datetime.fromisoformat(start if start.endswith(":00") else start + ":00").replace(tzinfo=timezone.utc)
    return Incident(kind, when, int(hours or 1), direction or "both", float(magnitude) if magnitude else None)


def random_incidents(start: datetime, end: datetime, count: int, seed: int) -> tuple[Incident, ...]:
    """``count`` non-overlapping incidents of 1-3 hours at seeded random whole hours of [start, end),
    cycling through the kinds; spans of 14 days or more keep the first week free of them."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"random incidents must be an integer >= 0, got {count!r}")
    rng = random.Random(f"{seed}/incidents")
    first = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if end - start >= timedelta(days=2 * RANDOM_INCIDENT_WARMUP_DAYS):
        first += timedelta(days=RANDOM_INCIDENT_WARMUP_DAYS)
    slots = int((end - first) / timedelta(hours=1)) - 3
    if count and slots < count * 6:
        raise ValueError(f"{count} random incidents do not fit in the span; use fewer or more days")
    taken: set[int] = set()
    out = []
    kinds = list(INCIDENT_KINDS)
    rng.shuffle(kinds)
    while len(out) < count:
        hours = rng.randint(1, 3)
        at = rng.randrange(slots)
        if taken & set(range(at - 2, at + hours + 2)):  # keep incidents apart, so each is its own event
            continue
        taken.update(range(at, at + hours))
        direction = rng.choice(INCIDENT_DIRECTIONS)
        out.append(Incident(kinds[len(out) % len(kinds)], first + timedelta(hours=at), hours, direction))
    return tuple(sorted(out, key=lambda i: (i.start, i.kind)))


def choose_incidents(chosen: list[str] | tuple[str, ...], random_count: int, end: datetime, days: int,
                     seed: int) -> tuple[Incident, ...]:
    """The chosen incidents (``parse_incident`` texts) and ``random_count`` seeded random ones."""
    picked = [parse_incident(text) for text in chosen]
    picked += random_incidents(end - timedelta(days=days), end, random_count, seed)
    return tuple(sorted(picked, key=lambda i: (i.start, i.kind, i.direction)))


def write_truth(profile: "TrafficProfile", path) -> None:
    """The profile's truth file (JSON): what was injected, incident by incident."""
    from pathlib import Path

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(profile.truth(), indent=2) + "\n")


@dataclass(frozen=True)
class TrafficProfile:
    """How much traffic, over which period, and how dirty; rates are shares of all records.

    ``trend`` (growth per week), ``seasonal`` (a weekday profile and hour-to-hour noise instead of
    the flat weekday/weekend split) and ``incidents`` are opt-in: without them the records are
    exactly those of earlier versions."""

    events: int = 10_000
    rate: float = 0.0
    days: int = 7
    seed: int = 42
    duplicate_rate: float = 0.01
    late_rate: float = 0.01
    malformed_rate: float = 0.001
    wrong_conversion_rate: float = 0.0005
    v2_share: float = 0.3
    users: int = 5000
    end: datetime = DEFAULT_END
    trend: float = 0.0
    seasonal: bool = False
    incidents: tuple[Incident, ...] = ()

    def __post_init__(self) -> None:
        for name in ("events", "days", "seed", "users"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.events < 0:
            raise ValueError(f"events must be >= 0, got {self.events}")
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        if not isinstance(self.rate, (int, float)) or not self.rate >= 0 or math.isinf(self.rate):
            raise ValueError(f"rate must be a finite number >= 0 (0 = as fast as possible), got {self.rate!r}")
        for name in ("duplicate_rate", "late_rate", "malformed_rate", "wrong_conversion_rate", "v2_share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        dirty = self.duplicate_rate + self.late_rate + self.malformed_rate + self.wrong_conversion_rate
        if dirty > 1:
            raise ValueError(
                "duplicate_rate + late_rate + malformed_rate + wrong_conversion_rate must be <= 1, "
                f"got {dirty:g}"
            )
        if not isinstance(self.end, datetime) or self.end.tzinfo is None:
            raise ValueError(f"end must be a timezone-aware datetime, got {self.end!r}")
        object.__setattr__(self, "end", self.end.astimezone(timezone.utc))
        if not isinstance(self.trend, (int, float)) or isinstance(self.trend, bool) or not -0.5 <= self.trend <= 1:
            raise ValueError(f"trend (growth per week) must be in [-0.5, 1], got {self.trend!r}")
        if not isinstance(self.seasonal, bool):
            raise ValueError(f"seasonal must be true or false, got {self.seasonal!r}")
        object.__setattr__(self, "incidents", tuple(self.incidents))
        for incident in self.incidents:
            if not isinstance(incident, Incident):
                raise ValueError(f"incidents must be Incident values, got {incident!r}")
            if incident.end <= self.end - timedelta(days=self.days) or incident.start >= self.end:
                raise ValueError(f"incident {incident.kind}@{_iso_hour(incident.start)} is outside the span "
                                 f"{_iso_hour(self.end - timedelta(days=self.days))} .. {_iso_hour(self.end)}")

    @property
    def shaped(self) -> bool:
        """Any opt-in shape: a trend, seasonality or incidents."""
        return bool(self.trend or self.seasonal or self.incidents)

    def truth(self) -> dict:
        """What was injected, for measuring detection: the truth file of ``lakehouse produce --truth``."""
        return {"seed": self.seed, "events": self.events, "start": (self.end - timedelta(days=self.days)).isoformat(),
                "end": self.end.isoformat(), "trend_per_week": self.trend, "seasonal": self.seasonal,
                "incidents": [i.as_truth() for i in self.incidents]}

    @property
    def end_ms(self) -> int:
        return _to_epoch_ms(self.end)

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.days * DAY_MS


@dataclass(frozen=True)
class UserState:
    plan: str
    country: str


@dataclass(frozen=True)
class User:
    """A user whose plan and country change at a few instants, so the SCD2 dimension has history."""

    user_id: str
    weight: float
    change_ms: tuple[int, ...]  # sorted; states[i] holds before change_ms[i], states[-1] after the last
    states: tuple[UserState, ...]

    def state_at(self, ms: int) -> UserState:
        """The attributes in force at epoch milliseconds ``ms`` (a change applies from its instant)."""
        return self.states[bisect_right(self.change_ms, ms)]


@dataclass
class ProduceReport:
    """What a produce run sent; ``events`` counts Kafka records, duplicates and malformed included."""

    topic: str
    events: int
    bytes: int
    seconds: float
    rate: float  # records per second, flush included
    partitions: int
    per_kind: dict[str, int] = field(default_factory=dict)
    delivery_errors: int = 0
    first_error: str | None = None

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class ProduceError(RuntimeError):
    """Some records were not delivered; ``report`` tells how far the run got."""

    def __init__(self, report: ProduceReport):
        self.report = report
        super().__init__(
            f"{report.delivery_errors} of {report.events} records were not delivered to topic "
            f"{report.topic!r}; first error: {report.first_error}"
        )


# ---- the population ---------------------------------------------------------------------------


def build_population(profile: TrafficProfile) -> tuple[User, ...]:
    """The users of a profile: activity is Zipf-like, and ~40% change plan or country in the span."""
    rng = random.Random(f"{profile.seed}/users")
    countries = [c for c, _ in _COUNTRIES]
    country_weights = [w for _, w in _COUNTRIES]
    # changes may predate the span: late events reach up to ~7 days before it
    lo, hi = profile.start_ms - 8 * DAY_MS, profile.end_ms
    width = len(str(profile.users - 1))
    users = []
    for i in range(profile.users):
        plan = rng.choices(PLANS, (70, 25, 5))[0]
        country = rng.choices(countries, country_weights)[0]
        states = [UserState(plan, country)]
        changes = sorted(rng.randrange(lo, hi) for _ in range(rng.choices((0, 1, 2, 3), (60, 25, 10, 5))[0]))
        for _ in changes:
            if rng.random() < 0.7:
                plan = _change_plan(rng, plan)
            else:
                country = rng.choice([c for c in countries if c != country])
            states.append(UserState(plan, country))
        weight = 1.0 / (i + 1) ** 0.8
        users.append(User(f"u-{i:0{max(5, width)}d}", weight, tuple(changes), tuple(states)))
    # rank 0 is the heaviest user; shuffle so user ids do not reveal activity
    weights = [u.weight for u in users]
    rng.shuffle(weights)
    return tuple(User(u.user_id, w, u.change_ms, u.states) for u, w in zip(users, weights))


def _change_plan(rng: random.Random, plan: str) -> str:
    """Upgrades are common, churn and downgrades rarer."""
    if plan == "free":
        return "pro" if rng.random() < 0.85 else "enterprise"
    if plan == "pro":
        return "enterprise" if rng.random() < 0.5 else "free"
    return "pro"


# ---- fragments and tables ---------------------------------------------------------------------


@cache
def _build_clock() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """'HH:MM:SS.' for every second of a day and '000'..'999'; formatting time costs a look-up."""
    hms = tuple(f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}." for s in range(86400))
    millis = tuple(f"{m:03d}" for m in range(1000))
    return hms, millis


def _build_quantile_table(items: list, weights: list[float], size: int) -> tuple:
    """A table whose uniform index samples ``items`` by ``weights``, exactly by quantiles."""
    total = sum(weights)
    cumulative, acc = [], 0.0
    for w in weights:
        acc += w
        cumulative.append(acc / total)
    last = len(items) - 1
    return tuple(items[min(bisect_right(cumulative, (i + 0.5) / size), last)] for i in range(size))


class _Call(NamedTuple):
    """A pre-rendered API call: JSON up to ``latency_ms``'s value, and after it."""

    head: str
    tail: str
    success: bool
    cache_p: float  # chance a v2 event of this call is a cache hit
    direction: str
    input: str
    output: str | None


def _render_call(direction: str, input: str, output: str | None, error: str | None) -> str:  # noqa: A002
    return (
        f'"direction":"{direction}","input":{json.dumps(input)},"output":{json.dumps(output)},'
        f'"success":{"true" if error is None else "false"},"error_code":{json.dumps(error)},"latency_ms":'
    )


def _build_calls() -> tuple[list[_Call], list[float]]:
    """Every call the service answers, weighted: small numbers and recent years dominate."""
    calls, weights = [], []
    values = range(1, MAX_VALUE + 1)
    zipf = [1.0 / n**1.05 for n in values]
    zipf_total = sum(zipf)
    years = [math.exp(-((n - 1995) / 25) ** 2) if 1900 <= n <= 2030 else 0.0 for n in values]
    years_total = sum(years)
    for direction, share in (("to_roman", _TO_ROMAN_SHARE), ("from_roman", 1 - _TO_ROMAN_SHARE)):
        tail = f',"endpoint":"{_ENDPOINTS[direction]}","http_status":200'
        for n in values:
            p = 0.60 * zipf[n - 1] / zipf_total + 0.25 * years[n - 1] / years_total + 0.15 / MAX_VALUE
            numeral, decimal = NUMERALS[n], str(n)
            inp, out = (decimal, numeral) if direction == "to_roman" else (numeral, decimal)
            cache_p = 0.85 if n <= 100 or 1950 <= n <= 2030 else 0.15
            calls.append(_Call(_render_call(direction, inp, out, None), tail, True, cache_p, direction, inp, out))
            weights.append((1 - _FAILURE_SHARE) * share * p)
    failure_total = sum(f[4] for f in _FAILURES)
    for direction, inp, error, status, w in _FAILURES:
        tail = f',"endpoint":"{_ENDPOINTS[direction]}","http_status":{status}'
        calls.append(_Call(_render_call(direction, inp, None, error), tail, False, 0.0, direction, inp, None))
        weights.append(_FAILURE_SHARE * w / failure_total)
    return calls, weights


@cache
def _build_call_table() -> tuple[_Call, ...]:
    """The weighted calls as a sampling table; the same for every seed, so built once."""
    calls, weights = _build_calls()
    return _build_quantile_table(calls, weights, _TABLE)


def _draw_latencies(rng: random.Random, median_ms: float, sigma: float) -> tuple[str, ...]:
    """Lognormal server latencies with a slow 1% tail, rendered as JSON numbers."""
    out = []
    for _ in range(_LATENCIES):
        x = rng.lognormvariate(math.log(median_ms), sigma)
        if rng.random() < 0.01:
            x *= rng.uniform(5, 40)
        out.append(f"{x:.2f}")
    return tuple(out)


def _count_per_hour(profile: TrafficProfile) -> list[tuple[int, int]]:
    """(hour start ms, records) over the span: a diurnal curve peaking ~15:00 UTC, quieter weekends."""
    start = profile.start_ms
    hours = profile.days * 24
    weights = []
    for h in range(hours):
        mid = datetime.fromtimestamp((start + h * HOUR_MS + HOUR_MS // 2) / 1000, timezone.utc)
        daily = 0.2 + 0.8 * (0.5 - 0.5 * math.cos(2 * math.pi * (mid.hour + 0.5 - 3) / 24))
        weights.append(daily * (0.7 if mid.weekday() >= 5 else 1.0))
    if profile.shaped:
        weights = _shape_weights(profile, weights)
    total = sum(weights)
    counts, acc, placed = [], 0.0, 0
    for h, w in enumerate(weights):
        acc += w
        upto = round(profile.events * acc / total) if h < hours - 1 else profile.events
        counts.append((start + h * HOUR_MS, upto - placed))
        placed = upto
    return counts


_WEEKDAY_FACTORS = (1.0, 1.04, 1.06, 1.03, 0.93, 0.62, 0.55)  # Monday .. Sunday, with --seasonal
_HOUR_NOISE = 0.04  # sd of the multiplicative hour-to-hour noise, with --seasonal


def _shape_weights(profile: TrafficProfile, weights: list[float]) -> list[float]:
    """The opt-in shape on top of the diurnal curve: weekday profile and noise, trend, drops."""
    rng = random.Random(f"{profile.seed}/shape")  # its own stream: the records' stream is untouched
    start = profile.start_ms
    out = []
    for h, w in enumerate(weights):
        mid_ms = start + h * HOUR_MS + HOUR_MS // 2
        mid = datetime.fromtimestamp(mid_ms / 1000, timezone.utc)
        if profile.seasonal:
            w = w / (0.7 if mid.weekday() >= 5 else 1.0) * _WEEKDAY_FACTORS[mid.weekday()]
            w *= max(0.5, rng.gauss(1.0, _HOUR_NOISE))
        w *= (1 + profile.trend) ** ((mid_ms - start) / (7 * DAY_MS))
        effects = _effects_at(profile.incidents, mid_ms)
        if effects:  # each direction keeps (1 - its drop) of its calls
            w *= sum(share * (1 - effects.get(d, (0.0,))[0]) for d, share in _DIRECTION_SHARE.items())
        out.append(w)
    return out


_DIRECTION_SHARE = {"to_roman": _TO_ROMAN_SHARE, "from_roman": 1 - _TO_ROMAN_SHARE}


def _effects_at(incidents: tuple[Incident, ...], ms: int) -> dict[str, tuple[float, float, float]] | None:
    """{direction: (drop share, extra failure share, latency factor)} of the incidents active at
    epoch ms ``ms``; None when none is."""
    effects: dict[str, list[float]] = {}
    for incident in incidents:
        if _to_epoch_ms(incident.start) <= ms < _to_epoch_ms(incident.end):
            for direction in incident.directions:
                drop, fail, slow = effects.setdefault(direction, [0.0, 0.0, 1.0])
                if incident.kind == "traffic_drop":
                    drop = 1 - (1 - drop) * (1 - incident.magnitude)
                elif incident.kind == "error_burst":
                    fail = 1 - (1 - fail) * (1 - incident.magnitude)
                else:
                    slow *= incident.magnitude
                effects[direction] = [drop, fail, slow]
    return {d: (e[0], e[1], e[2]) for d, e in effects.items()} or None


def _render_user(user_id: str | None, state: UserState | None) -> str:
    if user_id is None or state is None:
        return '"user_id":null,"user_plan":null,"user_country":null,'
    return f'"user_id":"{user_id}","user_plan":"{state.plan}","user_country":"{state.country}",'


# ---- generation -------------------------------------------------------------------------------


def generate(profile: TrafficProfile) -> Iterator[OutRecord]:
    """The Kafka records of a profile, in send order; the same profile yields the same bytes."""
    rng = random.Random(f"{profile.seed}/stream")
    rnd, bits = rng.random, rng.getrandbits
    hms, millis = _build_clock()

    population = build_population(profile)
    # (change instants, rendered user fragments, region fragments, key) per user
    user_rows = []
    for u in population:
        regions = tuple(
            f',"region":"{rng.choice(_REGIONS.get(s.country, _DEFAULT_REGIONS))}","cache_hit":' for s in u.states
        )
        user_rows.append((u.change_ms, tuple(_render_user(u.user_id, s) for s in u.states), regions,
                          u.user_id.encode()))
    user_table = _build_quantile_table(user_rows, [u.weight for u in population], _TABLE)
    anonymous = _render_user(None, None)
    anonymous_regions = tuple(
        f',"region":"{r}","cache_hit":' for r in ("us-east-1", "us-east-1", "eu-west-1", "eu-central-1", "ap-south-1")
    )
    call_table = _build_call_table()
    ok_latency = _draw_latencies(rng, 2.5, 0.6)
    fail_latency = _draw_latencies(rng, 0.8, 0.5)
    hit_latency = _draw_latencies(rng, 0.4, 0.4)
    client_table = _build_quantile_table([c for c, _ in _CLIENTS], [w for _, w in _CLIENTS], 128)
    clients = tuple("}" if c is None else f',"client":{c}}}' for c in client_table)
    delays = tuple(int(rng.lognormvariate(math.log(40), 1.0)) for _ in range(1024))  # ms, send - occurred

    incidents = profile.incidents
    effects_by_hour: dict[int, dict | None] = {}
    failures = {d: tuple(c for c in _build_calls()[0] if not c.success and c.direction == d) for d in _DIRECTION_SHARE} \
        if incidents else {}

    first_day = (profile.start_ms - 9 * DAY_MS) // DAY_MS
    day_prefix = tuple(
        (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=d)).strftime("%Y-%m-%dT")
        for d in range(first_day, profile.end_ms // DAY_MS + 3)
    )

    def render(occurred: int, wrong: bool = False) -> tuple[bytes | None, str, _Call]:
        """One event as JSON text; ``wrong`` swaps a successful call's output for a wrong one."""
        s, ms = divmod(occurred, 1000)
        d, sod = divmod(s, 86400)
        x = bits(128) & _UUID_MASK | _UUID_BITS
        h = f"{x:032x}"
        if rnd() < ANONYMOUS_SHARE:
            key, ufrag, region = None, anonymous, anonymous_regions[bits(10) % 5]
        else:
            changes, ufrags, regions, key = user_table[bits(16)]
            i = bisect_right(changes, occurred) if changes else 0
            ufrag, region = ufrags[i], regions[i]
        call, slow = call_table[bits(16)], 1.0
        if incidents:
            hour = occurred // HOUR_MS
            if hour not in effects_by_hour:
                effects_by_hour[hour] = _effects_at(incidents, hour * HOUR_MS)
            effects = effects_by_hour[hour]
            if effects:
                call, slow = _incident_call(call, effects, call_table, failures, rnd, bits)
        if wrong:
            while not call.success:
                call = call_table[bits(16)]
            head = _render_wrong_call(rng, call)
        else:
            head = call.head
        if rnd() < v2_share:
            if call.success and rnd() < call.cache_p:
                lat, tail = hit_latency[bits(12)], f"{region}true}}"
            else:
                lat, tail = (ok_latency if call.success else fail_latency)[bits(12)], f"{region}false}}"
            if slow != 1.0:
                lat = f"{float(lat) * slow:.2f}"
            text = (
                f'{{"event_id":"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}","event_type":"conversion",'
                f'"schema_version":2,"occurred_at":"{day_prefix[d - first_day]}{hms[sod]}{millis[ms]}Z",'
                f"{ufrag}{head}{lat}{call.tail}{clients[bits(7)][:-1]}{tail}"
            )
        else:
            lat = (ok_latency if call.success else fail_latency)[bits(12)]
            if slow != 1.0:
                lat = f"{float(lat) * slow:.2f}"
            text = (
                f'{{"event_id":"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}","event_type":"conversion",'
                f'"schema_version":1,"occurred_at":"{day_prefix[d - first_day]}{hms[sod]}{millis[ms]}Z",'
                f"{ufrag}{head}{lat}{call.tail}{clients[bits(7)]}"
            )
        return key, text, call

    v2_share = profile.v2_share
    p_dup = profile.duplicate_rate
    p_late = p_dup + profile.late_rate
    p_bad = p_late + profile.malformed_rate
    p_wrong = p_bad + profile.wrong_conversion_rate
    huge_p = min(1.0, 1 / (HUGE_EVERY * profile.malformed_rate)) if profile.malformed_rate else 0.0
    forced_huge = profile.events // 3 if profile.malformed_rate > 0 and profile.events >= 1000 else -1
    recent: list[tuple[bytes | None, bytes, int]] = []  # ring of the last sent events (retries minutes later)
    reservoir: list[tuple[bytes | None, bytes, int]] = []  # a sample of all sent events (retries days later)
    slot = 0

    for hour_start, count in _count_per_hour(profile):
        step = HOUR_MS / count if count else 0.0
        for j in range(count):
            t = hour_start + int((j + rnd()) * step)
            u = rnd()
            if u >= p_wrong and slot != forced_huge:  # the common case first
                key, text, _ = render(t)
                value = text.encode()
                ts = t + delays[bits(10)]
                kind = "valid"
                record = OutRecord(key, value, ts, None, kind)
            elif slot == forced_huge or p_late <= u < p_bad:
                ts = t + delays[bits(10)]
                detail = "huge" if slot == forced_huge or rnd() < huge_p else None
                key, value, detail = _malform(rng, render(t), detail)
                record = OutRecord(key, value, ts, None, "malformed", detail)
                kind = "malformed"
            elif u < p_dup and recent:
                key, value, first_ts = recent[bits(8) % len(recent)] if rnd() < 0.6 else \
                    reservoir[bits(16) % len(reservoir)]
                ts = max(t, first_ts + 1) + int(rnd() * rnd() * 600_000)  # retry backoff up to 10 minutes
                partition = bits(8) % DUPLICATE_PARTITIONS if rnd() < 0.3 else None
                record = OutRecord(key, value, ts, partition, "duplicate")
                kind = "duplicate"
            elif p_dup <= u < p_late:
                ts = t + delays[bits(10)]
                occurred = ts - DAY_MS - int(rnd() * 6 * DAY_MS)
                key, text, _ = render(occurred)
                value = text.encode()
                record = OutRecord(key, value, ts, None, "late")
                kind = "late"
            else:  # wrong conversion, or a duplicate before anything was sent
                key, text, _ = render(t, wrong=u >= p_bad)
                value = text.encode()
                ts = t + delays[bits(10)]
                kind = "wrong_conversion" if u >= p_bad else "valid"
                record = OutRecord(key, value, ts, None, kind)
            if kind != "malformed" and kind != "duplicate":
                if len(recent) < 256:
                    recent.append((key, value, ts))
                else:
                    recent[slot & 255] = (key, value, ts)
                if len(reservoir) < 4096:
                    reservoir.append((key, value, ts))
                elif bits(4) == 0:
                    reservoir[bits(12)] = (key, value, ts)
            slot += 1
            yield record


def _incident_call(call: _Call, effects: dict, call_table: tuple[_Call, ...], failures: dict,
                   rnd: Callable[[], float], bits: Callable[[int], int]) -> tuple[_Call, float]:
    """The call an incident leaves: a dropped direction's calls are redrawn (the hour's count
    already shrank by the dropped share, so the other direction keeps its volume), a burst turns
    calls into failures. Returns it with its latency factor."""
    effect = effects.get(call.direction)
    for _ in range(64):  # bounded: a drop of 1 in both directions leaves nothing to keep
        if effect is None or not effect[0] or rnd() >= effect[0]:
            break
        call = call_table[bits(16)]
        effect = effects.get(call.direction)
    if effect is None:
        return call, 1.0
    if effect[1] and rnd() < effect[1]:
        mine = failures[call.direction]
        call = mine[bits(16) % len(mine)]
    return call, effect[2]


def _iso_hour(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _render_wrong_call(rng: random.Random, call: _Call) -> str:
    """The head of a successful call whose output is wrong in a way a buggy service would be."""
    if call.direction == "to_roman":
        n = int(call.input)
        numeral = NUMERALS[n]
        options = [NUMERALS[n + 1] if n < MAX_VALUE else NUMERALS[n - 1], numeral.lower()]
        additive = numeral.replace("CM", "DCCCC").replace("CD", "CCCC").replace("XC", "LXXXX") \
            .replace("XL", "XXXX").replace("IX", "VIIII").replace("IV", "IIII")
        if additive != numeral:
            options.append(additive)
        if len(numeral) > 1:
            options.append(numeral[:-1])
        wrong = rng.choice(options)
    else:
        n = int(call.output)
        wrong = str(rng.choice([n + 1, max(0, n - 1), n * 10, n + 1000]))
    return _render_call(call.direction, call.input, wrong, None)


_MALFORMED_WEIGHTS = (15, 10, 10, 15, 10, 15, 10, 5, 5, 5)  # MALFORMED_KINDS without "huge"
_REQUIRED = (
    "event_id", "event_type", "schema_version", "occurred_at", "user_id", "user_plan", "user_country",
    "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status",
)


def _malform(
    rng: random.Random, rendered: tuple[bytes | None, str, _Call], detail: str | None
) -> tuple[bytes | None, bytes | None, str]:
    """Damage a good event the ways real topics get damaged; returns (key, value, detail)."""
    key, text, _ = rendered
    detail = detail or rng.choices(MALFORMED_KINDS[:-1], _MALFORMED_WEIGHTS)[0]
    if detail == "truncated":
        return key, text.encode()[: rng.randrange(1, len(text) - 1)], detail
    if detail == "not_json":
        options = [
            rng.randbytes(rng.randrange(1, 200)),
            b"hello world",
            b"<html><body>502 Bad Gateway</body></html>",
            "u-00042,to_roman,1994,MCMXCIV".encode(),
            "\ufeff{broken".encode("utf-16"),
            b"\xff\xfe\xfd",
        ]
        return key, rng.choice(options), detail
    if detail == "not_object":
        options = ["[1,2,3]", '"conversion"', "42", "null", "true", f"[{text}]", "[]"]
        return key, rng.choice(options).encode(), detail
    if detail == "empty":
        return key, b"", detail
    if detail == "tombstone":
        return key, None, detail
    if detail == "huge":
        blob = base64.b64encode(rng.randbytes(rng.randrange(1_500_000, 2_250_000))).decode()
        event = json.loads(text)
        value = json.dumps(
            {"event_id": event["event_id"], "event_type": "conversion", "schema_version": 1,
             "occurred_at": event["occurred_at"], "direction": "from_roman", "input": blob},
            separators=(",", ":"),
        )
        return key, value.encode(), detail
    event = json.loads(text)
    if detail == "wrong_type":
        name = rng.choice(["latency_ms", "success", "schema_version", "http_status", "user_id", "occurred_at"])
        if name == "user_id":
            event[name] = 42
        elif name == "occurred_at":
            event[name] = int(datetime.fromisoformat(event[name]).timestamp() * 1000)
        else:
            event[name] = json.dumps(event[name])
    elif detail == "bad_enum":
        name, bad = rng.choice([("direction", "sideways"), ("user_plan", "platinum"),
                                ("error_code", "TEAPOT"), ("event_type", "click"), ("occurred_at", "yesterday")])
        event[name] = bad
    elif detail == "missing_field":
        del event[rng.choice(_REQUIRED)]
    elif detail == "unknown_version":
        event["schema_version"] = rng.choice([0, 3, 99])
        event["flags"] = ["beta"]
    elif detail == "inconsistent":
        if event["success"]:
            event["error_code"] = "INVALID_NUMERAL"
        else:
            event["http_status"] = 200
    return key, json.dumps(event, separators=(",", ":")).encode(), detail


# ---- Kafka I/O --------------------------------------------------------------------------------


def build_producer_config(settings: Settings) -> dict:
    """Throughput first (lz4, 1 MB batches, 25 ms linger) without giving up idempotent delivery."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 25,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 262_144,
        "message.max.bytes": 8 * 1024 * 1024,
        "message.timeout.ms": 120_000,
        "delivery.report.only.error": True,
        "logger": CLIENT_LOG,  # librdkafka's lines (GETPID while the broker starts) through the logger, not stderr
    }


def produce(
    settings: Settings, profile: TrafficProfile, progress: Callable[[int], None] | None = None
) -> ProduceReport:
    """Send the profile's records to ``settings.kafka_topic``; raises ProduceError if any is lost.

    ``progress`` receives the number of records handed to the producer so far (cumulative), every
    few thousand records and once at the end.
    """
    topic = settings.kafka_topic
    ensure_topic(settings)
    failures: list[str] = []

    def on_delivery(err, _msg) -> None:  # called for failures only (delivery.report.only.error)
        if err is not None:
            failures.append(str(err))

    producer = Producer({**build_producer_config(settings), "on_delivery": on_delivery})
    partitions = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    send = producer.produce
    per_kind = dict.fromkeys(KINDS, 0)
    rate = float(profile.rate)
    every = max(1, min(5000, int(rate / 20))) if rate else 5000  # housekeeping ~20 times/s when paced
    sent = size = 0
    started = time.monotonic()
    for record in generate(profile):
        key, value = record.key, record.value
        partition = -1 if record.partition is None else record.partition % partitions
        while True:
            try:
                send(topic, value, key, partition=partition, timestamp=record.timestamp_ms)
                break
            except BufferError:
                producer.poll(0.05)
        per_kind[record.kind] += 1
        size += (len(value) if value else 0) + (len(key) if key else 0)
        sent += 1
        if sent % every == 0:
            producer.poll(0)
            if progress:
                progress(sent)
            if rate:  # token bucket: wait out what was sent ahead of schedule, serving callbacks
                ahead = sent / rate - (time.monotonic() - started)
                while ahead > 0:
                    producer.poll(ahead)  # may return early when an event is served
                    ahead = sent / rate - (time.monotonic() - started)
    deadline = time.monotonic() + 180
    while producer.flush(1.0) and time.monotonic() < deadline:
        pass
    undelivered = len(producer)
    seconds = time.monotonic() - started
    if progress:
        progress(sent)
    report = ProduceReport(
        topic=topic, events=sent, bytes=size, seconds=seconds, rate=sent / seconds if seconds > 0 else 0.0,
        partitions=partitions, per_kind=per_kind, delivery_errors=len(failures) + undelivered,
        first_error=failures[0] if failures else ("still queued after flushing for 180 s" if undelivered else None),
    )
    if report.delivery_errors:
        raise ProduceError(report)
    return report


def _to_epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


__all__ = [
    "INCIDENT_KINDS", "Incident", "choose_incidents", "parse_incident", "random_incidents", "write_truth",
    "KINDS", "MALFORMED_KINDS", "OutRecord", "ProduceError", "ProduceReport", "TrafficProfile", "User",
    "UserState", "build_population", "generate", "produce", "build_producer_config",
]
