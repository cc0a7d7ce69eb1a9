"""The conversion-event contract, checked one raw value at a time, and in bulk.

``check_event`` never raises: whatever bytes arrive, it returns the typed fields it could read and
every reason the record breaks the contract (empty when the event is valid). It is the single
source of the reason codes. ``check_values`` checks an Arrow batch: a vectorized fast path accepts
the well-formed common case, and every other value gets ``check_event``. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tasks.roman import NUMERALS, expected_output, parse_decimal, VALUES

REASONS = (
    "OVERSIZED",
    "MALFORMED_JSON",
    "NOT_AN_OBJECT",
    "MISSING_FIELD",
    "BAD_TYPE",  # the wrong JSON type, a string no UTF-8 text holds (a lone surrogate escape), no UUID or time
    "INTEGER_OUT_OF_RANGE",  # an integer its silver column's type cannot hold (int32: schema_version, http_status)
    "NON_FINITE_NUMBER",  # a number no finite double holds: NaN, Infinity, -Infinity, 1e999, a 400-digit integer
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
# Always fullmatch: in Python ``$`` also matches before a final newline ("DE\n" passed ``^[A-Z]{2}$``).
_COUNTRY = re.compile(r"[A-Z]{2}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# RFC 3339 date-time: datetime.fromisoformat alone also takes ISO 8601 forms the contract doesn't
# (20241225T101530Z, 2024-W52-3T10:15Z, 10:15Z without seconds, +0100, +01, +01:00:30, a comma fraction).
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BOM = b"\xef\xbb\xbf"

# Output fields of a checked event, in order, with their Arrow types.
PARSED_TYPE = pa.struct(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("schema_version", pa.int32()),
        ("occurred_at_us", pa.int64()),
        ("user_id", pa.string()),
        ("user_plan", pa.string()),
        ("user_country", pa.string()),
        ("direction", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("success", pa.bool_()),
        ("error_code", pa.string()),
        ("latency_ms", pa.float64()),
        ("endpoint", pa.string()),
        ("http_status", pa.int32()),
        ("client", pa.string()),
        ("region", pa.string()),
        ("cache_hit", pa.bool_()),
        ("numeral_value", pa.int32()),
        ("reason_codes", pa.list_(pa.string())),
        ("reject_detail", pa.string()),
    ]
)
FIELDS = tuple(f.name for f in PARSED_TYPE)
# The range of every integer field, from its Arrow type: a value outside can't be stored, however big
# a JSON integer (Python reads any number of digits) is.
_INT_RANGE = {
    f.name: (-(1 << (f.type.bit_width - 1)), (1 << (f.type.bit_width - 1)) - 1)
    for f in PARSED_TYPE if pa.types.is_integer(f.type)
}

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


def _is_text(value: str) -> bool:
    """Whether a decoded JSON string is Unicode text: ``"\\ud800"`` decodes to a lone surrogate,
    which neither UTF-8 nor an Arrow string can hold."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _in_range(name: str, value: int) -> bool:
    low, high = _INT_RANGE[name]
    return low <= value <= high


def _finite(value: int | float) -> float | None:
    """The double of a JSON number, or None when no finite double holds it (NaN, Infinity and
    1e999, which Python reads as inf, or an integer beyond 1.8e308). -0 becomes 0."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number + 0.0 if math.isfinite(number) else None


class _NonFiniteLiteral(ValueError):
    """NaN, Infinity or -Infinity in a value: Python's json reads them, JSON (RFC 8259) has no such literal."""


def _refuse_constant(name: str) -> float:
    raise _NonFiniteLiteral(name)


_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def _text(value: bytes) -> str:
    """A value as the contract's UTF-8 text, a leading BOM skipped (RFC 8259 8.1 allows that).

    Never ``json.loads(bytes)``: it guesses UTF-16 and UTF-32 too, and decodes invalid UTF-8 surrogate
    bytes (ED A0 80) with 'surrogatepass', so such values passed as valid events. Raises
    UnicodeDecodeError (a ValueError) on anything that is not UTF-8.
    """
    return (value[3:] if value[:3] == _BOM else value).decode("utf-8")


