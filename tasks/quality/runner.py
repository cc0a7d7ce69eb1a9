"""Evaluate a suite with Great Expectations on a pandas view and return plain records; decide what
the severities mean for the batch. No catalog, settings or network: GX runs in an ephemeral
context in memory."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd

from tasks.quality.suites import Expectation, Suite

SAMPLE = 5  # failing values quoted in an observed value


@dataclass(frozen=True)
class Outcome:
    """What one expectation found on one batch."""

    expectation: str
    expectation_type: str
    severity: str
    success: bool
    observed_value: str
    element_count: int
    unexpected_count: int
    unexpected_percent: float
    failing_rows: tuple[int, ...] = field(default=(), repr=False)  # positions in the view: quarantine needs them

    def describe(self) -> str:
        return f"{self.expectation} ({self.severity}): observed {self.observed_value}"


_CREATING = threading.Lock()  # the prewarm thread and a check may ask at once: one context


def context():
    """This process's ephemeral GX context (Data Docs use it too)."""
    return _batch_definition()[0]


def _batch_definition():
    with _CREATING:
        return _created()


@lru_cache(maxsize=1)
def _created():
    """One ephemeral GX context per process with a pandas whole-dataframe batch definition:
    nothing written to disk, no progress bars in the logs."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every pandas batch below this size by hashing all of it (twice per
    # validation; ~10 s of 16 for 1M facts) for a batch marker nothing here reads: off
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("lakehouse")
    return context, source.add_dataframe_asset("batch").add_batch_definition_whole_dataframe("whole")


def gx_expectation(expectation: Expectation, baseline: float | None = None):
    """The GX expectation object for ``expectation`` (``baseline`` fills a ratio-bounded one)."""
    import great_expectations.expectations as gxe

    class_name = "".join(part.capitalize() for part in expectation.expectation.split("_"))
    kind = getattr(gxe, class_name, None)
    if kind is None:
        raise ValueError(f"{expectation.name}: {expectation.expectation} is not a Great Expectations expectation")
    kwargs = dict(expectation.kwargs)
    if expectation.baseline is not None:
        low, high = kwargs.pop("min_ratio", None), kwargs.pop("max_ratio", None)
        kwargs["min_value"] = None if low is None else math.floor(baseline * low)
        kwargs["max_value"] = None if high is None else math.ceil(baseline * high)
    return kind(**kwargs, meta={"name": expectation.name})


def evaluate(suite: Suite, view: pd.DataFrame, baseline: float | None = None) -> list[Outcome]:
    """Every expectation of ``suite`` on ``view`` (one GX validation of the suite), in suite order.

    ``baseline`` is the volume baseline (the trailing same-hour average); without one, a
    baseline-bounded expectation passes and says so."""
    return validate(suite, view, baseline)[0]


def validate(suite: Suite, view: pd.DataFrame, baseline: float | None = None) -> tuple[list[Outcome], Any]:
    """``evaluate``, and GX's own validation result (for Data Docs; None if nothing ran in GX)."""
    import great_expectations as gx

    view = view.reset_index(drop=True)
    context, definition = _batch_definition()
    gx_suite = gx.ExpectationSuite(name=suite.name)
    skipped: dict[str, Outcome] = {}
    for e in suite.expectations:
        if e.baseline is not None and baseline is None:
            skipped[e.name] = Outcome(e.name, e.expectation, e.severity, True, f"{len(view)} rows; no baseline yet",
                                      len(view), 0, 0.0)
            continue
        gx_suite.add_expectation(gx_expectation(e, baseline))
    found: dict[str, Any] = {}
    result = None
    if gx_suite.expectations:
        batch = definition.get_batch(batch_parameters={"dataframe": view})
        result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": SAMPLE})
        found = {r.expectation_config.meta["name"]: r for r in result.results}
    outcomes = [skipped[e.name] if e.name in skipped else _outcome(e, found[e.name], len(view)) for e in suite.expectations]
    return outcomes, result


def _outcome(e: Expectation, result, rows: int) -> Outcome:
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = str(result.exception_info.get("exception_message"))[:200]
        return Outcome(e.name, e.expectation, e.severity, False, f"error: {message}", rows, 0, 0.0)
    res = result.result or {}
    unexpected = int(res.get("unexpected_count") or 0)
    if "observed_value" in res:
        observed = _plain(res["observed_value"])
    else:
        sample = [_plain(v) for v in (res.get("partial_unexpected_list") or [])[:SAMPLE]]
        observed = f"{unexpected} unexpected" + (f", e.g. {sample}" if sample else "")
    return Outcome(
        e.name, e.expectation, e.severity, bool(result.success), str(observed),
        int(res.get("element_count", rows) or 0), unexpected, round(float(res.get("unexpected_percent") or 0.0), 6),
        tuple(int(i) for i in (res.get("unexpected_index_list") or [])),
    )


def _plain(value: Any) -> Any:
    """A GX value as plain Python (numpy scalars, quantile dicts) for a readable string."""
    if isinstance(value, dict) and "values" in value:
        return _plain(value["values"][0] if len(value["values"]) == 1 else value["values"])
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


@dataclass(frozen=True)
class Verdict:
    """What the severities make of a batch's outcomes."""

    failed: tuple[Outcome, ...]  # severity fail and not met: the run stops
    quarantine: dict[int, tuple[str, ...]]  # view row -> names of the quarantine expectations it broke
    warnings: tuple[Outcome, ...]

    def failure_message(self) -> str:
        return "data quality: " + "; ".join(o.describe() for o in self.failed)


def decide(outcomes: list[Outcome]) -> Verdict:
    quarantine: dict[int, list[str]] = {}
    for o in outcomes:
        if o.severity == "quarantine" and not o.success:
            for row in o.failing_rows:
                quarantine.setdefault(row, []).append(o.expectation)
    return Verdict(
        tuple(o for o in outcomes if o.severity == "fail" and not o.success),
        {row: tuple(names) for row, names in sorted(quarantine.items())},
        tuple(o for o in outcomes if o.severity == "warn" and not o.success),
    )
