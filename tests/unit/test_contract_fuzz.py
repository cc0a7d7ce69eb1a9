"""Fuzzed input (issue "Security"): silver's contract check never raises, and accounts for every record.

Whatever bytes arrive, ``check_values`` / ``check_event`` and the pure silver split
(``silver.validate`` -> ``silver.valid`` + ``silver.rejected``, Daft frames, no catalog) must:

- never raise;
- put every bronze record exactly once in facts or in the quarantine (keyed by the Kafka position
  this test assigns);
- give every quarantined record a non-empty reason from the documented set, and a detail;
- only let through records that satisfy the contract, as judged by ``judge`` below: a small
  plain-Python reading of ``/work/shared/contracts/conversion-event.md`` (plus silver's documented
  FUTURE_EVENT rule), written without the code's functions; a fact carries exactly the event's
  values; and every record ``judge`` finds valid is a fact.

Inputs: arbitrary bytes (invalid UTF-8, empty, NUL), other encodings of valid events (UTF-16/32,
BOM), adversarial JSON (10 000 levels of nesting, 10**400, 1e309, NaN/Infinity literals, duplicate
keys, lone surrogate escapes and bytes, overlong strings, values just below and above the size
limit, wrong types, extra, missing and null fields), and valid events mutated one field at a time.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import daft
import pyarrow as pa
from hypothesis import HealthCheck, given, note, settings, strategies as st

from tasks.transforms import silver
from tasks.transforms.contract import FIELDS, check_event, check_values
from tests.roman_oracle import ROMAN, ROMAN_VALUE

KAFKA_TS = datetime(2024, 12, 25, 12, 0, tzinfo=timezone.utc)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
KAFKA_US = (KAFKA_TS - EPOCH) // timedelta(microseconds=1)
LIMIT = 64 * 1024  # silver_max_value_bytes: the check takes it as an argument (the setting is >= 1 KiB)

# The reason codes tasks/transforms/contract.py documents (REASONS), restated: a new code is a conscious change.
DOCUMENTED_REASONS = frozenset({
    "OVERSIZED", "MALFORMED_JSON", "NOT_AN_OBJECT", "MISSING_FIELD", "BAD_TYPE", "INTEGER_OUT_OF_RANGE",
    "NON_FINITE_NUMBER", "UNKNOWN_SCHEMA_VERSION", "BAD_ENUM", "WRONG_CONVERSION", "INCONSISTENT_ERROR",
    "NEGATIVE_LATENCY", "FUTURE_EVENT",
})


# ---- the contract, read independently ------------------------------------------------------------

V1 = ("event_id", "event_type", "schema_version", "occurred_at", "user_id", "user_plan", "user_country",
      "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status")
V2 = ("region", "cache_hit")
KINDS = {  # field: (JSON kind, nullable). region/cache_hit on a v1 event are typed too: silver keeps them.
    "event_id": ("text", False), "event_type": ("text", False), "schema_version": ("int", False),
    "occurred_at": ("text", False), "user_id": ("text", True), "user_plan": ("text", True),
    "user_country": ("text", True), "direction": ("text", False), "input": ("text", False),
    "output": ("text", True), "success": ("bool", False), "error_code": ("text", True),
    "latency_ms": ("number", False), "endpoint": ("text", False), "http_status": ("int", False),
    "client": ("text", True), "region": ("text", False), "cache_hit": ("bool", False),
}
PLANS = {"free", "pro", "enterprise"}
ENDPOINTS = {"to_roman": "/v1/to-roman", "from_roman": "/v1/from-roman"}
ERROR_CODES = {"INVALID_NUMERAL", "OUT_OF_RANGE", "MALFORMED_REQUEST"}
INT32 = (-(2**31), 2**31 - 1)
FUTURE_TOLERANCE_US = 5 * 60 * 1_000_000
UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
COUNTRY = re.compile(r"[A-Z]{2}")
# RFC 3339 date-time (section 5.6), with the upper-case T and Z the contract's example uses.
RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
                     r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))")
BOM = b"\xef\xbb\xbf"
# Silver's own rule: UTC years 1..9999, the instants a Python datetime (any reader of the facts) holds.
FIRST_US = (datetime(1, 1, 1, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)
LAST_US = (datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc) - EPOCH) // timedelta(microseconds=1)




def numeral_of(direction: str | None, text: str | None) -> int | None:
    """The integer 1..3999 a call is about: a plain decimal (no sign, no leading zero) or a canonical numeral."""
    if direction == "to_roman" and text is not None and re.fullmatch(r"[1-9][0-9]{0,3}", text) and int(text) <= 3999:
        return int(text)
    if direction == "from_roman":
        return ROMAN_VALUE.get(text)
    return None


def right_answer(direction: str, text: str) -> str | None:
    n = numeral_of(direction, text)
    if n is None:
        return None
    return ROMAN[n] if direction == "to_roman" else str(n)


def instant_us(text: str) -> int | None:
    """Microseconds since the epoch of an RFC 3339 date-time (fraction truncated to microseconds)."""
    match = RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    micro = int((match.group(7) or "")[:6].ljust(6, "0"))
    try:
        local = datetime(year, month, day, hour, minute, second, micro)
    except ValueError:  # Feb 30, 24:00, a leap second, year 0: no instant Python (or Iceberg) holds
        return None
    offset_minutes = 0
    if match.group(8):
        hours, minutes = int(match.group(9)), int(match.group(10))
        if hours > 23 or minutes > 59:
            return None
        offset_minutes = (hours * 60 + minutes) * (1 if match.group(8) == "+" else -1)
    micros = (local - datetime(1970, 1, 1)) // timedelta(microseconds=1) - offset_minutes * 60_000_000
    return micros if FIRST_US <= micros <= LAST_US else None  # silver: an instant a timestamp column holds


def is_text(value: str) -> bool:
    try:
        value.encode("utf-8")  # a "\ud800" escape decodes to a lone surrogate: no UTF-8 text
    except UnicodeEncodeError:
        return False
    return True


def fits(kind: str, value) -> bool:
    if kind == "bool":
        return type(value) is bool
    if kind == "int":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float)
    return type(value) is str and is_text(value)


@dataclass
class Judgement:
    reasons: set[str]  # reasons the record certainly breaks the contract for; empty when valid
    fact: dict | None  # the typed event (check_values' fields) when valid


def judge(value: bytes | None, kafka_us: int | None, limit: int = LIMIT) -> Judgement:
    """The contract, in plain Python. Only its verdict and these reasons are compared to silver's."""
    if value is None or value == b"":
        return Judgement({"MALFORMED_JSON"}, None)
    if len(value) > limit:
        return Judgement({"OVERSIZED"}, None)
    body = value[len(BOM):] if value.startswith(BOM) else value  # RFC 8259 8.1: a parser MAY skip a BOM
    constants: list[str] = []
    try:
        text = body.decode("utf-8")  # "one UTF-8 JSON object": strict, no surrogates, no UTF-16
        doc = json.loads(text, parse_constant=lambda name: constants.append(name) or float(name))
    except (ValueError, RecursionError):
        return Judgement({"MALFORMED_JSON"}, None)
    if not isinstance(doc, dict):
        return Judgement({"NOT_AN_OBJECT"}, None)

    reasons: set[str] = set()
    if constants:  # NaN, Infinity, -Infinity: not JSON (RFC 8259 section 6), wherever they are
        reasons.add("NON_FINITE_NUMBER")
    typed: dict = {}
    for name, (kind, nullable) in KINDS.items():
        if name not in doc:
            continue
        item = doc[name]
        if item is None:
            if nullable:
                typed[name] = None
            else:
                reasons.add("BAD_TYPE")
        elif fits(kind, item):
            typed[name] = item
        else:
            reasons.add("BAD_TYPE")

    version = typed.get("schema_version")
    if version is not None and not INT32[0] <= version <= INT32[1]:
        reasons.add("INTEGER_OUT_OF_RANGE")
    elif version is not None and version not in (1, 2):
        reasons.add("UNKNOWN_SCHEMA_VERSION")
    if any(name not in doc for name in (V1 + V2 if version == 2 else V1)):
        reasons.add("MISSING_FIELD")
    status = typed.get("http_status")
    if status is not None and not INT32[0] <= status <= INT32[1]:
        reasons.add("INTEGER_OUT_OF_RANGE")
        status = None
    latency = typed.get("latency_ms")
    if latency is not None:
        try:
            latency = float(latency) + 0.0  # -0 is 0
        except OverflowError:  # an integer beyond any double
            latency = math.inf
        if not math.isfinite(latency):
            reasons.add("NON_FINITE_NUMBER")
        elif latency < 0:
            reasons.add("NEGATIVE_LATENCY")
    if typed.get("event_id") is not None and not UUID_TEXT.fullmatch(typed["event_id"]):
        reasons.add("BAD_TYPE")
    occurred = instant_us(typed["occurred_at"]) if typed.get("occurred_at") is not None else None
    if "occurred_at" in typed and occurred is None:
        reasons.add("BAD_TYPE")

    if typed.get("event_type") not in (None, "conversion"):
        reasons.add("BAD_ENUM")
    if typed.get("user_plan") is not None and typed["user_plan"] not in PLANS:
        reasons.add("BAD_ENUM")
    if typed.get("user_country") is not None and not COUNTRY.fullmatch(typed["user_country"]):
        reasons.add("BAD_ENUM")
    direction = typed.get("direction")
    if direction is not None and direction not in ENDPOINTS:
        reasons.add("BAD_ENUM")
        direction = None
    if typed.get("error_code") is not None and typed["error_code"] not in ERROR_CODES:
        reasons.add("BAD_ENUM")
    endpoint = typed.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINTS.values():
        reasons.add("BAD_ENUM")
    elif endpoint is not None and direction is not None and ENDPOINTS[direction] != endpoint:
        reasons.add("INCONSISTENT_ERROR")

    success, output, error = typed.get("success"), typed.get("output"), typed.get("error_code")
    if success is True:
        if error is not None or (status is not None and status != 200):
            reasons.add("INCONSISTENT_ERROR")
        if direction is not None and typed.get("input") is not None:
            right = right_answer(direction, typed["input"])
            if right is None or output != right:  # a success must answer an answerable call, rightly
                reasons.add("WRONG_CONVERSION")
    elif success is False:
        if error is None or (status is not None and status not in (400, 422)) or output is not None:
            reasons.add("INCONSISTENT_ERROR")
    if occurred is not None and kafka_us is not None and occurred - kafka_us > FUTURE_TOLERANCE_US:
        reasons.add("FUTURE_EVENT")
    if reasons:
        return Judgement(reasons, None)

    fact = {name: typed.get(name) for name in KINDS}
    fact.update(occurred_at_us=occurred, latency_ms=latency, numeral_value=numeral_of(direction, typed["input"]))
    del fact["occurred_at"]
    return Judgement(set(), fact)