def check_event(value: bytes | None, kafka_timestamp_us: int | None, max_value_bytes: int) -> dict[str, Any]:
    """Typed fields plus ``reason_codes`` (empty when valid) and a human ``reject_detail``."""
    if value is None:
        return _empty("null value (tombstone)", "MALFORMED_JSON")
    if len(value) > max_value_bytes:
        return _empty(f"value is {len(value)} bytes, over the {max_value_bytes}-byte limit", "OVERSIZED")
    if not value:
        return _empty("empty value", "MALFORMED_JSON")
    non_finite_literal = False
    try:
        text = _text(value)
        try:
            doc = _STRICT_JSON.decode(text)
        except _NonFiniteLiteral:  # read it anyway, to type the other fields; rejected below
            non_finite_literal = True
            doc = json.loads(text)
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
        elif not _in_range("schema_version", version):
            reject("INTEGER_OUT_OF_RANGE", f"schema_version {str(version)[:40]} is outside int32")
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
        if type(field_value) is str and not _is_text(field_value):
            reject("BAD_TYPE", f"{name} {field_value[:40]!r} is not Unicode text (a lone surrogate)")
            continue
        if type(field_value) is int and name in _INT_RANGE and not _in_range(name, field_value):
            reject("INTEGER_OUT_OF_RANGE", f"{name} {str(field_value)[:40]} is outside {PARSED_TYPE.field(name).type}")
            continue
        if name == "latency_ms":
            latency = _finite(field_value)
            if latency is None:
                reject("NON_FINITE_NUMBER", f"latency_ms {str(field_value)[:40]} is not a finite number")
                continue
            field_value = latency
        out[name] = field_value

    # The 8-4-4-4-12 hex text, as the fast paths require: uuid.UUID() also took "urn:uuid:...",
    # "{...}", no hyphens, and (through int(..., 16)) a sign, underscores or spaces.
    if out["event_id"] is not None and not _UUID.fullmatch(out["event_id"]):
        reject("BAD_TYPE", f"event_id {out['event_id'][:40]!r} is not a UUID")
        out["event_id"] = None

    occurred = doc.get("occurred_at")
    if occurred is not None:
        parsed = _parse_time(occurred)
        if parsed is None:
            reject("BAD_TYPE", f"occurred_at {str(occurred)[:40]!r} is not an RFC 3339 time with an offset "
                               "(in UTC years 1..9999)")
        else:
            out["occurred_at_us"] = parsed
    elif "occurred_at" in doc:
        reject("BAD_TYPE", "occurred_at is null")

    _check_enums(out, reject)
    _check_consistency(out, reject)

    if non_finite_literal and "NON_FINITE_NUMBER" not in reasons:  # one in any member, an extra one too
        reject("NON_FINITE_NUMBER", "a NaN or Infinity literal, which is not JSON")
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
    """Microseconds since the epoch of an RFC 3339 date-time with an offset (a longer fraction is
    truncated); None for anything else, and for an instant outside years 1..9999 in UTC, which no
    Python datetime holds (readers of the facts would fail on it).

    Exact integer arithmetic: the float ``timestamp()`` truncated toward zero put a fraction of a
    second before 1970 one second late (1969-12-31T23:59:59.5Z became 1970-01-01T00:00:00.5Z).
    """
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
        moment.astimezone(timezone.utc)  # OverflowError beyond 0001-01-01 or 9999-12-31 in UTC
    except (ValueError, OverflowError):
        return None
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _check_enums(out: dict[str, Any], reject) -> None:
    if out["event_type"] is not None and out["event_type"] != "conversion":
        reject("BAD_ENUM", f"event_type {out['event_type'][:40]!r}")
    if out["user_plan"] is not None and out["user_plan"] not in PLANS:
        reject("BAD_ENUM", f"user_plan {out['user_plan'][:40]!r}")
    if out["user_country"] is not None and not _COUNTRY.fullmatch(out["user_country"]):
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
            if right is None:  # a success with a null output for an input no call can answer passed
                reject("WRONG_CONVERSION",
                       f"success for {out['direction']}({out['input'][:40]!r}), which has no right answer")
            elif out["output"] != right:
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

_REQUIRED_V1_SET = frozenset(REQUIRED_V1)
_REQUIRED_V2_SET = frozenset(REQUIRED_V1 + REQUIRED_V2)
_PLAN_SET = frozenset(PLANS)
_ERROR_SET = frozenset(ERROR_CODES)
_FUTURE_US = int(FUTURE_TOLERANCE.total_seconds() * 1_000_000)
_MAX_DOUBLE = sys.float_info.max


