"""How `lakehouse tables | history | diff` fit an 80-column terminal: the columns that matter
first, as many as fit whole, one line per row; the rest behind ``--wide`` or ``--format json``.

The shaping (which columns, how a cell reads) is pure and unit-tested; ``print_rows`` only draws.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from typing import Iterable, Sequence

GAP = 2  # spaces between two columns of a borderless rich table (padding 1 on each side)
MAX_CELL = 40  # a longer value is cut with an ellipsis in the default view; --wide shows it whole

# The columns that matter first, per table; any other column follows in schema order.
LEADING_COLUMNS: dict[str, tuple[str, ...]] = {
    "bronze.conversion_events_raw": ("partition", "offset", "kafka_timestamp", "key", "ingest_run_id"),
    "silver.fact_conversions": ("event_id", "occurred_at", "direction", "success", "input", "output", "latency_ms"),
    "silver.conversion_events_rejected": ("source_partition", "source_offset", "reason_codes", "reject_detail"),
    "silver.dim_users": ("user_id", "user_plan", "valid_from", "valid_to", "is_current"),
    "tables": ("name", "rows", "files", "size", "last_commit"),
    "history": ("snapshot_id", "committed_at", "operation", "added", "total"),
}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size_bytes: int | None) -> str:
    """Bytes in binary units with one decimal (``1.5 MiB``); whole bytes below 1 KiB."""
    if size_bytes is None:
        return ""
    size, unit = float(size_bytes), 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size, unit = size / 1024, unit + 1
    return f"{int(size)} B" if unit == 0 else f"{size:.1f} {_UNITS[unit]}"


def compact_time(value: datetime | str | None, seconds: bool = True) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM[:SS]`` in UTC: what a terminal column has room for."""
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def cell_text(value) -> str:
    """One value as the table view writes it: timestamps compact (UTC), binary as hex, lists and
    structs as JSON, floats with at most 4 decimals."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return compact_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "NaN"
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
    return str(value)


def ordered_columns(names: Sequence[str], leading: Iterable[str] = ()) -> list[str]:
    """The ``leading`` columns that exist, then every other column in its own order."""
    first = [n for n in leading if n in names]
    return first + [n for n in names if n not in first]


def fit_columns(widths: dict[str, int], budget: int, gap: int = GAP) -> list[str]:
    """The longest prefix of ``widths`` (in its order) whose columns, ``gap`` apart, fit ``budget``
    characters; always at least the first column."""
    chosen: list[str] = []
    used = 0
    for name, width in widths.items():
        need = width + (gap if chosen else 0)
        if chosen and used + need > budget:
            break
        chosen.append(name)
        used += need
    return chosen


def column_widths(rows: list[dict[str, str]], columns: Sequence[str], cap: int | None = MAX_CELL) -> dict[str, int]:
    """Each column's width: its header or its longest cell, at most ``cap``."""
    widths = {}
    for name in columns:
        longest = max([len(name), *(len(r.get(name, "")) for r in rows)])
        widths[name] = min(longest, cap) if cap else longest
    return widths


def history_view(rows: list[dict]) -> tuple[list[dict[str, str]], list[str]]:
    """``tasks.serving.history`` rows as the default view: id, time, operation, counts; and one
    line per audited offset reset, printed under the table (too long for a column)."""
    view, notes = [], []
    for r in rows:
        view.append({
            "snapshot_id": str(r["snapshot_id"]),
            "committed_at": compact_time(r["committed_at"]),
            "operation": (r["operation"] or "") + (" (reset)" if r.get("reset") else ""),
            "added": r["added_records"] or "",
            "total": r["total_records"] or "",
        })
        if r.get("reset"):
            notes.append(f"{r['snapshot_id']}: {r['reset']}")
    return view, notes


def tables_view(rows: list[dict]) -> list[dict[str, str]]:
    """``describe_tables`` rows with human sizes and minute-precision commit times."""
    return [{
        "name": r["name"], "rows": f"{r['rows']:,}", "files": f"{r['files']:,}", "size": human_size(r["size_bytes"]),
        "last_commit": compact_time(r["last_commit"], seconds=False), "snapshot_id": cell_text(r["snapshot_id"]),
    } for r in rows]


def as_text_rows(rows: list[dict]) -> list[dict[str, str]]:
    return [{k: cell_text(v) for k, v in r.items()} for r in rows]


def print_rows(console, rows: list[dict[str, str]], columns: Sequence[str], wide: bool,
               leading: Iterable[str] = (), right: Iterable[str] = ()) -> list[str]:
    """Draw ``rows`` (text cells) one line each: in the console's width the leading columns that fit
    whole, or with ``wide`` every column at its full width. Returns the columns left out."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    order = ordered_columns(list(columns), leading)
    widths = column_widths(rows, order, cap=None if wide else MAX_CELL)
    shown = order if wide else fit_columns(widths, console.width)
    # one space of padding and the box's one-space divider: GAP between columns, none at the edges
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    aligned = set(right)
    for name in shown:
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=None if wide else MAX_CELL,
                         justify="right" if name in aligned else "left")
    for row in rows:
        table.add_row(*[Text(row.get(name, "")) for name in shown])  # Text: a "[...]" in a value is no markup
    if wide:  # a console as wide as the table: rich never prints wider than its console
        natural = sum(widths[n] for n in shown) + GAP * (len(shown) - 1)
        Console(file=console.file, width=max(console.width, natural), color_system=None).print(table)
    else:
        console.print(table)
    hidden = [n for n in order if n not in shown]
    if hidden:
        console.print(f"({len(hidden)} more column{'s' if len(hidden) > 1 else ''}: {', '.join(hidden)}; "
                      "--wide or --format json)",
                      highlight=False, markup=False, soft_wrap=False)
    return hidden


def print_history(console, rows: list[dict], wide: bool) -> None:
    """`lakehouse history`: id, time, operation and counts; ``wide`` adds the parent and the summary
    we keep (offsets, upstream snapshots, reports) as JSON."""
    view, notes = history_view(rows)
    columns = list(LEADING_COLUMNS["history"])
    if wide:
        for shown, full in zip(view, rows):
            shown["parent_id"] = cell_text(full["parent_id"])
            shown["lakehouse"] = json.dumps(full["lakehouse"], default=str)
        columns += ["parent_id", "lakehouse"]
    print_rows(console, view, columns, wide, right=("added", "total"))
    for note in notes:
        console.print(note, highlight=False, markup=False)


def print_tables(console, rows: list[dict], wide: bool) -> None:
    """`lakehouse tables`: rows, files, human size and last commit; ``wide`` adds the snapshot id."""
    print_rows(console, tables_view(rows), list(LEADING_COLUMNS["tables"]) + ["snapshot_id"], wide,
               right=("rows", "files", "size"))


def print_diff(console, name: str, table, wide: bool) -> None:
    """`lakehouse diff`: the appended rows (an Arrow table), the table's telling columns first."""
    rows = as_text_rows(table.to_pylist())
    print_rows(console, rows, table.column_names, wide, leading=LEADING_COLUMNS.get(name, ()))
    console.print(f"{table.num_rows} rows appended", highlight=False, markup=False)
