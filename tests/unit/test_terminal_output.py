"""`lakehouse tables | history | diff` read in an 80-column terminal (the columns that matter whole,
one line per row, the rest behind --wide or --format json), sizes are human, and librdkafka's own
log lines go through the logger instead of stderr. A private SQLite catalog and file warehouse, no
services: the commands run in this process through typer's CliRunner."""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime, timezone
from unittest import mock

import pytest

from tests.unit.embedded_lake import embedded_env, only_env as _only
from typer.testing import CliRunner

from flows.cli import app
from flows.commands.terminal import fit_columns, human_size

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
BRONZE = "bronze.conversion_events_raw"




@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    """A private lakehouse whose only table is bronze, with three appends (records 0-2, 3, 4-5) of
    long values, and the table's snapshots and file size as pyiceberg reports them."""
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
        values = [json.dumps({"event_id": f"{n:032x}", "padding": "x" * 200}).encode() for n in range(6)]
        columns = RecordColumns(offsets=list(range(6)), timestamps_ms=[int(NOW.timestamp() * 1000)] * 6,
                                keys=[f"user-{n}".encode() for n in range(6)], values=values, headers=[None] * 6)
        rows = records_to_arrow("conversion-events", 0, columns, NOW, "run-1")
        cuts = [(0, 3), (3, 4), (4, 6)]
        for start, end in cuts:
            before = {"conversion-events": {0: start}} if start else {}
            append_with_offsets(table.refresh(), rows.slice(start, end - start), before,
                                {"conversion-events": {0: end}}, f"run-{end}", {})
        table = table.refresh()
        snapshots = [s.snapshot_id for s in sorted(table.snapshots(), key=lambda s: s.sequence_number)]
        size = int(table.current_snapshot().summary.additional_properties["total-files-size"])
    return env, snapshots, values, size


@pytest.fixture
def cli(lakehouse, monkeypatch):
    env, *_ = lakehouse
    _only(monkeypatch, env)
    runner = CliRunner()
    with mock.patch.dict(os.environ):  # the command exports Ray's settings into the environment
        yield lambda *args, columns=80: runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


def _ok(result) -> list[str]:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout.splitlines()


def _fits(lines: list[str], width: int = 80) -> None:
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, f"lines wider than {width}: {too_long}"


# ---- pure: sizes and column fitting ------------------------------------------------------------

@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (10 * 1024 * 1024, "10.0 MiB"),
    (5 * 1024 ** 3 + 512 * 1024 ** 2, "5.5 GiB"), (None, ""),
])
def test_human_size(size, text):
    assert human_size(size) == text


def test_fit_columns_takes_the_leading_columns_that_fit_whole():
    widths = {"a": 10, "b": 10, "c": 10}
    assert fit_columns(widths, 22) == ["a", "b"]  # 10 + 2 + 10
    assert fit_columns(widths, 21) == ["a"]
    assert fit_columns(widths, 34) == ["a", "b", "c"]
    assert fit_columns(widths, 3) == ["a"]  # never nothing
    assert fit_columns({"a": 5, "b": 50, "c": 1}, 20) == ["a"]  # a prefix: c does not jump the queue


def test_brackets_in_values_are_text_not_markup():
    from rich.console import Console

    from flows.commands.terminal import print_rows

    console = Console(width=80, record=True, color_system=None)
    print_rows(console, [{"reason_codes": '["BAD_TYPE"]', "detail": "[bold]x[/bold] [0]"}], ["reason_codes", "detail"],
               wide=False)
    text = console.export_text()
    assert '["BAD_TYPE"]' in text and "[bold]x[/bold] [0]" in text, text


def test_history_view_moves_a_reset_under_the_table():
    from flows.commands.terminal import history_view

    rows = [{"snapshot_id": 7, "parent_id": 6, "committed_at": "2026-01-02T03:04:05.123000+00:00",
             "operation": "append", "added_records": None, "total_records": "40",
             "reset": "offset reset: t[0] 30→40 (skipped 10); reason: why; by me at then", "lakehouse": {}}]
    view, notes = history_view(rows)
    assert view == [{"snapshot_id": "7", "committed_at": "2026-01-02 03:04:05", "operation": "append (reset)",
                     "added": "", "total": "40"}]
    assert notes == ["7: offset reset: t[0] 30→40 (skipped 10); reason: why; by me at then"]


# ---- the commands in 80 columns ----------------------------------------------------------------

def test_history_fits_80_columns_with_every_snapshot_whole(cli, lakehouse):
    _, snapshots, _, _ = lakehouse
    lines = _ok(cli("history", BRONZE))
    _fits(lines)
    for snapshot_id, added, total in zip(snapshots, (3, 1, 2), (3, 4, 6)):
        row = [line for line in lines if line.startswith(str(snapshot_id))]
        assert len(row) == 1, (snapshot_id, lines)
        assert row[0].split()[-3:] == ["append", str(added), str(total)], row
    assert not any("…" in line for line in lines), lines