def _fast_valid(doc: dict, kafka_us: int | None) -> tuple | None:
    version = doc.get("schema_version")
    if type(version) is not int:
        return None
    if version == 1:
        if not doc.keys() >= _REQUIRED_V1_SET or "region" in doc or "cache_hit" in doc:
            return None  # v2's fields on a v1 event: the full check types (and keeps) them
        region = cache_hit = None
    elif version == 2:
        if not doc.keys() >= _REQUIRED_V2_SET:
            return None
        region, cache_hit = doc["region"], doc["cache_hit"]
        if type(region) is not str or not _is_text(region) or type(cache_hit) is not bool:
            return None
    else:
        return None
    event_id, direction, text, output = doc["event_id"], doc["direction"], doc["input"], doc["output"]
    success, error, latency, status = doc["success"], doc["error_code"], doc["latency_ms"], doc["http_status"]
    user, plan, country, client = doc["user_id"], doc["user_plan"], doc["user_country"], doc.get("client")
    # Type tests first: a list or an object is unhashable, so it must never reach a set look-up.
    if (
        type(event_id) is not str or not _UUID.fullmatch(event_id)
        or doc["event_type"] != "conversion"
        or type(direction) is not str or direction not in ENDPOINTS or doc["endpoint"] != ENDPOINTS[direction]
        or type(text) is not str or not _is_text(text)
        or type(success) is not bool
        or type(status) is not int
        # a finite double >= 0 (NaN fails every comparison); the full check decides any other number
        or type(latency) not in (float, int) or not 0 <= latency <= _MAX_DOUBLE
        or (user is not None and (type(user) is not str or not _is_text(user)))
        or (plan is not None and (type(plan) is not str or plan not in _PLAN_SET))
        or (country is not None and (type(country) is not str or not _COUNTRY.fullmatch(country)))
        or (client is not None and (type(client) is not str or not _is_text(client)))
    ):
        return None
    if success:
        right = expected_output(direction, text)
        if error is not None or status != 200 or right is None or output != right:
            return None
    elif (type(error) is not str or error not in _ERROR_SET or status not in FAILURE_STATUSES
          or output is not None):
        return None
    occurred = _parse_time(doc["occurred_at"])
    if occurred is None or (kafka_us is not None and occurred - kafka_us > _FUTURE_US):
        return None
    return (
        event_id, "conversion", version, occurred, user, plan, country, direction, text, output, success,
        error, float(latency) + 0.0, doc["endpoint"], status, client, region, cache_hit,
        _numeral_value(direction, text), [], None,
    )


def check_events(values: list, kafka_us: list, max_value_bytes: int) -> list[tuple]:
    """``check_event`` over a batch, as tuples in FIELDS order."""
    out = []
    append = out.append
    loads = _STRICT_JSON.decode  # a NaN or Infinity anywhere, or non-UTF-8 bytes: check_event decides
    for value, ts in zip(values, kafka_us):
        row = None
        if value and len(value) <= max_value_bytes:
            try:
                doc = loads(_text(value))
            except (ValueError, RecursionError):
                doc = None
            if type(doc) is dict:
                row = _fast_valid(doc, ts)
        if row is None:
            checked = check_event(value, ts, max_value_bytes)
            row = tuple(checked[f] for f in FIELDS)
        append(row)
    return out


# ---- the vectorized fast path ---------------------------------------------------------------------
# Per-row Python (json.loads + the checks above) costs ~12 us a record, most of a promotion. Here a
# batch is checked with Arrow kernels instead: one regular expression proves a value is a JSON object
# in exactly the contract's shape (its fields in contract order, each once, of the right JSON type,
# strings of printable ASCII without escapes, so the JSON text of a string is its value), Arrow's JSON
# reader then types those values in bulk (it cannot fail on them), and vector checks do the rest.
# A value the fast path doesn't accept is not rejected by it: it goes to ``check_events``, so the
# result is always exactly what ``check_event`` says. Producers emitting fields in another order or
# with escapes stay correct, only slower.

_WS = r"[ \t]*"
_TEXT = r'"[ !#-\[\]-~]*"'  # printable ASCII, no quote, no backslash
_UUID_TEXT = r'"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"'
# UTC only, whole seconds or milli/microseconds: forms where datetime.fromisoformat and Arrow's cast
# agree (Arrow refuses Feb 30, 24:00 or :60 as Python does; then ``_parse_time`` decides, one by one).
_UTC_TIME = r'"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}(?:[0-9]{3})?)?(?:Z|\+00:00)"'
_LATENCY = r"(?:0|[1-9][0-9]{0,8})(?:\.[0-9]{1,15})?"  # non-negative, no exponent: Arrow parses it as Python does


def _members(*pairs: tuple[str, str]) -> str:
    return f"{_WS},".join(f'{_WS}"{name}"{_WS}:{_WS}{value}' for name, value in pairs)


