"""`lakehouse report`: one self-contained HTML page with the plots people would rather look at than
read (volume, success rate, latency percentiles, plan mix, anomalies, forecast), from gold through
the serving role.

Three parts: ``read_report_data`` is the only I/O (one SQL query per gold table, None for a table
that does not exist yet); the ``*_series``/``*_shares``/``flagged_hours`` functions shape rows for a
plot and are pure; ``render_report`` draws with matplotlib's Agg backend (imported there, lazily:
a PNG per plot, embedded as base64) and writes no file itself.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable

DAILY = "gold.daily_conversion_metrics"
PLANS = "gold.daily_plan_metrics"
ANOMALIES = "gold.hourly_anomalies"
FORECAST = "gold.capacity_forecast"
ACCURACY = "gold.forecast_accuracy"

QUERIES = {
    DAILY: f"SELECT event_date, direction, requests, success_rate, p50_latency_ms, p95_latency_ms, p99_latency_ms "
           f"FROM {DAILY} ORDER BY event_date, direction",
    PLANS: f"SELECT event_date, user_plan, requests FROM {PLANS} ORDER BY event_date, user_plan",
    ANOMALIES: f"SELECT * FROM {ANOMALIES} ORDER BY event_hour, direction",
    FORECAST: f"SELECT * FROM {FORECAST} ORDER BY direction, metric, forecast_date",
    ACCURACY: f"SELECT * FROM {ACCURACY} ORDER BY direction, metric, model",
}
DIRECTIONS = ("to_roman", "from_roman")
ANOMALY_METRICS = ("requests", "error_rate", "p95_latency_ms")
ANOMALY_DAYS = 14  # the anomaly plots show the last two weeks of hours
FLAGGED_ROWS = 25  # the newest flagged hours listed under the plots

Rows = list[dict]


# ---- I/O: the gold tables through the serving role ---------------------------------------------

def read_report_data(settings) -> dict[str, Rows | None]:
    """Every table the report draws, as rows; None for a table that does not exist yet."""
    from tasks.catalog import open_catalog
    from tasks.serving import run_sql, table_names

    present = set(table_names(open_catalog(settings, "serving")))
    return {name: (run_sql(settings, query).to_pylist() if name in present else None)
            for name, query in QUERIES.items()}


# ---- pure: rows shaped for a plot ---------------------------------------------------------------

@dataclass
class Series:
    x: list = field(default_factory=list)
    y: list = field(default_factory=list)


def daily_series(rows: Rows, column: str) -> dict[str, Series]:
    """One series per direction of ``column`` by day, days ascending; a missing value is skipped."""
    out: dict[str, Series] = {}
    for row in sorted(rows, key=lambda r: (r["event_date"], r["direction"])):
        if row.get(column) is None:
            continue
        series = out.setdefault(row["direction"], Series())
        series.x.append(row["event_date"])
        series.y.append(row[column])
    return out


def plan_shares(rows: Rows) -> tuple[list[date], dict[str, list[float]]]:
    """Each plan's share of the day's requests (the shares of a day sum to 1); plans sorted by
    name, a plan absent on a day has share 0. Days without requests are left out."""
    totals: dict[date, int] = {}
    by_plan: dict[str, dict[date, int]] = {}
    for row in rows:
        plan = row["user_plan"] or "anonymous"
        by_plan.setdefault(plan, {})
        by_plan[plan][row["event_date"]] = by_plan[plan].get(row["event_date"], 0) + (row["requests"] or 0)
        totals[row["event_date"]] = totals.get(row["event_date"], 0) + (row["requests"] or 0)
    days = sorted(d for d, n in totals.items() if n > 0)
    return days, {plan: [counts.get(d, 0) / totals[d] for d in days] for plan, counts in sorted(by_plan.items())}


def anomaly_series(rows: Rows, metric: str, direction: str, days: int = ANOMALY_DAYS) -> dict[str, Series]:
    """For one direction, the last ``days`` days of hours before its newest one: the ``metric``,
    its baseline, and the flagged hours (``<metric>_anomaly``)."""
    mine = sorted((r for r in rows if r["direction"] == direction), key=lambda r: r["event_hour"])
    if not mine:
        return {"value": Series(), "baseline": Series(), "flagged": Series()}
    since = mine[-1]["event_hour"] - timedelta(days=days)
    value, baseline, flagged = Series(), Series(), Series()
    for row in mine:
        if row["event_hour"] <= since:
            continue
        if row.get(metric) is not None:
            value.x.append(row["event_hour"])
            value.y.append(row[metric])
            if row.get(f"{metric}_anomaly"):
                flagged.x.append(row["event_hour"])
                flagged.y.append(row[metric])
        if row.get(f"{metric}_baseline") is not None:
            baseline.x.append(row["event_hour"])
            baseline.y.append(row[f"{metric}_baseline"])
    return {"value": value, "baseline": baseline, "flagged": flagged}


def flagged_hours(rows: Rows, limit: int = FLAGGED_ROWS) -> Rows:
    """The newest ``limit`` anomalous hours, newest first: hour, direction and which metrics (with
    value, baseline and score) made it one."""
    out = []
    for row in sorted((r for r in rows if r.get("is_anomaly")), key=lambda r: (r["event_hour"], r["direction"]),
                      reverse=True)[:limit]:
        out.append({
            "event_hour": row["event_hour"], "direction": row["direction"],
            "metrics": [(m, row.get(m), row.get(f"{m}_baseline"), row.get(f"{m}_score"))
                        for m in ANOMALY_METRICS if row.get(f"{m}_anomaly")],
        })
    return out


def forecast_bands(rows: Rows, metric: str, direction: str) -> dict[str, list]:
    """The newest forecast (greatest ``history_through``) of ``metric`` for ``direction``: dates,
    forecast, and the 80% and 95% bounds, by date; with its model."""
    mine = [r for r in rows if r["metric"] == metric and r["direction"] == direction]
    if not mine:
        return {"dates": [], "forecast": [], "lower_80": [], "upper_80": [], "lower_95": [], "upper_95": [],
                "model": None}
    newest = max(r["history_through"] for r in mine)
    mine = sorted((r for r in mine if r["history_through"] == newest), key=lambda r: r["forecast_date"])
    bands: dict[str, list] = {"dates": [r["forecast_date"] for r in mine]}
    for key in ("forecast", "lower_80", "upper_80", "lower_95", "upper_95"):
        bands[key] = [r[key] for r in mine]
    bands["model"] = mine[0]["model"]
    return bands


# ---- drawing and the page -----------------------------------------------------------------------

@dataclass
class Section:
    key: str
    title: str
    body: str = ""  # HTML
    empty: str | None = None  # why there is nothing to show


def render_report(data: dict[str, Rows | None], generated_at: datetime, source: str) -> str:
    """The whole page as one string: every section, each plot an inline base64 PNG."""
    sections = [
        _section("volume", "Volume", data.get(DAILY), DAILY, lambda r: _daily_plot(r, "requests", "requests per day")),
        _section("success", "Success rate", data.get(DAILY), DAILY,
                 lambda r: _daily_plot(r, "success_rate", "share of calls that succeeded", percent=True)),
        _section("latency", "Latency percentiles", data.get(DAILY), DAILY, _latency_plot),
        _section("plans", "Plan mix", data.get(PLANS), PLANS, _plan_plot),
        _section("anomalies", "Anomalies", data.get(ANOMALIES), ANOMALIES, _anomaly_body),
        _forecast_section(data.get(FORECAST), data.get(ACCURACY)),
    ]
    return _page(sections, generated_at, source)


def _section(key: str, title: str, rows: Rows | None, table: str, body: Callable[[Rows], str]) -> Section:
    if rows is None:
        return Section(key, title, empty=f"{table} does not exist yet: the gold flow builds it "
                                         f"(lakehouse run gold).")
    if not rows:
        return Section(key, title, empty=f"{table} has no rows yet.")
    return Section(key, title, body=body(rows))


def _forecast_section(forecast: Rows | None, accuracy: Rows | None) -> Section:
    section = _section("forecast", "Capacity forecast", forecast, FORECAST, _forecast_plot)
    if forecast:
        if accuracy is None:
            section.body += f'<p class="empty">{ACCURACY} does not exist yet: no backtest to show.</p>'
        elif accuracy:
            section.body += _accuracy_table(accuracy)
    return section


def _figure(height: float = 3.2):
    """A figure drawn in memory by Agg, without pyplot: no display, no global backend switched
    (a notebook's inline backend stays as it is)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, height), dpi=100)
    ax = fig.subplots()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


COLORS = {"to_roman": "tab:blue", "from_roman": "tab:orange"}  # the same in every plot


def _by_day(fig, ax, days: int) -> None:
    """Day ticks (not matplotlib's hourly ones for a few days), at most about ten."""
    from matplotlib.dates import DateFormatter, DayLocator

    ax.xaxis.set_major_locator(DayLocator(interval=max(1, days // 10)))
    ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    fig.autofmt_xdate()


def _marker(points: list, marker: str) -> str | None:
    """Markers while they can be told apart (two months of days); a plain line beyond."""
    return marker if len(points) <= 60 else None


def _daily_plot(rows: Rows, column: str, label: str, percent: bool = False) -> str:
    fig, ax = _figure()
    series = daily_series(rows, column)
    for direction in [d for d in DIRECTIONS if d in series] + sorted(set(series) - set(DIRECTIONS)):
        line = series[direction]
        ax.plot(line.x, [v * 100 for v in line.y] if percent else line.y, marker=_marker(line.x, "o"),
                label=direction, color=COLORS.get(direction))
    ax.set_ylabel(f"{label} (%)" if percent else label)
    ax.legend()
    _by_day(fig, ax, len({r["event_date"] for r in rows}))
    return _png(fig, label)


def _latency_plot(rows: Rows) -> str:
    fig, ax = _figure()
    for column, style in zip(("p50_latency_ms", "p95_latency_ms", "p99_latency_ms"), (":", "-", "--")):
        for direction, series in daily_series(rows, column).items():
            ax.plot(series.x, series.y, style, marker=_marker(series.x, "."), color=COLORS.get(direction),
                    label=f"{direction} {column.split('_')[0]}")
    ax.set_ylabel("latency (ms, nearest-rank)")
    ax.legend(ncol=3, fontsize="small")
    _by_day(fig, ax, len({r["event_date"] for r in rows}))
    return _png(fig, "latency percentiles per day")


def _plan_plot(rows: Rows) -> str:
    days, shares = plan_shares(rows)
    fig, ax = _figure()
    bottom = [0.0] * len(days)
    for plan, values in shares.items():
        ax.bar(days, [v * 100 for v in values], width=0.9, bottom=[b * 100 for b in bottom], label=plan)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("share of requests (%)")
    ax.legend(fontsize="small")
    _by_day(fig, ax, len(days))
    return _png(fig, "plan mix per day")


def _anomaly_body(rows: Rows) -> str:
    parts = []
    for metric in ANOMALY_METRICS:
        fig, ax = _figure(2.6)
        for direction, color in COLORS.items():
            lines = anomaly_series(rows, metric, direction)
            if not lines["value"].x:
                continue
            ax.plot(lines["value"].x, lines["value"].y, color=color, linewidth=1, label=direction)
            ax.plot(lines["baseline"].x, lines["baseline"].y, color=color, linewidth=1, linestyle=":",
                    label=f"{direction} baseline")
            ax.scatter(lines["flagged"].x, lines["flagged"].y, color="red", zorder=3, s=18)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per hour, last {ANOMALY_DAYS} days (red: flagged)", fontsize="small")
        ax.legend(fontsize="x-small", ncol=2)
        fig.autofmt_xdate()
        parts.append(_png(fig, f"{metric} per hour with its baseline"))
    flagged = flagged_hours(rows)
    count = sum(1 for r in rows if r.get("is_anomaly"))
    parts.append(f"<p>{count} anomalous hours of {len(rows)} (hour × direction); the newest:</p>")
    if flagged:
        body = "".join(
            f"<tr><td>{_text(r['event_hour'])}</td><td>{_text(r['direction'])}</td><td>"
            + "; ".join(f"{html.escape(m)} {_number(v)} vs {_number(b)} (score {_number(s)})" for m, v, b, s in r["metrics"])
            + "</td></tr>" for r in flagged)
        parts.append(f"<table><tr><th>hour (UTC)</th><th>direction</th><th>flagged</th></tr>{body}</table>")
    return "".join(parts)


def _forecast_plot(rows: Rows) -> str:
    parts = []
    for metric in sorted({r["metric"] for r in rows}):
        fig, ax = _figure(2.8)
        for direction, color in COLORS.items():
            bands = forecast_bands(rows, metric, direction)
            if not bands["dates"]:
                continue
            ax.fill_between(bands["dates"], bands["lower_95"], bands["upper_95"], color=color, alpha=0.12)
            ax.fill_between(bands["dates"], bands["lower_80"], bands["upper_80"], color=color, alpha=0.25)
            ax.plot(bands["dates"], bands["forecast"], color=color, marker=".", label=f"{direction} ({bands['model']})")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: forecast with 80% and 95% intervals", fontsize="small")
        ax.legend(fontsize="x-small")
        fig.autofmt_xdate()
        parts.append(_png(fig, f"{metric} forecast"))
    return "".join(parts)


def _accuracy_table(rows: Rows) -> str:
    body = "".join(
        f"<tr><td>{_text(r['direction'])}</td><td>{_text(r['metric'])}</td><td>{_text(r['model'])}</td>"
        f"<td>{_text(r['holdout_days'])}</td><td>{_number(r['mape'], percent=True)}</td>"
        f"<td>{_number(r['coverage_80'], percent=True)}</td><td>{_number(r['coverage_95'], percent=True)}</td></tr>"
        for r in rows)
    return ("<h3>Backtest on held-out days</h3><table><tr><th>direction</th><th>metric</th><th>model</th>"
            "<th>held-out days</th><th>MAPE</th><th>80% coverage</th><th>95% coverage</th></tr>"
            f"{body}</table>")


def _text(value) -> str:
    if isinstance(value, datetime):
        return html.escape(value.strftime("%Y-%m-%d %H:%M"))
    return html.escape("" if value is None else str(value))


def _number(value, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.1f}%" if percent else f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
section { border-top: 1px solid #ddd; padding: 0.5em 0 1em; }
section.empty p { color: #8a6d3b; background: #fcf8e3; padding: 0.6em; border-radius: 4px; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; }
nav a { margin-right: 1em; }
"""


def _page(sections: list[Section], generated_at: datetime, source: str) -> str:
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.key}" class="{"empty" if s.empty else "filled"}"><h2>{html.escape(s.title)}</h2>'
        + (f'<p class="empty">{html.escape(s.empty)}</p>' if s.empty else s.body) + "</section>"
        for s in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lakehouse report</title>"
            f"<style>{_STYLE}</style></head><body><h1>Roman Numeral Service: lakehouse report</h1>"
            f"<p class=\"meta\">{html.escape(source)} · generated {html.escape(generated_at.isoformat(timespec='seconds'))}"
            f"</p><nav>{nav}</nav>{body}</body></html>\n")
