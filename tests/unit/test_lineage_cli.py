"""`lakehouse lineage` on a private SQLite lakehouse (no services): wrong input is one line and
exit 2; on bronze alone the walk prints what the two hand-made commits appended."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_cli_errors import assert_one_line_exit_2, cli, lakehouse  # noqa: F401 - fixtures


@pytest.mark.parametrize("args, words", [
    ([], ["give a table, or --downstream"]),
    (["gold.daily_conversion_metrics", "--downstream", "t:0:1-2"], ["not both"]),
    (["--downstream", "t:0:5-2"], ["offset range 't:0:5-2'"]),
    (["--downstream", "nonsense"], ["topic:partition:first-last"]),
    (["--downstream", "t:0:1", "--where", "x = 1"], ["--where go with a table"]),
    (["bronze.conversion_events_raw", "--format", "svg"], ["--format must be one of"]),
    (["gold.daily_conversion_metrics"], ["gold.daily_conversion_metrics does not exist"]),
    (["bronze.conversion_events_raw", "--snapshot", "42"], ["42 is not a snapshot"]),
    (["--downstream", "t:0:50-60"], ["no bronze snapshot", "t:0:50-60"]),
])
def test_wrong_input_is_one_line_and_exit_2(cli, args, words):
    assert_one_line_exit_2(cli("lineage", *args), *words)


def test_bronze_walks_to_the_offsets_its_commits_appended(cli, lakehouse):
    _, snapshots = lakehouse  # records 0-1, then 2; the first commit has no commit before it nor a report
    result = cli("lineage", "bronze.conversion_events_raw", "--format", "json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.stdout)
    assert tree["snapshot_id"] == snapshots[1]
    assert [(c["snapshot_id"], c["ranges"]) for c in tree["children"]] == [
        (snapshots[1], [{"topic": "t", "partition": 0, "first": 2, "last": 2}])]
    mermaid = cli("lineage", "bronze.conversion_events_raw", "--format", "mermaid")
    assert mermaid.exit_code == 0 and mermaid.stdout.startswith("flowchart LR")
    text = cli("lineage", "bronze.conversion_events_raw")
    assert text.exit_code == 0 and "t[0] offsets 2..2" in text.stdout


def test_a_where_that_is_not_a_filter_or_names_no_fact_column_is_a_lineage_error(tmp_path, monkeypatch):
    import os

    import pyarrow as pa

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:  # `make test` exports LAKEHOUSE_CONFIG
        monkeypatch.delenv(key)

    from tasks.catalog import ensure_namespaces, open_catalog
    from tasks.lineage.reading import matching_fact_coordinates
    from tasks.lineage.walk import LineageError
    from tasks.settings import load_settings
    from tasks.tables import SILVER_FACT_CONVERSIONS, ensure_table

    settings = load_settings(profile="embedded", state_dir=str(tmp_path / "state"),
                             catalog_uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "w").as_uri(),
                             ray_address="")
    catalog = open_catalog(settings, "silver")
    ensure_namespaces(catalog, settings)
    table = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
    rows = pa.Table.from_pylist([
        {"event_id": "a", "source_topic": "t", "source_partition": 0, "source_offset": 7, "bronze_snapshot_id": 1,
         "direction": "to_roman"},
        {"event_id": "b", "source_topic": "t", "source_partition": 1, "source_offset": 3, "bronze_snapshot_id": 1,
         "direction": "from_roman"},
    ], schema=table.schema().as_arrow())
    table.append(rows)
    snapshot = table.current_snapshot().snapshot_id
    facts = SILVER_FACT_CONVERSIONS.identifier
    assert matching_fact_coordinates(catalog, facts, snapshot, "direction = 'from_roman'") == [(1, "t", 1, 3)]
    with pytest.raises(LineageError, match="is not an Iceberg filter"):
        matching_fact_coordinates(catalog, facts, snapshot, "event_date = ")
    with pytest.raises(LineageError, match="does not apply to silver.fact_conversions"):
        matching_fact_coordinates(catalog, facts, snapshot, "no_such_column = 1")


def test_dead_lettered_events_are_counted_on_stderr_and_stdout_stays_the_answer(cli, lakehouse):
    from tasks.lineage.emit import dead_letter_path
    from tasks.settings import load_settings

    path = dead_letter_path(load_settings())  # the private lakehouse's, from the cli fixture's environment
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"event": {"n": n}, "reason": "HTTP 422 Unprocessable Entity",
                                        "dead_lettered_at": "2026-12-01T05:44:12+00:00"}) + "\n" for n in range(3)))
    try:
        result = cli("lineage", "bronze.conversion_events_raw", "--format", "json")
    finally:
        path.unlink()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["table"] == "bronze.conversion_events_raw"
    assert result.stderr.strip() == (f"note: 3 lineage events refused for good by the file backend, kept in {path}")
    assert cli("lineage", "bronze.conversion_events_raw", "--format", "json").stderr == ""  # none: no note
