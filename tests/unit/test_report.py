"""`lakehouse report`: the rows shaped for each plot (hand-computed expectations on a few rows), a
page that is one self-contained file with a PNG per plot, and a clearly labelled empty section for
a table that does not exist yet. The command runs in this process (typer's CliRunner) on a private
SQLite catalog and file warehouse holding tiny gold tables written here; no services."""

from __future__ import annotations

import base64
import os
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pytest

from tests.unit.embedded_lake import embedded_env, only_env as _only
from typer.testing import CliRunner

from tasks.report import (ANOMALIES, DAILY, FORECAST, PLANS, anomaly_series, daily_series, flagged_hours,
                          forecast_bands, plan_shares, render_report)

GENERATED = datetime(2026, 1, 9, 12, 0, tzinfo=timezone.utc)
DAY1, DAY2, DAY3 = date(2026, 1, 6), date(2026, 1, 7), date(2026, 1, 8)
HOUR0 = datetime(2026, 1, 6, 0, 0, tzinfo=timezone.utc)

# gold.hourly_anomalies and the forecast tables as agreed for issue 16 (DS-A builds them; tests
# that need them make tiny ones of the same schema)
ANOMALY_SCHEMA = pa.schema([
    ("event_hour", pa.timestamp("us", tz="UTC")), ("direction", pa.string()), ("requests", pa.int64()),
    ("requests_baseline", pa.float64()), ("requests_score", pa.float64()), ("requests_anomaly", pa.bool_()),
    ("error_rate", pa.float64()), ("error_rate_baseline", pa.float64()), ("error_rate_score", pa.float64()),
    ("error_rate_anomaly", pa.bool_()), ("p95_latency_ms", pa.float64()), ("p95_latency_ms_baseline", pa.float64()),
    ("p95_latency_ms_score", pa.float64()), ("p95_latency_ms_anomaly", pa.bool_()), ("is_anomaly", pa.bool_()),
    ("baseline_weeks", pa.int32()),
])
FORECAST_SCHEMA = pa.schema([
    ("direction", pa.string()), ("metric", pa.string()), ("forecast_date", pa.date32()), ("horizon_days", pa.int32()),
    ("forecast", pa.float64()), ("lower_80", pa.float64()), ("upper_80", pa.float64()), ("lower_95", pa.float64()),
    ("upper_95", pa.float64()), ("model", pa.string()), ("history_through", pa.date32()),
])
ACCURACY_SCHEMA = pa.schema([
    ("direction", pa.string()), ("metric", pa.string()), ("model", pa.string()), ("holdout_days", pa.int32()),
    ("mape", pa.float64()), ("coverage_80", pa.float64()), ("coverage_95", pa.float64()),
    ("history_through", pa.date32()),
])


def daily_rows() -> list[dict]:
    rows = []
    for i, day in enumerate((DAY1, DAY2, DAY3)):
        for direction, base in (("to_roman", 100), ("from_roman", 40)):
            rows.append({"event_date": day, "direction": direction, "requests": base + 10 * i,
                         "success_rate": 0.99 - 0.01 * i, "p50_latency_ms": 2.0 + i, "p95_latency_ms": 9.0 + i,
                         "p99_latency_ms": 20.0 + i})
    return rows


def plan_rows() -> list[dict]:
    return [
        {"event_date": DAY1, "user_plan": "free", "requests": 30},
        {"event_date": DAY1, "user_plan": "pro", "requests": 10},
        {"event_date": DAY2, "user_plan": "free", "requests": 5},
        {"event_date": DAY2, "user_plan": None, "requests": 15},
    ]


def anomaly_rows(hours: int = 48, flagged_at: int = 30) -> list[dict]:
    rows = []
    for h in range(hours):
        for direction in ("to_roman", "from_roman"):
            spike = direction == "to_roman" and h == flagged_at
            rows.append({
                "event_hour": HOUR0 + timedelta(hours=h), "direction": direction, "requests": 50 + h % 5,
                "requests_baseline": 52.0, "requests_score": 0.4, "requests_anomaly": False,
                "error_rate": 0.4 if spike else 0.01, "error_rate_baseline": 0.01, "error_rate_score": 39.0 if spike else 0.0,
                "error_rate_anomaly": spike, "p95_latency_ms": 9.0, "p95_latency_ms_baseline": 9.0,
                "p95_latency_ms_score": 0.0, "p95_latency_ms_anomaly": False, "is_anomaly": spike,
                "baseline_weeks": 0,
            })
    return rows


