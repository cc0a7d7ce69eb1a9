"""The conversion-event contract, checked one raw value at a time.

``check_event`` never raises: whatever bytes arrive, it returns the typed fields it could read and
every reason the record breaks the contract (empty when the event is valid). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from tasks.roman import expected_output, parse_decimal, VALUES

REASONS = (
    "OVERSIZED",
    "MALFORMED_JSON",
    "NOT_AN_OBJECT",
    "MISSING_FIELD",
    "BAD_TYPE",
    "UNKNOWN_SCHEMA_VERSION",
    "BAD_ENUM",
    "WRONG_CONVERSION",
    "INCONSISTENT_ERROR",
    "NEGATIVE_LATENCY",
    "FUTURE_EVENT",
)

FUTURE_TOLERANCE = timedelta(minutes=5)

REQUIRED_V1 = (
    "event_id", "event_type", "schema_version", "occurred_at", "user_id", "user_plan", "user_country",
    "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status",
)
REQUIRED_V2 = ("region", "cache_hit")

PLANS = ("free", "pro", "enterprise")
DIRECTIONS = ("to_roman", "from_roman")
ERROR_CODES = ("INVALID_NUMERAL", "OUT_OF_RANGE", "MALFORMED_REQUEST")
ENDPOINTS = {"to_roman": "/v1/to-roman", "from_roman": "/v1/from-roman"}
FAILURE_STATUSES = (400, 422)
_COUNTRY = re.compile(r"^[A-Z]{2}$")

# Output fields of a checked event, in order; their Arrow types live in silver.PARSED_TYPE.
FIELDS = (
    "event_id", "event_type", "schema_version", "occurred_at_us", "user_id", "user_plan", "user_country",
    "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status",
    "client", "region", "cache_hit", "numeral_value", "reason_codes", "reject_detail",
)

# (field, JSON types allowed, nullable)
_TYPES: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("event_id", (str,), False),
    ("event_type", (str,), False),
    ("user_id", (str,), True),
    ("user_plan", (str,), True),
    ("user_country", (str,), True),
    ("direction", (str,), False),
    ("input", (str,), False),
    ("output", (str,), True),
    ("success", (bool,), False),
    ("error_code", (str,), True),
    ("latency_ms", (int, float), False),
    ("endpoint", (str,), False),
    ("http_status", (int,), False),
    ("client", (str,), True),
    ("region", (str,), False),
    ("cache_hit", (bool,), False),
)


def _empty(detail: str, *reasons: str) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(FIELDS)
    out["reason_codes"] = list(reasons)
    out["reject_detail"] = detail
    return out


def _is_type(value: Any, types: tuple[type, ...]) -> bool:
    # JSON true/false are Python bools, which are ints too: never accept a bool as a number.
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def check_event(value: bytes | None, kafka_timestamp_us: int | None, max_value_bytes: int) -> dict[str, Any]:
    """Typed fields plus ``reason_codes`` (empty when valid) and a human ``reject_detail``."""
    if value is None:
        return _empty("null value (tombstone)", "MALFORMED_JSON")
    if len(value) > max_value_bytes:
        return _empty(f"value is {len(value)} bytes, over the {max_value_bytes}-byte limit", "OVERSIZED")
    if not value:
        return _empty("empty value", "MALFORMED_JSON")
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return _empty(f"not valid JSON: {str(exc)[:120]}", "MALFORMED_JSON")
    if not isinstance(doc, dict):
        return _empty(f"JSON {type(doc).__name__}, not an object", "NOT_AN_OBJECT")

    out: dict[str, Any] = dict.fromkeys(FIELDS)
    reasons: list[str] = []
    details: list[str] = []

    def reject(code: str, detail: str) -> None:
        if code not in reasons:
            reasons.append(code)
        details.append(detail)

    version = doc.get("schema_version")
    required = REQUIRED_V1
    if "schema_version" in doc:
        if not _is_type(version, (int,)):
            reject("BAD_TYPE", f"schema_version is {type(version).__name__}, not an integer")
        elif version not in (1, 2):
            reject("UNKNOWN_SCHEMA_VERSION", f"schema_version {version} is neither 1 nor 2")
        else:
            out["schema_version"] = version
            if version == 2:
                required = REQUIRED_V1 + REQUIRED_V2
    missing = [f for f in required if f not in doc]
    if missing:
        reject("MISSING_FIELD", "missing " + ", ".join(missing))

    for name, types, nullable in _TYPES:
        if name not in doc:
            continue
        field_value = doc[name]
        if field_value is None:
            if not nullable:
                reject("BAD_TYPE", f"{name} is null")
            continue
        if not _is_type(field_value, types):
            reject("BAD_TYPE", f"{name} is {type(field_value).__name__}")
            continue
        out[name] = field_value
    if out["latency_ms"] is not None:
        out["latency_ms"] = float(out["latency_ms"])

    if out["event_id"] is not None:
        try:
            uuid.UUID(out["event_id"])
        except ValueError:
            reject("BAD_TYPE", f"event_id {out['event_id'][:40]!r} is not a UUID")
            out["event_id"] = None

    occurred = doc.get("occurred_at")
    if occurred is not None:
        parsed = _parse_time(occurred)
        if parsed is None:
            reject("BAD_TYPE", f"occurred_at {str(occurred)[:40]!r} is not RFC 3339 with an offset")
        else:
            out["occurred_at_us"] = parsed
    elif "occurred_at" in doc:
        reject("BAD_TYPE", "occurred_at is null")

    _check_enums(out, reject)
    _check_consistency(out, reject)

    if out["latency_ms"] is not None and out["latency_ms"] < 0:
        reject("NEGATIVE_LATENCY", f"latency_ms {out['latency_ms']} < 0")
    if out["occurred_at_us"] is not None and kafka_timestamp_us is not None:
        ahead = out["occurred_at_us"] - kafka_timestamp_us
        if ahead > FUTURE_TOLERANCE.total_seconds() * 1_000_000:
            reject("FUTURE_EVENT", f"occurred_at is {ahead / 1e6:.0f}s after the Kafka timestamp")

    out["numeral_value"] = _numeral_value(out["direction"], out["input"])
    out["reason_codes"] = reasons
    out["reject_detail"] = "; ".join(details) if details else None
    return out


def _parse_time(text: Any) -> int | None:
    if not isinstance(text, str) or "T" not in text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp() * 1_000_000) if moment.microsecond == 0 else (
        int(moment.timestamp()) * 1_000_000 + moment.microsecond
    )


def _check_enums(out: dict[str, Any], reject) -> None:
    if out["event_type"] is not None and out["event_type"] != "conversion":
        reject("BAD_ENUM", f"event_type {out['event_type'][:40]!r}")
    if out["user_plan"] is not None and out["user_plan"] not in PLANS:
        reject("BAD_ENUM", f"user_plan {out['user_plan'][:40]!r}")
    if out["user_country"] is not None and not _COUNTRY.match(out["user_country"]):
        reject("BAD_ENUM", f"user_country {out['user_country'][:40]!r} is not ISO 3166-1 alpha-2")
    if out["direction"] is not None and out["direction"] not in DIRECTIONS:
        reject("BAD_ENUM", f"direction {out['direction'][:40]!r}")
        out["direction"] = None
    if out["error_code"] is not None and out["error_code"] not in ERROR_CODES:
        reject("BAD_ENUM", f"error_code {out['error_code'][:40]!r}")
    if out["endpoint"] is not None:
        if out["endpoint"] not in ENDPOINTS.values():
            reject("BAD_ENUM", f"endpoint {out['endpoint'][:40]!r}")
        elif out["direction"] is not None and ENDPOINTS[out["direction"]] != out["endpoint"]:
            reject("INCONSISTENT_ERROR", f"endpoint {out['endpoint']} does not serve {out['direction']}")


def _check_consistency(out: dict[str, Any], reject) -> None:
    success = out["success"]
    if success is None:
        return
    if success:
        if out["error_code"] is not None:
            reject("INCONSISTENT_ERROR", f"success with error_code {out['error_code']}")
        if out["http_status"] is not None and out["http_status"] != 200:
            reject("INCONSISTENT_ERROR", f"success with http_status {out['http_status']}")
        if out["direction"] is not None and out["input"] is not None:
            right = expected_output(out["direction"], out["input"])
            if out["output"] != right:
                reject("WRONG_CONVERSION",
                       f"{out['direction']}({out['input'][:40]!r}) answered {str(out['output'])[:40]!r}, "
                       f"expected {right!r}")
    else:
        if out["error_code"] is None:
            reject("INCONSISTENT_ERROR", "failure without error_code")
        if out["http_status"] is not None and out["http_status"] not in FAILURE_STATUSES:
            reject("INCONSISTENT_ERROR", f"failure with http_status {out['http_status']}")
        if out["output"] is not None:
            reject("INCONSISTENT_ERROR", "failure with an output")


def _numeral_value(direction: str | None, text: str | None) -> int | None:
    """The integer a call is about, for either direction; None when the input names none."""
    if direction is None or text is None:
        return None
    if direction == "to_roman":
        return parse_decimal(text)
    return VALUES.get(text)


# ---- the fast path ------------------------------------------------------------------------------
# Nearly every record is a valid event. Checking those with direct type tests and no dict
# building is ~4x cheaper; anything the fast path doesn't accept gets the full check above,
# which is the single source of the reason codes.

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REQUIRED_V1_SET = frozenset(REQUIRED_V1)
_REQUIRED_V2_SET = frozenset(REQUIRED_V1 + REQUIRED_V2)
_PLAN_SET = frozenset(PLANS)
_ERROR_SET = frozenset(ERROR_CODES)
_FUTURE_US = int(FUTURE_TOLERANCE.total_seconds() * 1_000_000)


def _fast_valid(doc: dict, kafka_us: int | None) -> tuple | None:
    version = doc.get("schema_version")
    if type(version) is not int:
        return None
    if version == 1:
        if not doc.keys() >= _REQUIRED_V1_SET:
            return None
        region = cache_hit = None
    elif version == 2:
        if not doc.keys() >= _REQUIRED_V2_SET:
            return None
        region, cache_hit = doc["region"], doc["cache_hit"]
        if type(region) is not str or type(cache_hit) is not bool:
            return None
    else:
        return None
    event_id, direction, text, output = doc["event_id"], doc["direction"], doc["input"], doc["output"]
    success, error, latency, status = doc["success"], doc["error_code"], doc["latency_ms"], doc["http_status"]
    user, plan, country, client = doc["user_id"], doc["user_plan"], doc["user_country"], doc.get("client")
    if (
        type(event_id) is not str or not _UUID.fullmatch(event_id)
        or doc["event_type"] != "conversion"
        or direction not in ENDPOINTS or doc["endpoint"] != ENDPOINTS[direction]
        or type(text) is not str
        or type(success) is not bool
        or type(status) is not int
        or type(latency) not in (float, int) or latency < 0
        or (user is not None and type(user) is not str)
        or (plan is not None and plan not in _PLAN_SET)
        or (country is not None and (type(country) is not str or not _COUNTRY.match(country)))
        or (client is not None and type(client) is not str)
    ):
        return None
    if success:
        if error is not None or status != 200 or output != expected_output(direction, text):
            return None
    elif error not in _ERROR_SET or status not in FAILURE_STATUSES or output is not None:
        return None
    occurred = _parse_time(doc["occurred_at"])
    if occurred is None or (kafka_us is not None and occurred - kafka_us > _FUTURE_US):
        return None
    return (
        event_id, "conversion", version, occurred, user, plan, country, direction, text, output, success,
        error, float(latency), doc["endpoint"], status, client, region, cache_hit,
        _numeral_value(direction, text), [], None,
    )


def check_events(values: list, kafka_us: list, max_value_bytes: int) -> list[tuple]:
    """``check_event`` over a batch, as tuples in FIELDS order."""
    out = []
    append = out.append
    loads = json.loads
    for value, ts in zip(values, kafka_us):
        row = None
        if value and len(value) <= max_value_bytes:
            try:
                doc = loads(value)
            except (ValueError, RecursionError):
                doc = None
            if type(doc) is dict:
                row = _fast_valid(doc, ts)
        if row is None:
            checked = check_event(value, ts, max_value_bytes)
            row = tuple(checked[f] for f in FIELDS)
        append(row)
    return out