# ---- generators -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    value: bytes | None
    kind: str  # how it was made, for failure messages
    valid: bool = False  # made to be a valid event (at KAFKA_TS)

    def __repr__(self) -> str:
        shown = self.value if self.value is None or len(self.value) <= 300 else self.value[:300] + b"..."
        return f"Case({self.kind!r}, {shown!r}, {len(self.value or b'')} bytes)"


def fmt_time(moment: datetime, offset_minutes: int, digits: int, zulu: bool) -> str:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:{local.minute:02d}:"
            f"{local.second:02d}")
    if digits:
        text += "." + f"{local.microsecond:06d}{'0' * 3}"[:digits]
    if offset_minutes == 0 and zulu:
        return text + "Z"
    sign = "+" if offset_minutes >= 0 else "-"
    return text + f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"


TEXTS = st.text(max_size=12)  # any Unicode text (no lone surrogates)


@st.composite
def valid_events(draw) -> dict:
    """A valid event (as JSON values) for KAFKA_TS: v1 or v2, anonymous or not, success or failure,
    any time from year 1 to the tolerance, any offset."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(2024, 12, 25, 12, 5),
                               timezones=st.just(timezone.utc)))
    offset = draw(st.sampled_from([0, 0, 60, -300, 330, 23 * 60 + 59, -(23 * 60 + 59)]))
    doc = {
        "event_id": str(draw(st.uuids())),
        "event_type": "conversion",
        "schema_version": draw(st.sampled_from([1, 2])),
        "occurred_at": fmt_time(moment, offset, draw(st.sampled_from([0, 3, 6, 1, 9])), draw(st.booleans())),
    }
    if draw(st.booleans()):
        doc.update(user_id=None, user_plan=None, user_country=None)
    else:
        doc.update(user_id=draw(TEXTS), user_plan=draw(st.sampled_from([*PLANS, None])),
                   user_country=draw(st.sampled_from(["DE", "FR", "US", "ZZ", None])))
    direction = draw(st.sampled_from(list(ENDPOINTS)))
    n = draw(st.integers(1, 3999))
    if draw(st.integers(0, 3)):
        call = (str(n), ROMAN[n]) if direction == "to_roman" else (ROMAN[n], str(n))
        doc.update(direction=direction, input=call[0], output=call[1], success=True, error_code=None)
        status = 200
    else:
        doc.update(direction=direction, input=draw(TEXTS | st.just(str(n))), output=None, success=False,
                   error_code=draw(st.sampled_from(sorted(ERROR_CODES))))
        status = draw(st.sampled_from([400, 422]))
    doc["latency_ms"] = draw(st.floats(min_value=0, max_value=1e308) | st.integers(0, 10**18))
    doc.update(endpoint=ENDPOINTS[direction], http_status=status)
    client = draw(st.sampled_from(["absent", "null", "text"]))
    if client != "absent":
        doc["client"] = None if client == "null" else draw(TEXTS)
    if doc["schema_version"] == 2:
        doc.update(region=draw(TEXTS), cache_hit=draw(st.booleans()))
    if draw(st.booleans()):  # any member order (the vectorized path only takes the contract's order)
        doc = {name: doc[name] for name in draw(st.permutations(list(doc)))}
    return doc


def dumps(doc: dict, style: int) -> bytes:
    if style == 0:  # the producer's compact form: the vectorized fast path
        return json.dumps(doc, separators=(",", ":")).encode()
    if style == 1:
        return json.dumps(doc).encode()
    if style == 2:
        return json.dumps(doc, ensure_ascii=False).encode()
    return json.dumps(doc, indent=1, ensure_ascii=False).encode()


def members(doc: dict) -> list[tuple[bytes, bytes]]:
    return [(json.dumps(k).encode(), json.dumps(v, ensure_ascii=False).encode()) for k, v in doc.items()]


def join(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


UUID_A = "6f1c2a7e-3b7d-4a53-9f1e-0c6a2d9b4e11"
DEEP_ARRAY = b"[" * 10_000 + b"]" * 10_000  # 20 KB, under the limit: the parser must give up, not crash
DEEP_OBJECT = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
HUGE_INT = str(10**400).encode()  # Python reads it; no double or int32 holds it
# JSON texts any field might get (bytes: some are not UTF-8).
GENERIC = [
    b"null", b"true", b"false", b"0", b"-0", b"1", b"2", b"-1", b"200", b"422", b"3.2", b"-0.5", b"1e309",
    b"-1e309", b"1E-400", b"NaN", b"Infinity", b"-Infinity", HUGE_INT, b"-" + HUGE_INT, b"1" * 5_000,
    str(2**31).encode(), str(-(2**31) - 1).encode(), str(2**63).encode(), b"1.0", b"2e2", b'""', b'"x"',
    b'"\\ud800"', b'"\\udfff"', b'"\\udc80x"', b'"\\ud83d\\ude00"', b'"\xed\xa0\x80"', b'"\xff"', b'"\xc3"',
    b'"a\\u0000b"', b'"\x00"', b'"\\u0000"', b"[]", b"{}", b"[1]", b'{"a":1}', b'["x"]', b"[null]",
    b"[NaN]", DEEP_ARRAY, DEEP_OBJECT, b'"' + b"x" * 5_000 + b'"', '"{}"'.format("\u00e9" * 2_000).encode(),
    b'"' + b"\\u00e9" * 1_000 + b'"', b'"' + b"y" * (LIMIT + 10) + b'"',
]
NEAR = {  # texts close to a field's valid values
    "event_id": [UUID_A.upper(), "urn:uuid:" + UUID_A, "{" + UUID_A + "}", UUID_A.replace("-", ""),
                 "+" + UUID_A.replace("-", "")[1:], "6f1c_a7e" + UUID_A.replace("-", "")[8:],
                 " " + UUID_A.replace("-", "")[1:], "--" + UUID_A.replace("-", "") + "--", UUID_A + "\n",
                 UUID_A[:-1], UUID_A + "0", "00000000-0000-0000-0000-000000000000", "\uff16" + UUID_A[1:]],
    "event_type": ["conversion", "Conversion", "conversion ", "conversion\n", "click", "conversion\x00"],
    "schema_version": [1, 2, 0, 3, -1, 1.0, True, "1", 2**31, 99, None],
    "occurred_at": [
        "2024-12-25T10:15:30Z", "2024-12-25T10:15:30.123456789Z", "2024-12-25T10:15:30z", "2024-12-25t10:15:30Z",
        "20241225T101530Z", "2024-12-25T10:15Z", "2024-12-25T10Z", "2024-W52-3T10:15:30Z", "2024-12-25T10:15:30,5Z",
        "2024-12-25T10:15:30+0100", "2024-12-25T10:15:30+01", "2024-12-25T10:15:30+01:00:30", "2024-12-25T10:15:30",
        "2024-12-25 10:15:30Z", "2024-02-30T10:15:30Z", "2024-12-25T24:00:00Z", "2016-12-31T23:59:60Z",
        "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "0001-01-01T00:30:00+00:31", "1969-12-31T23:59:59.5Z",
        "1900-01-01T00:00:00.000001Z", "2024-12-25T12:05:00Z", "2024-12-25T12:05:00.000001Z",
        "2024-12-25T10:15:30+24:00", "2024-12-25T10:15:30.Z", "2024-12-25T10:15:3\u0661Z", "2024-12-25T10:15:30Z\n",
        "\u200b2024-12-25T10:15:30Z", 1735121730000, "2024-12-25T10:15:30-00:00",
    ],
    "user_id": [None, "", "u", "u\x00", "\U0001f600", "\u00e9"],
    "user_plan": ["free", "pro", "enterprise", None, "Free", "pro ", "pro\n", "platinum", ""],
    "user_country": ["DE", None, "de", "DE\n", "D", "DEU", " DE", "D1", "\u00c4E", "\uff24\uff25"],
    "direction": ["to_roman", "from_roman", "to_roman\n", "TO_ROMAN", "", "sideways"],
    "input": ["0", "0994", "4000", "1994", "+12", " 12", "12 ", "\u0661\u0662", "MCMXCIV", "iv", "IIII", "IV\n",
              "1994\n", "", "9" * 30, "\u2167"],
    "output": [None, "MCMXCIV", "mcmxciv", "1994", "", "MCMXCIV\n", "MCMXCIV "],
    "success": [True, False, "true", 1, 0, None],
    "error_code": [None, "OUT_OF_RANGE", "INVALID_NUMERAL", "MALFORMED_REQUEST", "TEAPOT", "out_of_range",
                   "OUT_OF_RANGE\n"],
    "latency_ms": [0, -0.0, 12, 3.2, 1e308, 1.7976931348623157e308, 10**300, -0.5, -1e308, 5e-324],
    "endpoint": ["/v1/to-roman", "/v1/from-roman", "/v1/to-roman/", "/V1/TO-ROMAN", "/v1/to-roman\n",
                 "http://x/v1/to-roman"],
    "http_status": [200, 400, 422, 201, 500, 0, 200.0, "200", 2**31, -(2**31) - 1, 10**40, True],
    "client": [None, "web", "", "\x00"],
    "region": ["eu-west-1", "", None, 1],
    "cache_hit": [True, False, None, 0, "true"],
}
NEAR_TEXTS = {name: [json.dumps(v, ensure_ascii=False).encode() for v in values] for name, values in NEAR.items()}
NEAR_TEXTS["latency_ms"] += [b"-0", b"0e0", b"1.8e308", b"-1E-400", b"1E-400", b"0.1234567890123"]
NEAR_TEXTS["http_status"] += [b"-0", b"2e2", b"200.000"]
NEAR_TEXTS["schema_version"] += [b"1.0", b"1e0", b"-0"]
HOSTILE_KEYS = [b'"extra"', b'""', b'"\\ud800"', b'"\xed\xa0\x80"', b'"event_id "', b'"EVENT_ID"', b'"\\u0000"']


@st.composite
def mutated_events(draw) -> Case:
    """A valid event with one member replaced, removed, repeated, or one member added."""
    doc = draw(valid_events())
    pairs = members(doc)
    how = draw(st.sampled_from(["replace", "replace", "replace", "drop", "duplicate", "extra"]))
    name = draw(st.sampled_from(list(KINDS)))
    text = draw(st.sampled_from(NEAR_TEXTS[name]) | st.sampled_from(GENERIC))
    key = json.dumps(name).encode()
    at = next((i for i, (k, _) in enumerate(pairs) if k == key), None)
    if how == "replace":
        if at is None:
            pairs.append((key, text))
        else:
            pairs[at] = (key, text)
    elif how == "drop" and at is not None:
        del pairs[at]
    elif how == "duplicate":  # before or after the original: JSON leaves repeated names to the parser
        pairs.insert(draw(st.integers(0, len(pairs))), (key, text))
    elif how == "extra":
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(st.sampled_from(HOSTILE_KEYS)), text))
    return Case(join(pairs), f"{how} {name}")


@st.composite
def reencoded_events(draw) -> Case:
    """A valid event in another encoding or framing: only the UTF-8 (BOM allowed) JSON object is valid."""
    text = json.dumps(draw(valid_events()), ensure_ascii=draw(st.booleans()))
    how = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig", "latin-1", "spaces",
                                "nul", "truncated", "array", "string", "garbage", "two"]))
    if how == "latin-1":
        value = text.encode("latin-1", "replace")
    elif how in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"):
        value = text.encode(how)
    elif how == "spaces":
        value = b" \t\r\n" + text.encode() + b"\n "
    elif how == "nul":
        value = text.encode() + b"\x00"
    elif how == "truncated":
        raw = text.encode()
        value = raw[: draw(st.integers(1, len(raw) - 1))]
    elif how == "array":
        value = b"[" + text.encode() + b"]"
    elif how == "string":
        value = json.dumps(text).encode()
    elif how == "garbage":
        value = text.encode() + draw(st.sampled_from([b"x", b"}", b",", b"\xff", b"{}"]))
    else:
        value = text.encode() + b"\n" + text.encode()
    return Case(value, f"encoded {how}")


@st.composite
def sized_events(draw) -> Case:
    """A valid event padded (a long client) to just below, at, or just above the size limit."""
    doc = {**draw(valid_events()), "client": ""}
    base = len(dumps(doc, 0))
    target = LIMIT + draw(st.sampled_from([-1, 0, 1, 2]))
    doc["client"] = "p" * (target - base)
    value = dumps(doc, 0)
    assert len(value) == target
    return Case(value, f"size {target - LIMIT:+d}", valid=target <= LIMIT)


FIXED = [
    None, b"", b"\x00", b"\x00" * 10, b" ", b"{}", b"[]", b"null", b"true", b"0", b"NaN", b"Infinity",
    b"-Infinity", b"1e309", HUGE_INT, b"1" * 5_000, DEEP_ARRAY, b"[" * 10_000, DEEP_OBJECT, b'"\\ud800"',
    b"\xff\xfe", b"\xfe\xff\x00{", BOM, BOM + b"{}", b'{"a":NaN}', b'{"a":1,"a":2}', b"\xed\xa0\x80",
    b"{" * 70_000, b"x" * (LIMIT + 1), b'{"event_id":' + b'"' + b"\\u0000" * 3_000 + b'"}',
]
SURROGATE_TEXT = st.text(st.characters(codec=None, categories=["Cs", "Lu", "Nd", "Po"]), max_size=20)
ARBITRARY = st.one_of(
    st.binary(max_size=120).map(lambda b: Case(b, "bytes")),
    st.text(max_size=60).map(lambda s: Case(s.encode(), "text")),
    SURROGATE_TEXT.map(lambda s: Case(s.encode("utf-8", "surrogatepass"), "surrogate bytes")),
    st.sampled_from(FIXED).map(lambda b: Case(b, "fixed")),
)
VALID = st.builds(lambda doc, style: Case(dumps(doc, style), f"valid style {style}", valid=True),
                  valid_events(), st.integers(0, 3))
CASES = st.one_of(VALID, mutated_events(), mutated_events(), reencoded_events(), sized_events(), ARBITRARY)


# ---- the properties ---------------------------------------------------------------------------------

def assert_fact(fact: dict, judgement: Judgement, case: Case) -> None:
    """A fact is a valid event (``judge``), and carries exactly its values."""
    assert not judgement.reasons, (case, "silver accepted a record that breaks the contract", judgement.reasons)
    for name, want in judgement.fact.items():
        got = fact[name]
        assert got == want and type(got) is type(want), (case, name, got, want)


def assert_rejected(codes: list[str], detail: str | None, judgement: Judgement, case: Case) -> None:
    assert codes, case
    assert set(codes) <= DOCUMENTED_REASONS, (case, codes)
    assert len(codes) == len(set(codes)), (case, codes)
    assert isinstance(detail, str) and detail.strip(), (case, codes, detail)
    assert judgement.reasons, (case, "silver rejected a valid event", codes, detail)
    assert judgement.reasons <= set(codes), (case, "reasons missed", judgement.reasons - set(codes), codes, detail)


def check_rows(cases: list[Case], kafka_us: list[int | None], rows: list[dict]) -> None:
    assert len(rows) == len(cases)
    for case, ts, row in zip(cases, kafka_us, rows):
        judgement = judge(case.value, ts)
        if row["reason_codes"]:
            assert_rejected(row["reason_codes"], row["reject_detail"], judgement, case)
        else:
            assert row["reject_detail"] is None, case
            assert_fact(row, judgement, case)


KAFKA_TIMES = st.sampled_from([KAFKA_US, KAFKA_US, KAFKA_US, None, KAFKA_US - 86_400_000_000 * 3650])


@given(st.lists(st.tuples(CASES, KAFKA_TIMES), min_size=1, max_size=40))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_the_bulk_check_never_raises_and_agrees_with_the_contract(batch):
    """check_values (vectorized path, per-row fast path, full check) over a batch of fuzzed records."""
    cases, kafka_us = [c for c, _ in batch], [t for _, t in batch]
    out = check_values(pa.array([c.value for c in cases], pa.binary()), pa.array(kafka_us, pa.int64()), LIMIT)
    rows = out.to_pylist()
    check_rows(cases, kafka_us, rows)
    # every path gives what check_event gives, and checking twice gives the same answer
    assert [tuple(r[f] for f in FIELDS) for r in rows] == \
           [tuple(check_event(c.value, t, LIMIT)[f] for f in FIELDS) for c, t in zip(cases, kafka_us)]


@given(st.binary(max_size=400) | SURROGATE_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass"))
       | st.text(max_size=200).map(str.encode))
@settings(max_examples=1000, deadline=None)
def test_check_event_never_raises_on_arbitrary_bytes(value):
    row = check_event(value, KAFKA_US, LIMIT)
    check_rows([Case(value, "bytes")], [KAFKA_US], [row])


@given(mutated_events(), KAFKA_TIMES)
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_check_event_on_events_one_mutation_away(case, kafka_us):
    row = check_event(case.value, kafka_us, LIMIT)
    note(f"{row['reason_codes']} {row['reject_detail']}")
    check_rows([case], [kafka_us], [row])


BRONZE_TYPES = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
    ("kafka_timestamp", pa.timestamp("us", "UTC")), ("value", pa.binary()), ("bronze_snapshot_id", pa.int64()),
])


def bronze_frame(cases: list[Case], positions: list[tuple[int, int]]) -> daft.DataFrame:
    """A bronze batch as silver reads it: the Kafka positions are this test's keys."""
    n = len(cases)
    return daft.from_arrow(pa.table([
        ["fuzz"] * n, [p for p, _ in positions], [o for _, o in positions], [KAFKA_TS] * n,
        [c.value for c in cases], [7] * n,
    ], schema=BRONZE_TYPES))


