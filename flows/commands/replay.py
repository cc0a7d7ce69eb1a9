"""`lakehouse replay [--reason CODE] [--since T] [--dry-run]`: re-check quarantined rows after a fix
and promote those now valid exactly once (flows/replay.py)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import typer


def parse_since(value: str | None) -> datetime | None:
    """An ISO 8601 time (UTC when no offset is given); ValueError naming the option otherwise."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since: {value!r} is not an ISO 8601 time such as 2026-03-01T12:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def replay_cmd(
    reason: Optional[str] = typer.Option(None, "--reason", help="only rows with this reason code (e.g. DQ_USER_COUNTRY_IN_SET, BAD_ENUM)"),
    since: Optional[str] = typer.Option(None, "--since", help="only rows quarantined from this Kafka time on (ISO 8601)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="report what would be promoted; commit nothing"),
) -> None:
    """Re-check quarantined rows with today's contract, settings and suites; promote those now
    valid to silver exactly once (then gold), leave the rest quarantined."""
    import json

    from flows.cli import _prefect_client_env, fail, flow_prints_to_stderr, out, settings

    try:
        moment = parse_since(since)
    except ValueError as exc:
        fail(str(exc), 2)
    s = settings()
    _prefect_client_env(s)
    from flows.replay import replay_flow

    with flow_prints_to_stderr():
        report = replay_flow(reason=reason, since=moment, dry_run=dry_run, settings=s)
    out.print_json(json.dumps({k: v for k, v in report.items() if k != "gold"}, default=str))
