"""What a notebook imports to reach the lakehouse: ``from tasks.notebook_session import sql`` and
``sql("SELECT ... FROM gold.daily_conversion_metrics")`` is a pandas DataFrame.

The settings are the `lakehouse` command's (``LAKEHOUSE_*`` variables or ``LAKEHOUSE_CONFIG``,
which `lakehouse notebook` hands to JupyterLab and so to every kernel), read once per kernel; every
read goes through the serving role, which can read every table and write none.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

import pandas as pd

from tasks.settings import Settings, load_settings


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The kernel's settings, read once."""
    return load_settings()


def _moment(as_of: datetime | str | None) -> datetime | None:
    if as_of is None:
        return None
    moment = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def sql(query: str, as_of: datetime | str | None = None, snapshots: dict[str, int] | None = None) -> pd.DataFrame:
    """Daft SQL over ``<layer>.<table>`` names, as `lakehouse sql`: ``as_of`` (a datetime or ISO
    text, UTC if naive) reads every table as it was then, ``snapshots`` pins tables by id."""
    from tasks.serving import run_sql

    return run_sql(settings(), query, as_of=_moment(as_of), snapshots=snapshots).to_pandas()


def tables() -> pd.DataFrame:
    """Every table: rows, files, size, current snapshot and last commit (`lakehouse tables`)."""
    from dataclasses import asdict

    from tasks.serving import describe_tables

    return pd.DataFrame([asdict(t) for t in describe_tables(settings())])


def exists(name: str) -> bool:
    """Whether ``<layer>.<table>`` exists yet (gold's newer tables appear with their first build)."""
    from tasks.catalog import open_catalog
    from tasks.serving import table_names

    return name in table_names(open_catalog(settings(), "serving"))


def history(name: str) -> pd.DataFrame:
    """A table's snapshots, oldest first, with the summary we keep (`lakehouse history`)."""
    from tasks.serving import history as snapshots

    frame = pd.DataFrame(snapshots(settings(), name))
    frame["committed_at"] = pd.to_datetime(frame["committed_at"], utc=True)
    return frame


__all__ = ["exists", "history", "settings", "sql", "tables"]