def split(cases: list[Case], positions: list[tuple[int, int]]) -> tuple[list[dict], list[dict]]:
    checked = silver.validate(bronze_frame(cases, positions), LIMIT).collect()
    return silver.valid(checked).to_pylist(), silver.rejected(checked).to_pylist()


def assert_split(cases: list[Case], positions: list[tuple[int, int]]) -> None:
    facts, rejected = split(cases, positions)
    by_position = dict(zip(positions, cases))
    landed = Counter((r["source_partition"], r["source_offset"]) for r in facts + rejected)
    assert len(facts) + len(rejected) == len(cases)
    assert landed == Counter(positions), "a record is missing from silver, or in it twice"
    for r in rejected:
        case = by_position[(r["source_partition"], r["source_offset"])]
        assert (r["source_topic"], r["bronze_snapshot_id"], r["kafka_timestamp"]) == ("fuzz", 7, KAFKA_TS)
        assert r["value"] == case.value, case  # the raw bytes are kept, byte for byte
        assert_rejected(r["reason_codes"], r["reject_detail"], judge(case.value, KAFKA_US), case)
    for f in facts:
        case = by_position[(f["source_partition"], f["source_offset"])]
        judgement = judge(case.value, KAFKA_US)
        assert (f["source_topic"], f["bronze_snapshot_id"], f["kafka_timestamp"]) == ("fuzz", 7, KAFKA_TS)
        assert_fact({**f, "occurred_at_us": (f["occurred_at"] - EPOCH) // timedelta(microseconds=1)}, judgement, case)
        assert f["event_date"] == f["occurred_at"].date()
    in_facts = {(f["source_partition"], f["source_offset"]) for f in facts}
    assert all(p in in_facts for p, c in by_position.items() if c.valid), "a valid event did not reach the facts"


@given(st.lists(CASES, min_size=1, max_size=80), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_silver_split_puts_every_record_in_facts_or_quarantine(cases, rng):
    """The pure silver split (Daft): facts + rejected == input, keyed by Kafka positions, any order."""
    offsets = rng.sample(range(10**6), len(cases))
    assert_split(cases, [(rng.randrange(3), o) for o in offsets])


def test_a_fixed_adversarial_batch_through_the_silver_split():
    """The named nasties in one Daft batch, with valid events around them."""
    base = {"event_id": UUID_A, "event_type": "conversion", "schema_version": 1,
            "occurred_at": "2024-12-25T10:15:30.123Z", "user_id": "u-00042", "user_plan": "pro",
            "user_country": "DE", "direction": "to_roman", "input": "1994", "output": "MCMXCIV", "success": True,
            "error_code": None, "latency_ms": 3.2, "endpoint": "/v1/to-roman", "http_status": 200, "client": "web"}
    good = [Case(json.dumps(base).encode(), "example", valid=True),
            Case(json.dumps(base, separators=(",", ":")).encode(), "compact example", valid=True),
            Case(BOM + json.dumps(base).encode(), "BOM example", valid=True)]
    cases = good + [Case(v, "fixed") for v in FIXED]
    for name in KINDS:
        for text in NEAR_TEXTS[name] + GENERIC:
            pairs = members(base)
            key = json.dumps(name).encode()
            pairs = [(k, text if k == key else v) for k, v in pairs] + ([] if key in dict(pairs) else [(key, text)])
            cases.append(Case(join(pairs), f"{name} = {text[:40]!r}"))
    assert_split(cases, [(i % 3, 1000 + i) for i in range(len(cases))])


def test_duplicate_keys_take_the_last_value_on_every_path():
    """The contract doesn't say; RFC 8259 leaves repeated names to the parser. Silver, like Python's
    json (and ``judge``), takes the last one, whatever path checks the record."""
    base = {"event_id": UUID_A, "event_type": "conversion", "schema_version": 1,
            "occurred_at": "2024-12-25T10:15:30Z", "user_id": "u-1", "user_plan": "pro", "user_country": "DE",
            "direction": "to_roman", "input": "4", "output": "IV", "success": True, "error_code": None,
            "latency_ms": 1, "endpoint": "/v1/to-roman", "http_status": 200}
    compact = json.dumps(base, separators=(",", ":")).encode()
    later_free = compact[:-1] + b',"user_plan":"free"}'
    later_bad = compact[:-1] + b',"user_plan":"gold"}'
    earlier_bad = b'{"user_plan":"gold",' + compact[1:]
    values = [later_free, later_bad, earlier_bad]
    rows = check_values(pa.array(values, pa.binary()), pa.array([KAFKA_US] * 3, pa.int64()), LIMIT).to_pylist()
    assert (rows[0]["reason_codes"], rows[0]["user_plan"]) == ([], "free")
    assert rows[1]["reason_codes"] == ["BAD_ENUM"]
    assert (rows[2]["reason_codes"], rows[2]["user_plan"]) == ([], "pro")
    for value, row in zip(values, rows):
        assert [row[f] for f in FIELDS] == [check_event(value, KAFKA_US, LIMIT)[f] for f in FIELDS]


def test_the_size_limit_is_inclusive():
    doc = {"event_id": UUID_A, "event_type": "conversion", "schema_version": 1,
           "occurred_at": "2024-12-25T10:15:30Z", "user_id": None, "user_plan": None, "user_country": None,
           "direction": "from_roman", "input": "IV", "output": "4", "success": True, "error_code": None,
           "latency_ms": 1, "endpoint": "/v1/from-roman", "http_status": 200, "client": ""}
    base = len(dumps(doc, 0))
    for size, codes in ((LIMIT - 1, []), (LIMIT, []), (LIMIT + 1, ["OVERSIZED"])):
        value = dumps({**doc, "client": "c" * (size - base)}, 0)
        assert len(value) == size and check_event(value, KAFKA_US, LIMIT)["reason_codes"] == codes