def forecast_rows() -> list[dict]:
    rows = []
    for through, level in ((DAY2, 1000.0), (DAY3, 2000.0)):  # two builds: the newest is drawn
        for h in range(1, 4):
            for direction in ("to_roman", "from_roman"):
                rows.append({"direction": direction, "metric": "daily_requests", "forecast_date": through + timedelta(days=h),
                             "horizon_days": h, "forecast": level + h, "lower_80": level + h - 10,
                             "upper_80": level + h + 10, "lower_95": level + h - 20, "upper_95": level + h + 20,
                             "model": "seasonal_naive" if through == DAY2 else "holt_winters", "history_through": through})
    return rows


def accuracy_rows() -> list[dict]:
    return [{"direction": "to_roman", "metric": "daily_requests", "model": "holt_winters", "holdout_days": 7,
             "mape": 0.052, "coverage_80": 0.857, "coverage_95": 1.0, "history_through": DAY3}]


# ---- pure shaping ----------------------------------------------------------------------------

def test_daily_series_is_one_ascending_series_per_direction():
    shuffled = list(reversed(daily_rows()))
    series = daily_series(shuffled, "requests")
    assert series["to_roman"].x == [DAY1, DAY2, DAY3] and series["to_roman"].y == [100, 110, 120]
    assert series["from_roman"].y == [40, 50, 60]
    gaps = daily_series([{"event_date": DAY1, "direction": "to_roman", "requests": None}], "requests")
    assert gaps == {}


def test_plan_shares_sum_to_one_per_day_with_absent_plans_at_zero():
    days, shares = plan_shares(plan_rows())
    assert days == [DAY1, DAY2]
    assert shares == {"anonymous": [0.0, 0.75], "free": [0.75, 0.25], "pro": [0.25, 0.0]}
    for i in range(len(days)):
        assert sum(values[i] for values in shares.values()) == pytest.approx(1.0)


def test_anomaly_series_keeps_the_window_baseline_and_flagged_hours():
    rows = anomaly_rows(hours=48, flagged_at=30)
    lines = anomaly_series(rows, "error_rate", "to_roman", days=1)
    # the last day before the newest hour (47): hours 24..47 are after 47 - 24 = 23
    assert lines["value"].x == [HOUR0 + timedelta(hours=h) for h in range(24, 48)]
    assert lines["baseline"].y == [0.01] * 24
    assert lines["flagged"].x == [HOUR0 + timedelta(hours=30)] and lines["flagged"].y == [0.4]
    assert anomaly_series(rows, "error_rate", "from_roman", days=1)["flagged"].x == []
    assert anomaly_series([], "requests", "to_roman")["value"].x == []


def test_flagged_hours_newest_first_with_the_metric_that_fired():
    rows = anomaly_rows(hours=48, flagged_at=30) + [
        {**anomaly_rows(1)[0], "event_hour": HOUR0 + timedelta(hours=40), "direction": "from_roman",
         "requests": 5, "requests_anomaly": True, "requests_score": -6.0, "is_anomaly": True},
    ]
    flagged = flagged_hours(rows)
    assert [(f["event_hour"], f["direction"]) for f in flagged] == [
        (HOUR0 + timedelta(hours=40), "from_roman"), (HOUR0 + timedelta(hours=30), "to_roman")]
    assert flagged[0]["metrics"] == [("requests", 5, 52.0, -6.0)]
    assert flagged[1]["metrics"] == [("error_rate", 0.4, 0.01, 39.0)]
    assert len(flagged_hours(rows, limit=1)) == 1


def test_forecast_bands_draw_the_newest_build_only():
    bands = forecast_bands(forecast_rows(), "daily_requests", "to_roman")
    assert bands["dates"] == [DAY3 + timedelta(days=h) for h in (1, 2, 3)]
    assert bands["forecast"] == [2001.0, 2002.0, 2003.0]
    assert bands["lower_80"] == [1991.0, 1992.0, 1993.0] and bands["upper_95"] == [2021.0, 2022.0, 2023.0]
    assert bands["model"] == "holt_winters"
    assert forecast_bands(forecast_rows(), "peak_hour_requests", "to_roman")["dates"] == []


# ---- the page ---------------------------------------------------------------------------------