def _one_of(*options: str) -> str:
    return "(?:" + "|".join(options) + ")"


_SHAPE = (
    "^" + _WS + r"\{"
    + _members(
        ("event_id", _UUID_TEXT),
        ("event_type", '"conversion"'),
        ("schema_version", "[12]"),
        ("occurred_at", _UTC_TIME),
        ("user_id", _one_of("null", _TEXT)),
        ("user_plan", _one_of("null", *(f'"{p}"' for p in PLANS))),
        ("user_country", _one_of("null", '"[A-Z]{2}"')),
        ("direction", _one_of(*(f'"{d}"' for d in DIRECTIONS))),
        ("input", _TEXT),
        ("output", _one_of("null", _TEXT)),
        ("success", "(?:true|false)"),
        ("error_code", _one_of("null", *(f'"{e}"' for e in ERROR_CODES))),
        ("latency_ms", _LATENCY),
        ("endpoint", _one_of(*(f'"{e}"' for e in ENDPOINTS.values()))),
        ("http_status", _one_of("200", *(str(s) for s in FAILURE_STATUSES))),
    )
    + f"(?:{_WS},{_members(('client', _one_of('null', _TEXT)))})?"
    + f"(?:{_WS},{_members(('region', _TEXT), ('cache_hit', '(?:true|false)'))})?"
    + _WS + r"\}" + _WS + "$"
)

_SHAPED_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_type", pa.string()), ("schema_version", pa.int64()),
    ("occurred_at", pa.string()), ("user_id", pa.string()), ("user_plan", pa.string()),
    ("user_country", pa.string()), ("direction", pa.string()), ("input", pa.string()), ("output", pa.string()),
    ("success", pa.bool_()), ("error_code", pa.string()), ("latency_ms", pa.float64()),
    ("endpoint", pa.string()), ("http_status", pa.int64()), ("client", pa.string()), ("region", pa.string()),
    ("cache_hit", pa.bool_()),
])
_NUMERALS = pa.array(NUMERALS[1:], pa.string())  # value n at index n - 1


