"""`lakehouse lineage`: the silver and bronze snapshots and the Kafka offset ranges behind a table
state, or (``--downstream``) the silver and gold snapshots a Kafka range or bronze snapshot reached.
Read-only, through the serving role; the walks are pure functions in tasks/lineage/walk.py."""

from __future__ import annotations

from typing import Optional

import typer

FORMATS = ("tree", "json", "mermaid", "dot")


def lineage_cmd(
    table: Optional[str] = typer.Argument(None, help="a table, e.g. gold.daily_conversion_metrics (not with --downstream)"),
    snapshot: Optional[int] = typer.Option(None, "--snapshot", help="that snapshot of the table; default its current one"),
    where: Optional[str] = typer.Option(None, "--where", help="only the rows matching this filter on silver facts, "
                                        "e.g. \"event_date = '2026-11-30'\": their exact Kafka offsets"),
    downstream: Optional[str] = typer.Option(None, "--downstream", help="topic:partition:first-last, or a bronze "
                                             "snapshot id: which silver and gold snapshots it reached"),
    fmt: str = typer.Option("tree", "--format", help="tree, json, mermaid or dot"),
) -> None:
    """Walk a table state down to the Kafka records behind it, or Kafka records up to gold."""
    from flows.cli import fail, out, settings
    from tasks.catalog import open_catalog
    from tasks.lineage import walk
    from tasks.lineage.reading import matching_fact_coordinates, read_histories
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, SILVER_FACT_CONVERSIONS

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}", 2)
    if (table is None) == (downstream is None):
        fail("give a table, or --downstream RANGE|BRONZE_SNAPSHOT (not both)", 2)
    if downstream is not None and (snapshot is not None or where is not None):
        fail("--snapshot and --where go with a table, not with --downstream", 2)
    bronze, facts = BRONZE_CONVERSION_EVENTS_RAW.identifier, SILVER_FACT_CONVERSIONS.identifier
    try:
        wanted = None if downstream is None or downstream.strip().isdigit() else walk.parse_range(downstream)
        catalog = open_catalog(settings(), "serving")
        histories = read_histories(catalog)
        if wanted is not None:
            tree = walk.kafka_downstream(histories, bronze, wanted)
        elif downstream is not None:
            tree = walk.downstream_tree(histories, bronze, int(downstream),
                                        walk.bronze_ranges(histories.get(bronze, ()), int(downstream)))
        elif where is not None:
            facts_id = walk.facts_snapshot(histories, table, snapshot, facts)
            rows = matching_fact_coordinates(catalog, facts, facts_id, where)
            tree = walk.where_tree(histories, table, snapshot, facts, rows, where)
        else:
            tree = walk.upstream_tree(histories, table, snapshot)
    except walk.LineageError as exc:
        fail(str(exc), 2)
    show(out, tree, fmt)
    note_dead_letters(settings())


def note_dead_letters(s) -> None:
    """One line on stderr (stdout stays the tree, JSON or graph) when the lineage backend refused
    events for good: they wait in the dead-letter file, not in the backend."""
    from flows.cli import err
    from tasks.lineage.emit import dead_letter_path, dead_letters

    try:
        count = len(dead_letters(s))
    except OSError:  # unreadable: the answer above stands, this is only a reminder
        return
    if count:
        err.print(f"note: {count} lineage event{'s' if count > 1 else ''} refused for good by the {s.lineage_transport} "
                  f"backend, kept in {dead_letter_path(s)}", highlight=False, markup=False, soft_wrap=True)


def show(console, tree, fmt: str) -> None:
    from tasks.lineage.render import to_dot, to_json, to_mermaid

    if fmt == "json":
        console.print_json(to_json(tree))
    elif fmt in ("mermaid", "dot"):
        console.print(to_mermaid(tree) if fmt == "mermaid" else to_dot(tree), highlight=False, soft_wrap=True,
                      markup=False)
    else:
        console.print(rich_tree(tree))


def rich_tree(node, limit: int = 20):
    """The terminal view: one branch per upstream (or downstream) snapshot; a long run of bronze
    commits shows its newest ``limit`` (JSON has all)."""
    from rich.markup import escape
    from rich.tree import Tree

    from tasks.lineage.render import label, range_text

    def add(parent, n) -> None:
        branch = parent.add(_line(n))
        children = n.children
        if len(children) > limit:
            branch.add(f"[dim]... {len(children) - limit} earlier[/]")
            children = children[-limit:]
        for child in children:
            add(branch, child)

    def _line(n) -> str:
        parts = [f"[bold]{escape(label(n))}[/]"]
        parts += [f"[cyan]{escape(r)}[/]" for r in range_text(n)]
        if n.note:
            parts.append(f"[dim]{escape(n.note)}[/]")
        return "\n".join(parts)

    root = Tree(_line(node))
    children = node.children[-limit:]
    if len(node.children) > limit:
        root.add(f"[dim]... {len(node.children) - limit} earlier[/]")
    for child in children:
        add(root, child)
    return root