def test_history_wide_and_json_keep_the_summary(cli, lakehouse):
    _, snapshots, _, _ = lakehouse
    wide = _ok(cli("history", BRONZE, "--wide"))
    last = [line for line in wide if line.startswith(str(snapshots[-1]))][0]
    assert str(snapshots[-2]) in last  # the parent
    assert '"lakehouse.kafka.offsets": {"conversion-events": {"0": 6}}' in last
    rows = [json.loads(line) for line in _ok(cli("history", BRONZE, "--format", "json"))]
    assert [r["snapshot_id"] for r in rows] == snapshots
    assert rows[-1]["lakehouse"]["lakehouse.kafka.offsets"] == {"conversion-events": {"0": 6}}


def test_diff_fits_80_columns_and_names_what_it_left_out(cli, lakehouse):
    _, snapshots, values, _ = lakehouse
    lines = _ok(cli("diff", BRONZE, "--from", str(snapshots[0]), "--to", str(snapshots[-1])))
    _fits(lines)
    body = [line.split() for line in lines if line[:1].isdigit() and not line.endswith("rows appended")]
    assert sorted(int(cells[1]) for cells in body) == [3, 4, 5]  # partition, then offset: the offsets added
    assert all(cells[0] == "0" for cells in body)
    assert lines[-1] == "3 rows appended"
    left_out = [line for line in lines if line.startswith("(") and "--wide or --format json" in line]
    assert len(left_out) == 1 and "value" in left_out[0], lines
    assert values[3].hex() not in "".join(lines)

    wide = _ok(cli("diff", BRONZE, "--from", str(snapshots[0]), "--to", str(snapshots[-1]), "--wide"))
    assert any(values[3].hex() in line for line in wide)  # whole, however wide
    rows = [json.loads(line) for line in _ok(cli("diff", BRONZE, "--from", str(snapshots[0]), "--to",
                                                   str(snapshots[-1]), "--format", "json"))]
    assert sorted(r["offset"] for r in rows) == [3, 4, 5] and len(rows[0]) == 9


def test_tables_fits_80_columns_with_a_human_size(cli, lakehouse):
    _, snapshots, _, size = lakehouse
    assert 1024 <= size < 1024 * 1024  # a few KiB of Parquet: the expectation below is in KiB
    lines = _ok(cli("tables"))
    _fits(lines)
    row = [line for line in lines if line.startswith(BRONZE)]
    assert len(row) == 1, lines
    assert f"{size / 1024:.1f} KiB" in row[0] and row[0].split()[1:3] == ["6", "3"], row
    assert "2026-" in row[0] and str(snapshots[-1]) not in row[0]
    assert str(snapshots[-1]) in "".join(_ok(cli("tables", "--wide", columns=200)))
    listed = [json.loads(line) for line in _ok(cli("tables", "--format", "json"))]
    assert listed[0]["size_bytes"] == size and listed[0]["rows"] == 6


def test_a_narrow_terminal_still_shows_whole_ids(cli, lakehouse):
    _, snapshots, _, _ = lakehouse
    lines = _ok(cli("history", BRONZE, columns=40))
    _fits(lines, 40)
    assert all(any(line.split()[:1] == [str(s)] for line in lines) for s in snapshots), lines
    footer = " ".join(lines[lines.index(next(line for line in lines if line.startswith("("))):])
    assert "operation" in footer and "--wide" in footer, lines  # what was left out, named (wrapped)


# ---- librdkafka's log lines ----------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on return: connecting is refused


def test_librdkafka_lines_go_through_the_logger_not_stderr(capfd, caplog):
    """A producer built as `lakehouse produce` builds it, pointed at a refused loopback port: its
    'Connect ... failed' lines reach the ``lakehouse.kafka`` logger, and nothing reaches fd 2."""
    from confluent_kafka import Producer

    from tasks.settings import Settings
    from tasks.simulator import build_producer_config

    settings = Settings(kafka_bootstrap=f"127.0.0.1:{_closed_port()}")
    caplog.set_level(logging.DEBUG, logger="lakehouse.kafka")
    producer = Producer(build_producer_config(settings))
    producer.produce("t", b"x")
    for _ in range(20):
        producer.poll(0.1)
        if any("Connect to" in r.getMessage() for r in caplog.records):
            break
    del producer
    seen = [r for r in caplog.records if r.name == "lakehouse.kafka" and "Connect to" in r.getMessage()]
    assert seen and all(r.levelno == logging.ERROR for r in seen), caplog.records
    assert "|FAIL|" not in capfd.readouterr().err


def test_librdkafka_warnings_are_debug_outside_a_run(caplog):
    from tasks.kafka import CLIENT_LOG

    caplog.set_level(logging.DEBUG, logger="lakehouse.kafka")
    CLIENT_LOG.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-1", "Failed to acquire PID")
    (record,) = [r for r in caplog.records if r.name == "lakehouse.kafka"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "GETPID [rdkafka#producer-1] Failed to acquire PID"
