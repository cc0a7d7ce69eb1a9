"""The pandas views the suites are evaluated on: only the columns a suite reads, plus the derived
columns its cross-column and clock checks need. Pure: Arrow in, pandas out, the clock an argument.

One Arrow -> pandas conversion per batch (GX has no Daft source)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# what a success or a failure answers (tasks/transforms/contract.py: 200, or a 4xx of the contract)
SUCCESS_STATUS = 200


def fact_view(facts: pa.Table, columns: list[str], now: datetime) -> pd.DataFrame:
    """The facts' ``columns`` as pandas, row i being facts row i, with the derived columns:
    ``success`` as 1.0/0.0 (a mean is the success rate), ``success_consistent`` (success iff no
    error_code, and http_status 200 on success, 4xx on failure; null when success is null) and
    ``seconds_ahead`` (how far occurred_at lies ahead of ``now``)."""
    derived = {"success_consistent", "seconds_ahead"}
    plain = [c for c in columns if c not in derived and c in facts.column_names]
    frame = facts.select(plain).to_pandas(types_mapper=None) if plain else pd.DataFrame(index=range(facts.num_rows))
    if "success" in frame:
        frame["success"] = frame["success"].astype("float64")
    if "success_consistent" in columns:
        frame["success_consistent"] = success_consistent(facts)
    if "seconds_ahead" in columns:
        occurred = pc.cast(facts.column("occurred_at"), pa.timestamp("us", "UTC"))
        ahead = pc.divide(pc.cast(pc.subtract(occurred, pa.scalar(now, pa.timestamp("us", "UTC"))), pa.int64()), 1_000_000.0)
        frame["seconds_ahead"] = ahead.to_numpy(zero_copy_only=False)
    return frame


def success_consistent(facts: pa.Table) -> pd.Series:
    """Per row: whether success agrees with error_code and http_status; None where success is null."""
    success = facts.column("success").to_pandas()
    no_error = facts.column("error_code").to_pandas().isna()
    status = facts.column("http_status").to_pandas()
    status_ok = np.where(success == True, status.isna() | (status == SUCCESS_STATUS),  # noqa: E712
                         status.isna() | ((status >= 400) & (status < 500)))
    agree = (success == no_error) & status_ok
    return pd.Series(agree, dtype="object").where(success.notna(), None)


def gold_daily_view(metrics: pa.Table, recount: pa.Table) -> pd.DataFrame:
    """gold.daily_conversion_metrics rows with ``successes_plus_failures`` and the recount of silver
    facts per (event_date, direction) as ``recount_requests`` and ``recount_successes`` (0 where
    silver has none)."""
    frame = metrics.to_pandas()
    frame["successes_plus_failures"] = frame["successes"] + frame["failures"]
    counted = recount.to_pandas().rename(columns={"requests": "recount_requests", "successes": "recount_successes"})
    frame = frame.merge(counted, on=["event_date", "direction"], how="left")
    for name in ("recount_requests", "recount_successes"):
        frame[name] = frame[name].fillna(0).astype("int64")
    return frame


def recount(facts: pa.Table) -> pa.Table:
    """Requests and successes per (event_date, direction) of silver facts, counted again from the rows."""
    if facts.num_rows == 0:
        return pa.table({"event_date": pa.array([], pa.date32()), "direction": pa.array([], pa.string()),
                         "requests": pa.array([], pa.int64()), "successes": pa.array([], pa.int64())})
    rows = pa.table({"event_date": facts.column("event_date"), "direction": facts.column("direction"),
                     "ok": pc.cast(pc.fill_null(facts.column("success"), False), pa.int64())})
    grouped = rows.group_by(["event_date", "direction"]).aggregate([([], "count_all"), ("ok", "sum")])
    return pa.table({
        "event_date": grouped.column("event_date"), "direction": grouped.column("direction"),
        "requests": pc.cast(grouped.column("count_all"), pa.int64()),
        "successes": pc.cast(grouped.column("ok_sum"), pa.int64()),
    })
