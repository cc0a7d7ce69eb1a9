"""Gold's check: daily_conversion_metrics' counts equal a plain recount of the silver facts at the
snapshot gold was built from, independent of the gold transform."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from tasks.commits import upstream_key
from tasks.verify.reading import DAILY, FACTS, Context, has_data, watermark
from tasks.verify.report import EXAMPLES, Check

GOLD_COUNT_COLUMNS = ("requests", "successes", "failures", "unique_users", "anonymous_requests")


def _recount(facts: Table, snapshot_id: int) -> dict[tuple, dict[str, int]]:
    """Per (event_date, direction): requests, successes, failures, unique_users, anonymous_requests,
    from the facts at ``snapshot_id``: each batch reduced to (day, direction, user) partials."""
    columns = ("event_date", "direction", "user_id", "success")
    keys = ["event_date", "direction", "user_id"]
    partials: list[pa.Table] = []
    for batch in facts.scan(snapshot_id=snapshot_id, selected_fields=columns).to_arrow_batch_reader():
        if batch.num_rows == 0:
            continue
        rows = pa.Table.from_batches([batch])
        rows = rows.append_column("n", pa.array(np.ones(rows.num_rows, dtype=np.int64)))
        rows = rows.append_column("s", pc.fill_null(pc.cast(rows.column("success"), pa.int64()), 0))
        partials.append(rows.group_by(keys).aggregate([("n", "sum"), ("s", "sum")])
                        .rename_columns(keys + ["n", "s"]))
        if len(partials) > 64:  # keep the partials bounded by distinct (day, direction, user)
            partials = [pa.concat_tables(partials).group_by(keys).aggregate([("n", "sum"), ("s", "sum")])
                        .rename_columns(keys + ["n", "s"])]
    if not partials:
        return {}
    users = pa.concat_tables(partials).group_by(keys).aggregate([("n", "sum"), ("s", "sum")]) \
        .rename_columns(keys + ["n", "s"])
    anonymous = pc.if_else(pc.is_null(users.column("user_id")), users.column("n"), pa.scalar(0, pa.int64()))
    users = users.append_column("anon", anonymous)
    daily = users.group_by(["event_date", "direction"]).aggregate(
        [("n", "sum"), ("s", "sum"), ("user_id", "count"), ("anon", "sum")])
    out = {}
    for row in daily.to_pylist():
        requests, successes = int(row["n_sum"]), int(row["s_sum"])
        out[(row["event_date"], row["direction"])] = {
            "requests": requests, "successes": successes, "failures": requests - successes,
            "unique_users": int(row["user_id_count"]), "anonymous_requests": int(row["anon_sum"]),
        }
    return out


def gold_daily(context: Context) -> list[Check]:
    name, layer = "gold.daily_conversion_metrics", "gold"
    gold, facts = context.table(DAILY), context.table(FACTS)
    if not has_data(gold):
        return [Check(name, layer, True, "empty")]
    mark = watermark(gold, FACTS)
    present = [c for c in GOLD_COUNT_COLUMNS if c in gold.schema().column_names]
    rows = gold.scan(selected_fields=("event_date", "direction", *present)).to_arrow().to_pylist()
    if mark is None:
        if rows:
            return [Check(name, layer, False, f"{len(rows)} rows but no {upstream_key(FACTS)} watermark")]
        return [Check(name, layer, True, "empty")]
    if facts is None or facts.metadata.snapshot_by_id(mark) is None:
        return [Check(name, layer, False, f"gold was built from {FACTS} snapshot {mark}, which silver no longer "
                                          "has: cannot recount")]
    expected = _recount(facts, mark)
    stored: dict[tuple, dict] = {}
    problems: list[str] = []
    for row in rows:
        key = (row["event_date"], row["direction"])
        if key in stored:
            problems.append(f"{key[0]} {key[1]}: more than one row")
        stored[key] = row
    for key in sorted(set(stored) | set(expected), key=lambda k: (str(k[0]), str(k[1]))):
        have, want = stored.get(key), expected.get(key)
        if have is None:
            problems.append(f"{key[0]} {key[1]}: no gold row for {want['requests']} silver facts")
        elif want is None:
            problems.append(f"{key[0]} {key[1]}: gold row with {have.get('requests')} requests but no silver facts")
        else:
            problems += [f"{key[0]} {key[1]} {c}: gold {have[c]} != silver {want[c]}" for c in present
                         if have[c] != want[c]]
    counts = {"silver_snapshot": mark, "groups": len(expected), "gold_rows": len(rows), "columns": present,
              "requests": sum(v["requests"] for v in expected.values()), "mismatches": len(problems)}
    if problems:
        return [Check(name, layer, False, f"{len(problems)} mismatches against silver snapshot {mark}: "
                                          + "; ".join(problems[:EXAMPLES]), counts)]
    return [Check(name, layer, True, f"{len(rows)} rows ({', '.join(present)}) match a recount of "
                                     f"{counts['requests']} facts at silver snapshot {mark}", counts)]
