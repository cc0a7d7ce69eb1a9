"""gold.capacity_forecast and gold.forecast_accuracy as pure functions (numpy, no I/O).

Two daily series per direction come from gold.hourly_anomalies: requests per day and the busiest
hour's requests per day. Two models compete on them:

- ``seasonal_naive``: each day as the same weekday last week; the error grows with the weeks ahead.
- ``holt_winters``: additive level, trend and weekly season, smoothing parameters picked by the
  smallest one-step squared error over a fixed grid (deterministic: no random start, no optimizer).

Both get prediction intervals from their one-step residuals (normal quantiles; Holt-Winters with
the usual h-step variance of the additive model). The model is chosen by measurement: each is fitted
without the last ``HOLDOUT_DAYS`` complete days and scored on them (MAPE, interval coverage); the
lower MAPE wins (seasonal naive on a tie, or when history is too short to hold days out) and is
refitted on all the history for the ``HORIZON_DAYS`` forecast. The newest day with data is taken
as incomplete and never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

HORIZON_DAYS = 14
HOLDOUT_DAYS = 14
SEASON = 7
MODELS = ("seasonal_naive", "holt_winters")
SERIES = ("daily_requests", "peak_hour_requests")
Z80, Z95 = 1.2815515655446004, 1.959963984540054
_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
_BETAS = (0.0, 0.01, 0.05, 0.1, 0.2)
_GAMMAS = (0.05, 0.1, 0.2, 0.3, 0.5)


@dataclass(frozen=True)
class Forecast:
    """``mean[j]`` and ``sd[j]`` for j + 1 days after the history; lower bounds stop at zero."""

    model: str
    mean: np.ndarray
    sd: np.ndarray

    def interval(self, z: float) -> tuple[np.ndarray, np.ndarray]:
        return np.maximum(self.mean - z * self.sd, 0.0), self.mean + z * self.sd


def season_for(n: int) -> int:
    """Weekly seasonality once two weeks exist, else none (a plain level)."""
    return SEASON if n >= 2 * SEASON else 1


def seasonal_naive(y: np.ndarray, horizon: int, m: int | None = None) -> Forecast:
    """Day t+j as the last observed day of the same weekday; sd from the seasonal differences."""
    y = np.asarray(y, dtype=float)
    m = m or season_for(len(y))
    if len(y) < m + 1:
        raise ValueError(f"seasonal naive needs at least {m + 1} days, got {len(y)}")
    steps = np.arange(horizon)
    mean = y[len(y) - m + steps % m]
    residuals = y[m:] - y[:-m]
    sigma = float(np.sqrt(np.mean(residuals ** 2)))
    return Forecast("seasonal_naive", mean, sigma * np.sqrt(steps // m + 1))


def _holt_winters_fit(y: np.ndarray, m: int, alpha: float, beta: float, gamma: float
                      ) -> tuple[float, float, float, np.ndarray]:
    """(sse of one-step errors, level, trend, season) after running through ``y``."""
    level = float(np.mean(y[:m]))
    trend = float((np.mean(y[m:2 * m]) - np.mean(y[:m])) / m) if m > 1 else float(y[1] - y[0])
    season = (y[:m] - level) if m > 1 else np.zeros(1)
    season = season.astype(float).copy()
    sse = 0.0
    for t in range(m if m > 1 else 1, len(y)):
        s = season[t % m]
        error = y[t] - (level + trend + s)
        sse += error * error
        new_level = alpha * (y[t] - s) + (1 - alpha) * (level + trend)
        trend = beta * (new_level - level) + (1 - beta) * trend
        if m > 1:
            season[t % m] = gamma * (y[t] - new_level) + (1 - gamma) * s
        level = new_level
    return sse, level, trend, season


def holt_winters(y: np.ndarray, horizon: int, m: int | None = None) -> Forecast:
    """Additive Holt-Winters with the grid's best (alpha, beta, gamma); ties keep the first."""
    y = np.asarray(y, dtype=float)
    m = m or season_for(len(y))
    if len(y) < max(2 * m, 3):
        raise ValueError(f"Holt-Winters needs at least {max(2 * m, 3)} days, got {len(y)}")
    best = None
    for alpha in _ALPHAS:
        for beta in _BETAS:
            for gamma in (_GAMMAS if m > 1 else (0.0,)):
                fit = _holt_winters_fit(y, m, alpha, beta, gamma)
                if best is None or fit[0] < best[0][0] - 1e-9:
                    best = (fit, alpha, beta, gamma)
    (sse, level, trend, season), alpha, beta, gamma = best
    start = m if m > 1 else 1
    sigma = math.sqrt(sse / max(len(y) - start, 1))
    n = len(y)
    steps = np.arange(1, horizon + 1)
    mean = np.array([level + h * trend + (season[(n - 1 + h) % m] if m > 1 else 0.0) for h in steps])
    c = np.array([alpha * (1 + j * beta) + (gamma if m > 1 and j % m == 0 else 0.0) for j in range(1, horizon)])
    variance = 1 + np.concatenate([[0.0], np.cumsum(c ** 2)])
    return Forecast("holt_winters", mean, sigma * np.sqrt(variance))


