"""OpenLineage's data-quality assertions facet from a run's audit.dq_results rows: each expectation
checked on a table the run committed, met or not, and the column it judged. Pure: rows and suite
columns in, facets out; run.py reads the rows.

The spec files ``dataQualityAssertions`` among input facets (a consumer checking what it read);
here the check runs on the data a run writes, before the commit, so it is a facet of that output
dataset, beside its schema and version."""

from __future__ import annotations

from dataclasses import replace
from typing import Collection, Iterable, Mapping, Sequence

from openlineage.client.facet_v2 import data_quality_assertions_dataset as dqa

from tasks.lineage.events import RunFacts

COLUMN_KEYS = ("column", "column_A", "column_B")  # the suite kwargs that name the columns an expectation reads


def run_ids(report: object) -> list[str]:
    """The run ids a flow's report recorded its checks under: its own and each batch's (silver)."""
    if not isinstance(report, Mapping):
        return []
    batches = report.get("batches")  # silver: one report per batch; ingest: a count of batches
    per_batch = batches if isinstance(batches, (list, tuple)) else ()
    found = [report.get("run_id")] + [b.get("run_id") for b in per_batch if isinstance(b, Mapping)]
    return sorted({str(r) for r in found if r})


def checked_columns(kwargs: Mapping[str, object]) -> tuple[str, ...]:
    """The columns an expectation's kwargs name, in the order of ``COLUMN_KEYS``."""
    return tuple(str(kwargs[k]) for k in COLUMN_KEYS if isinstance(kwargs.get(k), str))


def assertion(row: Mapping, columns: Sequence[str], schema: Collection[str]) -> dqa.Assertion:
    """One audit.dq_results row as an assertion. ``column`` only when the expectation judges one
    column of the table's schema (not a derived view column, not a pair): the spec says it must
    match the schema facet; every column it read is in ``params``."""
    column = columns[0] if len(columns) == 1 and columns[0] in schema else None
    return dqa.Assertion(
        assertion=row["expectation_type"], success=bool(row["success"]), column=column,
        severity=row["severity"], name=row["expectation"], actual=row.get("observed_value"),
        params={"suite": row["suite"], "run_id": row["run_id"], "columns": list(columns),
                "element_count": row.get("element_count"), "unexpected_count": row.get("unexpected_count")},
    )


def assertions_facet(rows: Iterable[Mapping], columns: Mapping[tuple[str, str], Sequence[str]],
                     schema: Collection[str]) -> dqa.DataQualityAssertionsDatasetFacet | None:
    """The facet of one table from its audit.dq_results rows (None without rows); ``columns`` is
    (suite, expectation) -> the columns it reads, from the suite files."""
    ordered = sorted(rows, key=lambda r: (str(r.get("evaluated_at")), r["run_id"], r["suite"], r["expectation"]))
    if not ordered:
        return None
    return dqa.DataQualityAssertionsDatasetFacet(assertions=[
        assertion(r, tuple(columns.get((r["suite"], r["expectation"]), ())), schema) for r in ordered])


def with_assertions(runs: Sequence[RunFacts], rows: Iterable[Mapping],
                    columns: Mapping[tuple[str, str], Sequence[str]]) -> list[RunFacts]:
    """``runs`` with each output table carrying the assertions of the rows that checked it."""
    per_table: dict[str, list[Mapping]] = {}
    for row in rows:
        per_table.setdefault(row["table_name"], []).append(row)
    out = []
    for run in runs:
        outputs = tuple(
            replace(t, assertions=assertions_facet(per_table[t.identifier], columns, {n for n, _ in t.columns}))
            if t.identifier in per_table else t for t in run.outputs)
        out.append(replace(run, outputs=outputs))
    return out
