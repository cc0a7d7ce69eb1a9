"""A lineage tree as text a user can paste: JSON, a Mermaid flowchart, a Graphviz DOT graph."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from tasks.lineage.walk import Node


def label(node: Node) -> str:
    """``table @ snapshot`` (and when it was committed)."""
    text = node.table if node.snapshot_id is None else f"{node.table} @ {node.snapshot_id}"
    if node.committed_at_ms is not None:
        text += f" ({datetime.fromtimestamp(node.committed_at_ms / 1000, timezone.utc):%Y-%m-%d %H:%M:%S}Z)"
    return text


def range_text(node: Node, limit: int = 6) -> list[str]:
    shown = [f"{r.topic}[{r.partition}] offsets {r.first}..{r.last}" for r in node.ranges[:limit]]
    if len(node.ranges) > limit:
        shown.append(f"... {len(node.ranges) - limit} more ranges")
    return shown


def to_json(node: Node) -> str:
    return json.dumps(node.as_dict(), indent=2)


def _edges(node: Node, ids: dict[int, str], out: list[tuple[str, str]]) -> None:
    ids.setdefault(id(node), f"n{len(ids)}")
    for child in node.children:
        ids.setdefault(id(child), f"n{len(ids)}")
        out.append((ids[id(child)], ids[id(node)]))  # data flows from upstream to downstream
        _edges(child, ids, out)


def _walk(node: Node) -> list[Node]:
    return [node, *(n for c in node.children for n in _walk(c))]


def _text(node: Node) -> list[str]:
    return [label(node), *range_text(node, 3), *([node.note] if node.note else [])]


def to_mermaid(node: Node) -> str:
    """A ``flowchart LR``: upstream on the left, arrows in the direction the data flowed."""
    ids: dict[int, str] = {}
    edges: list[tuple[str, str]] = []
    _edges(node, ids, edges)
    lines = ["flowchart LR"]
    for n in _walk(node):
        text = "<br/>".join(t.replace('"', "'") for t in _text(n))
        lines.append(f'    {ids[id(n)]}["{text}"]')
    lines += [f"    {a} --> {b}" for a, b in edges]
    return "\n".join(lines)


def to_dot(node: Node) -> str:
    """A ``digraph`` for Graphviz (``dot -Tsvg``), edges in the direction the data flowed."""
    ids: dict[int, str] = {}
    edges: list[tuple[str, str]] = []
    _edges(node, ids, edges)
    lines = ["digraph lineage {", "    rankdir=LR;", "    node [shape=box];"]
    for n in _walk(node):
        text = "\\n".join(t.replace("\\", "\\\\").replace('"', '\\"') for t in _text(n))
        lines.append(f'    {ids[id(n)]} [label="{text}"];')
    lines += [f"    {a} -> {b};" for a, b in edges]
    lines.append("}")
    return "\n".join(lines)