FIT = {"seasonal_naive": seasonal_naive, "holt_winters": holt_winters}


def backtest(y: np.ndarray, model: str, holdout: int) -> dict | None:
    """Fit without the last ``holdout`` days, forecast them: MAPE (days with zero actuals skipped)
    and the share of actuals inside the 80% and 95% intervals. None if too short to hold out."""
    y = np.asarray(y, dtype=float)
    if holdout < 1 or len(y) - holdout < 2 * SEASON:
        return None
    train, actual = y[:-holdout], y[-holdout:]
    forecast = FIT[model](train, holdout, season_for(len(train)))
    nonzero = actual != 0
    mape = float(np.mean(np.abs(actual[nonzero] - forecast.mean[nonzero]) / actual[nonzero])) if nonzero.any() else None
    lo80, hi80 = forecast.interval(Z80)
    lo95, hi95 = forecast.interval(Z95)
    return {"mape": mape, "coverage_80": float(np.mean((actual >= lo80) & (actual <= hi80))),
            "coverage_95": float(np.mean((actual >= lo95) & (actual <= hi95)))}


def daily_series(hourly: pa.Table) -> tuple[date | None, dict[tuple[str, str], np.ndarray]]:
    """(history_through, {(direction, series): values per day}) from hourly rows (event_hour,
    direction, requests): complete days only (the newest day with data is still filling), days
    without a row count as zero, lead-in days trimmed (:func:`trim_lead_in`)."""
    hours = hourly.column("event_hour").to_pylist()
    if not hours:
        return None, {}
    days = [h.astimezone(timezone.utc).date() for h in hours]
    first, newest = min(days), max(days)
    through = newest - timedelta(days=1)
    if through < first:
        return None, {}
    n = (through - first).days + 1
    out: dict[tuple[str, str], np.ndarray] = {}
    for day, direction, requests in zip(days, hourly.column("direction").to_pylist(),
                                        hourly.column("requests").to_pylist()):
        if day > through or direction is None:
            continue
        total = out.setdefault((direction, "daily_requests"), np.zeros(n))
        peak = out.setdefault((direction, "peak_hour_requests"), np.zeros(n))
        i = (day - first).days
        total[i] += requests or 0
        peak[i] = max(peak[i], requests or 0)
    return through, {key: trim_lead_in(y) for key, y in out.items()}


LEAD_IN_SHARE = 0.1


def trim_lead_in(y: np.ndarray) -> np.ndarray:
    """The series from its first day with at least LEAD_IN_SHARE of the median day: the days
    before a service (or its data) really starts hold a trickle of late events, not its traffic."""
    if len(y) == 0:
        return y
    floor = LEAD_IN_SHARE * float(np.median(y))
    start = int(np.argmax(y >= floor)) if (y >= floor).any() else len(y)
    return y[start:]


def capacity_tables(hourly: pa.Table, horizon: int = HORIZON_DAYS, holdout: int = HOLDOUT_DAYS
                    ) -> tuple[pa.Table, pa.Table]:
    """(gold.capacity_forecast rows, gold.forecast_accuracy rows) from hourly requests."""
    through, series = daily_series(hourly)
    forecast_rows, accuracy_rows = [], []
    for (direction, metric), y in sorted(series.items()):
        if len(y) < 2:
            continue
        scores = {}
        held = min(holdout, len(y) - 2 * SEASON)
        for model in MODELS:
            result = backtest(y, model, held)
            if result is not None:
                scores[model] = result
                accuracy_rows.append({"direction": direction, "metric": metric, "model": model,
                                      "holdout_days": held, **result, "history_through": through})
        measured = {m: s["mape"] for m, s in scores.items() if s["mape"] is not None}
        chosen = min(MODELS, key=lambda m: (measured.get(m, math.inf), MODELS.index(m))) if measured else "seasonal_naive"
        m = season_for(len(y))
        if chosen == "seasonal_naive" and len(y) < m + 1:
            m = 1
        forecast = FIT[chosen](y, horizon, m)
        lo80, hi80 = forecast.interval(Z80)
        lo95, hi95 = forecast.interval(Z95)
        for j in range(horizon):
            forecast_rows.append({
                "direction": direction, "metric": metric, "forecast_date": through + timedelta(days=j + 1),
                "horizon_days": j + 1, "forecast": max(float(forecast.mean[j]), 0.0),
                "lower_80": float(lo80[j]), "upper_80": float(hi80[j]), "lower_95": float(lo95[j]),
                "upper_95": float(hi95[j]), "model": chosen, "history_through": through,
            })
    return pa.Table.from_pylist(forecast_rows, schema=FORECAST_SCHEMA), pa.Table.from_pylist(accuracy_rows, schema=ACCURACY_SCHEMA)


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