def _sections(page: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'<section id="(\w+)" class="(\w+)">', page)}


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_missing_tables_are_labelled_empty_sections():
    page = render_report({DAILY: daily_rows(), PLANS: [], ANOMALIES: None, FORECAST: None}, GENERATED, "test")
    assert _sections(page) == {"volume": "filled", "success": "filled", "latency": "filled", "plans": "empty",
                               "anomalies": "empty", "forecast": "empty"}
    assert "gold.hourly_anomalies does not exist yet" in page and "gold.capacity_forecast does not exist yet" in page
    assert "gold.daily_plan_metrics has no rows yet" in page
    assert len(_pngs(page)) == 3


def test_a_full_page_is_self_contained_with_a_png_per_plot():
    from tasks.report import ACCURACY

    data = {DAILY: daily_rows(), PLANS: plan_rows(), ANOMALIES: anomaly_rows(), FORECAST: forecast_rows(),
            ACCURACY: accuracy_rows()}
    page = render_report(data, GENERATED, "test <lakehouse>")
    assert set(_sections(page).values()) == {"filled"}
    images = _pngs(page)
    # volume, success, latency, plans, three anomaly metrics, one forecast metric
    assert len(images) == 8 and all(i.startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing fetched from anywhere
    assert "test &lt;lakehouse&gt;" in page  # text is escaped
    assert "1 anomalous hours of 96" in page and "2026-01-07 06:00" in page  # hour 30 is 06:00 on day 2
    assert "5.2%" in page and "85.7%" in page  # the backtest: MAPE and 80% coverage


# ---- the command on a private lakehouse --------------------------------------------------------



def build_gold_lakehouse(root: Path, with_forecast: bool) -> dict[str, str]:
    """The env of a private lakehouse with tiny gold tables written directly: daily and plan metrics,
    hourly anomalies and, if asked, the forecast and its backtest."""
    from tasks.catalog import ensure_namespaces, open_catalog
    from tasks.settings import load_settings
    from tasks.tables import GOLD_DAILY_CONVERSION_METRICS, GOLD_DAILY_PLAN_METRICS, ensure_table

    env = embedded_env(root)
    with pytest.MonkeyPatch.context() as mp:
        _only(mp, env)
        settings = load_settings()
        catalog = open_catalog(settings, "gold")
        ensure_namespaces(catalog, settings)
        for spec, rows in ((GOLD_DAILY_CONVERSION_METRICS, daily_rows()), (GOLD_DAILY_PLAN_METRICS, plan_rows())):
            table = ensure_table(catalog, settings, spec)
            schema = table.schema().as_arrow()
            table.append(pa.Table.from_pylist([{**{f.name: None for f in schema}, **r} for r in rows], schema=schema))
        tables = [("gold.hourly_anomalies", ANOMALY_SCHEMA, anomaly_rows())]
        if with_forecast:
            tables += [("gold.capacity_forecast", FORECAST_SCHEMA, forecast_rows()),
                       ("gold.forecast_accuracy", ACCURACY_SCHEMA, accuracy_rows())]
        for name, schema, rows in tables:
            catalog.create_table(name, schema=schema).append(pa.Table.from_pylist(rows, schema=schema))
    return env


@pytest.fixture(scope="module")
def lakehouse(tmp_path_factory):
    return build_gold_lakehouse(tmp_path_factory.mktemp("lakehouse"), with_forecast=False)


@pytest.fixture
def cli(lakehouse, monkeypatch):
    _only(monkeypatch, lakehouse)
    runner = CliRunner()
    with mock.patch.dict(os.environ):  # the command exports Ray's settings into the environment
        from flows.cli import app

        yield lambda *args: runner.invoke(app, list(args))


def test_report_command_writes_one_file_from_gold(cli, tmp_path):
    target = tmp_path / "report.html"
    result = cli("report", "--out", str(target))
    assert result.exit_code == 0, (result.output, result.exception)
    assert "gold.capacity_forecast" in result.stdout and "not built yet" in result.stdout
    page = target.read_text()
    assert _sections(page) == {"volume": "filled", "success": "filled", "latency": "filled", "plans": "filled",
                               "anomalies": "filled", "forecast": "empty"}
    assert len(_pngs(page)) == 7
    assert "1 anomalous hours of 96" in page


def test_report_to_a_missing_folder_is_one_line_exit_2(cli, tmp_path):
    result = cli("report", "--out", str(tmp_path / "nope" / "report.html"))
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --out") and result.stderr.strip().count("\n") == 0