def check_values(values: pa.Array, kafka_us: pa.Array, max_value_bytes: int) -> pa.StructArray:
    """``check_event`` over an Arrow batch of raw values, as a PARSED_TYPE array in input order."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(kafka_us, pa.ChunkedArray):
        kafka_us = kafka_us.combine_chunks()
    kafka_us = kafka_us.cast(pa.int64())
    count = len(values)
    positions = pa.array(range(count), pa.int64())
    shaped = pc.fill_null(
        pc.and_(pc.less_equal(pc.binary_length(values), max_value_bytes), pc.match_substring_regex(values, _SHAPE)),
        False,
    )
    fast_rows, fast_at = _fast_rows(values.filter(shaped), kafka_us.filter(shaped), positions.filter(shaped))
    slow_at = positions.filter(pc.invert(pc.is_in(positions, value_set=fast_at))) if len(fast_at) else positions
    slow_rows = pa.array(
        check_events(values.take(slow_at).to_pylist(), kafka_us.take(slow_at).to_pylist(), max_value_bytes),
        type=PARSED_TYPE,
    )
    rows = pa.concat_arrays([fast_rows, slow_rows])
    order = pa.concat_arrays([fast_at, slow_at])
    return rows.take(pc.sort_indices(order))


def _fast_rows(values: pa.Array, kafka_us: pa.Array, positions: pa.Array) -> tuple[pa.StructArray, pa.Array]:
    """The shaped values that pass every check, typed, and their positions; the rest fall back."""
    empty = pa.array([], PARSED_TYPE), pa.array([], pa.int64())
    if not len(values):
        return empty
    # The shaped values back to back are a stream of JSON objects: no copy, no separators needed.
    text = values.buffers()[2].slice(_first_offset(values), pc.sum(pc.binary_length(values)).as_py())
    try:
        doc = pj.read_json(
            pa.BufferReader(text),
            read_options=pj.ReadOptions(block_size=max(1 << 20, min(text.size // 4 + 1, 32 << 20))),
            parse_options=pj.ParseOptions(explicit_schema=_SHAPED_SCHEMA, unexpected_field_behavior="error",
                                          newlines_in_values=True),
        )
    except pa.ArrowInvalid:  # the shape guarantees this doesn't happen; if it does, check_event decides
        return empty
    if doc.num_rows != len(values):
        return empty
    doc = doc.combine_chunks()
    c = {name: doc.column(name).chunk(0) if doc.column(name).num_chunks else pa.array([], doc.schema.field(name).type)
         for name in doc.column_names}

    occurred_us = _utc_micros(c["occurred_at"])
    to_roman = pc.equal(c["direction"], "to_roman")
    decimal = pc.match_substring_regex(c["input"], r"^[1-9][0-9]{0,3}$")
    from_decimal = pc.cast(pc.if_else(decimal, c["input"], pa.scalar(None, pa.string())), pa.int64())
    from_decimal = pc.if_else(pc.less_equal(from_decimal, len(_NUMERALS)), from_decimal, pa.scalar(None, pa.int64()))
    from_numeral = pc.add(pc.index_in(c["input"], value_set=_NUMERALS).cast(pa.int64()), 1)
    numeral = pc.if_else(to_roman, from_decimal, from_numeral)
    expected = pc.if_else(to_roman, _NUMERALS.take(pc.subtract(numeral, 1)), pc.cast(numeral, pa.string()))
    succeeded = c["success"]
    consistent = pc.if_else(
        succeeded,
        pc.and_kleene(pc.is_null(c["error_code"]), pc.and_kleene(pc.equal(c["http_status"], 200),
                                                               pc.equal(c["output"], expected))),
        pc.and_kleene(pc.is_valid(c["error_code"]), pc.and_kleene(pc.not_equal(c["http_status"], 200),
                                                                pc.is_null(c["output"]))),
    )
    served = pc.equal(c["endpoint"], pc.if_else(to_roman, ENDPOINTS["to_roman"], ENDPOINTS["from_roman"]))
    versioned = pc.equal(pc.equal(c["schema_version"], 2), pc.is_valid(c["region"]))  # v2 iff region+cache_hit
    on_time = pc.or_kleene(pc.is_null(kafka_us),
                           pc.less_equal(pc.subtract(occurred_us, kafka_us), _FUTURE_US))
    accepted = pc.fill_null(
        pc.and_kleene(pc.and_kleene(consistent, served), pc.and_kleene(versioned, on_time)), False
    )
    accepted = pc.and_(accepted, pc.is_valid(occurred_us))

    taken = doc.filter(accepted)
    n = taken.num_rows

    def col(name: str) -> pa.Array:
        return taken.column(name).combine_chunks() if n else pa.array([], doc.schema.field(name).type)

    arrays = {
        "event_id": col("event_id"),
        "event_type": pa.array(["conversion"] * n, pa.string()),
        "schema_version": col("schema_version").cast(pa.int32()),
        "occurred_at_us": occurred_us.filter(accepted),
        "user_id": col("user_id"),
        "user_plan": col("user_plan"),
        "user_country": col("user_country"),
        "direction": col("direction"),
        "input": col("input"),
        "output": col("output"),
        "success": col("success"),
        "error_code": col("error_code"),
        "latency_ms": col("latency_ms"),
        "endpoint": col("endpoint"),
        "http_status": col("http_status").cast(pa.int32()),
        "client": col("client"),
        "region": col("region"),
        "cache_hit": col("cache_hit"),
        "numeral_value": numeral.filter(accepted).cast(pa.int32()),
        "reason_codes": pa.ListArray.from_arrays(pa.array([0] * (n + 1), pa.int32()), pa.array([], pa.string())),
        "reject_detail": pa.nulls(n, pa.string()),
    }
    rows = pa.StructArray.from_arrays([arrays[f] for f in FIELDS], fields=list(PARSED_TYPE))
    return rows, positions.filter(accepted)


def _first_offset(values: pa.Array) -> int:
    """Where the first value's bytes start in the data buffer (a filtered array starts at 0)."""
    kind = pa.int64() if pa.types.is_large_binary(values.type) else pa.int32()
    return pa.Array.from_buffers(kind, 1, [None, values.buffers()[1]], offset=values.offset)[0].as_py()


def _utc_micros(text: pa.Array) -> pa.Array:
    """Microseconds since the epoch of shaped UTC times, as ``_parse_time`` gives them; null when
    datetime.fromisoformat would refuse one (an impossible date or time), and before 1970 (rare: the
    per-row check decides those, year 0000 among them, which Arrow takes and Python refuses)."""
    try:
        micros = pc.cast(text, pa.timestamp("us", "UTC")).cast(pa.int64())
    except pa.ArrowInvalid:  # Arrow refuses an impossible date or time (Feb 30, 24:00, :60): one by one
        micros = pa.array([_parse_time(t) for t in text.to_pylist()], pa.int64())
    return pc.if_else(pc.greater_equal(micros, 0), micros, pa.scalar(None, pa.int64()))
