"""User errors of `lakehouse sql | tables | history | diff` print one line and exit 2; binary and
nested columns read the same in every output format. A private SQLite catalog and file warehouse,
no services: the commands run in this process through typer's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timezone
from unittest import mock

import pytest

from tests.unit.embedded_lake import embedded_env, only_env as _only
from typer.testing import CliRunner

from flows.cli import app

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
VALUES = [b"\xff\xfe not utf-8 \x80", b'{"ok": true}', None]


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    """The env of a private lakehouse whose only table is bronze, and its two snapshots (records 0-1, then 2)."""
    from tasks.catalog import ensure_namespaces, open_catalog
    from tasks.commits import append_with_offsets
    from tasks.settings import load_settings
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table
    from tasks.transforms.bronze import RecordColumns, records_to_arrow

    root = tmp_path_factory.mktemp("lakehouse")
    env = embedded_env(root)
    with pytest.MonkeyPatch.context() as mp:
        _only(mp, env)
        settings = load_settings()
        catalog = open_catalog(settings, "ingest")
        ensure_namespaces(catalog, settings)
        table = ensure_table(catalog, settings, BRONZE_CONVERSION_EVENTS_RAW)
        columns = RecordColumns(
            offsets=[0, 1, 2], timestamps_ms=[int(NOW.timestamp() * 1000)] * 3,
            keys=[b"\x00\x01", None, b"k"], values=list(VALUES),
            headers=[[("trace", b"\xde\xad\xbe\xef")], None, []],
        )
        rows = records_to_arrow("t", 0, columns, NOW, "run-1")
        append_with_offsets(table, rows.slice(0, 2), {}, {"t": {0: 2}}, "run-1", {})
        append_with_offsets(table.refresh(), rows.slice(2), {"t": {0: 2}}, {"t": {0: 3}}, "run-2", {})
        snapshots = [s.snapshot_id for s in sorted(table.refresh().snapshots(), key=lambda s: s.sequence_number)]
    return env, snapshots




@pytest.fixture
def cli(lakehouse, monkeypatch):
    env, _ = lakehouse
    _only(monkeypatch, env)
    runner = CliRunner()
    with mock.patch.dict(os.environ):  # the command exports Ray's settings into the environment
        yield lambda *args: runner.invoke(app, list(args))


def assert_one_line_exit_2(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("args, words", [
    (["history", "nope"], ["no table 'nope'", "(tables: bronze.conversion_events_raw)"]),
    (["history", ""], ["no table ''", "bronze.conversion_events_raw"]),
    (["history", ".x"], ["no table '.x'"]),
    (["history", "silver.nope"], ["no table 'silver.nope'", "(tables: bronze.conversion_events_raw)"]),
    (["history", "a.b.c"], ["no table 'a.b.c'"]),
    (["diff", "nope", "--from", "1", "--to", "2"], ["no table 'nope'", "bronze.conversion_events_raw"]),
    (["diff", "gold.dim_date", "--from", "1", "--to", "2"], ["no table 'gold.dim_date'"]),
    (["sql", "SELECT * FROM gold.nope"], ["no table 'gold.nope'", "(tables: bronze.conversion_events_raw)"]),
    (["sql", "SELECT 1", "--snapshot", "gold.nope=5"], ["--snapshot", "no table 'gold.nope'"]),
])
def test_an_unknown_table_is_one_line_listing_the_tables(cli, args, words):
    assert_one_line_exit_2(cli(*args), *words)


def test_unknown_snapshot_ids_are_one_line(cli, lakehouse):
    _, (_, snapshot) = lakehouse
    bronze = "bronze.conversion_events_raw"
    assert_one_line_exit_2(cli("diff", bronze, "--from", "1", "--to", str(snapshot)), "no snapshot 1")
    assert_one_line_exit_2(cli("diff", bronze, "--from", str(snapshot), "--to", "2"), "no snapshot 2")
    assert_one_line_exit_2(cli("sql", f"SELECT * FROM {bronze}", "--snapshot", f"{bronze}=7"), "no snapshot 7")
    assert_one_line_exit_2(cli("sql", f"SELECT * FROM {bronze}", "--snapshot", "7"), "no table has snapshot 7")


def test_a_diff_backwards_or_of_one_snapshot_is_one_line(cli, lakehouse):
    _, (first, second) = lakehouse
    bronze = "bronze.conversion_events_raw"
    assert_one_line_exit_2(cli("diff", bronze, "--from", str(second), "--to", str(first)), "is not older than")
    assert_one_line_exit_2(cli("diff", bronze, "--from", str(first), "--to", str(first)), "is not older than")
    forward = cli("diff", bronze, "--from", str(first), "--to", str(second), "--format", "json")
    assert forward.exit_code == 0, forward.output
    assert [json.loads(line)["offset"] for line in forward.stdout.splitlines()] == [2]


@pytest.mark.parametrize("option", ["yesterday", "2026-13-01", ""])
def test_a_malformed_as_of_is_one_line(cli, option):
    assert_one_line_exit_2(cli("sql", "SELECT 1", "--as-of", option), "--as-of")


def test_an_as_of_before_the_table_is_one_line(cli):
    result = cli("sql", "SELECT count(*) FROM bronze.conversion_events_raw", "--as-of", "2001-01-01")
    assert_one_line_exit_2(result, "no retained state as of 2001-01-01")


@pytest.mark.parametrize("option", ["abc", "bronze.conversion_events_raw:5", "bronze.conversion_events_raw=", "x=y"])
def test_a_snapshot_option_without_table_equals_id_is_one_line(cli, option):
    assert_one_line_exit_2(cli("sql", "SELECT 1", "--snapshot", option), "--snapshot", "TABLE=ID")


@pytest.mark.parametrize("query, words", [
    ("SELEC 1", ["SQL error", "SELEC"]),
    ("SELECT * FROM nope", ["nope"]),
    ("SELECT nope FROM bronze.conversion_events_raw", ["nope"]),
    ("SELECT no_such_function(offset) FROM bronze.conversion_events_raw", ["no_such_function"]),
    ("SELECT offset FROM bronze.conversion_events_raw GROUP BY partition", ["offset"]),
])
def test_a_bad_query_is_one_line(cli, query, words):
    assert_one_line_exit_2(cli("sql", query), *words)


@pytest.mark.parametrize("args", [
    ["sql", "SELECT 1", "--format", "xml"],
    ["tables", "--format", "yaml"],
    ["history", "bronze.conversion_events_raw", "--format", "xml"],
    ["diff", "bronze.conversion_events_raw", "--from", "1", "--to", "2", "--format", "xml"],
])
def test_an_unknown_format_is_one_line(cli, args):
    assert_one_line_exit_2(cli(*args), "--format", "table, json or csv")


@pytest.mark.parametrize("args, words", [
    (["diff", "bronze.conversion_events_raw", "--from", "x", "--to", "2"], ["--from", "integer"]),
    (["diff", "bronze.conversion_events_raw", "--to", "2"], ["--from"]),
    (["sql", "SELECT 1", "--as-of"], ["--as-of"]),
    (["sql", "SELECT 1", "--limit", "3"], ["--limit"]),
    (["history"], ["argument 'table'"]),
    (["nosuchcommand"], ["nosuchcommand"]),
])
def test_a_usage_error_is_one_line(cli, args, words):
    assert_one_line_exit_2(cli(*args), *words)


def test_help_is_still_help(cli):
    result = cli("sql", "--help")
    assert result.exit_code == 0 and "--as-of" in result.stdout
    result = cli()
    assert result.exit_code in (0, 2) and "history" in result.output and "error:" not in result.output


def test_a_bug_still_raises(cli, monkeypatch):
    import tasks.serving

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(tasks.serving, "history", broken)
    result = cli("history", "bronze.conversion_events_raw")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_binary_and_nested_columns_read_the_same_in_csv_json_and_table(cli):
    query = "SELECT offset, key, value, headers FROM bronze.conversion_events_raw ORDER BY offset"
    as_json = cli("sql", query, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["value"] for r in rows] == [None if v is None else v.hex() for v in VALUES]
    assert rows[0]["headers"] == [{"key": "trace", "value": "deadbeef"}]

    as_csv = cli("sql", query, "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    assert "Traceback" not in as_csv.output
    cells = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [c["value"] for c in cells] == [r["value"] or "" for r in rows]
    assert [c["key"] for c in cells] == [r["key"] or "" for r in rows]
    assert [json.loads(c["headers"]) if c["headers"] else None for c in cells] == [r["headers"] for r in rows]

    as_table = cli("sql", "SELECT value FROM bronze.conversion_events_raw ORDER BY offset", "--format", "table")
    assert as_table.exit_code == 0, as_table.output
    assert VALUES[0].hex() in as_table.stdout and "\\x" not in as_table.stdout


def test_every_bronze_column_writes_as_csv(cli):
    result = cli("sql", "SELECT * FROM bronze.conversion_events_raw", "--format", "csv")
    assert result.exit_code == 0, (result.output, result.exception)
    header = next(csv.reader(io.StringIO(result.stdout)))
    assert header == ["topic", "partition", "offset", "kafka_timestamp", "key", "value", "headers",
                      "ingested_at", "ingest_run_id"]


@pytest.mark.parametrize("command, flow", [("ingest", "flows.ingest.ingest_flow"), ("silver", "flows.silver.silver_flow"),
                                           ("gold", "flows.gold.gold_flow")])
def test_run_prints_only_its_report_on_stdout(cli, command, flow):
    """Ray prints its raylet's warnings on the driver's stdout while a flow runs: `lakehouse run
    ... | jq` must still read one JSON report."""
    def noisy(**_kwargs):
        print("(raylet) WARNING: 24 PYTHON worker processes have been started on node: ...")
        return {"records": 3}

    with mock.patch(flow, noisy):
        result = cli("run", command)
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout) == {"records": 3}
    assert "(raylet) WARNING" in result.stderr
