"""`lakehouse dq status` and `lakehouse dq docs`: what the data-quality checks found (from
audit.dq_results, through the serving role) and where their GX Data Docs are."""

from __future__ import annotations

import typer

dq_app = typer.Typer(no_args_is_help=True, help="Data quality: the results of the expectation suites.")


@dq_app.command("status")
def status_cmd(
    runs: int = typer.Option(3, "--runs", min=1, help="checked batches shown per table"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines"),
) -> None:
    """The last checked batches per table and suite, and the expectations that were not met."""
    import json

    from pyiceberg.exceptions import NoSuchTableError

    from flows.cli import out, settings
    from tasks.catalog import open_catalog
    from tasks.quality.results import latest_status
    from tasks.tables import AUDIT_DQ_RESULTS

    s = settings()
    try:
        audit = open_catalog(s, "serving").load_table(AUDIT_DQ_RESULTS.identifier).scan().to_arrow()
    except NoSuchTableError:
        out.print("no data-quality results yet (audit.dq_results is created by the first silver promotion)")
        return
    rows = latest_status(audit, runs)
    if as_json:
        for row in rows:
            out.print_json(json.dumps(row, default=str))
        return
    if not rows:
        out.print("no data-quality results yet")
        return
    from rich.table import Table

    view = Table("table", "suite", "evaluated at", "run", "met", "failing")
    for row in rows:
        failing = "\n".join(row["failing"]) or "-"
        view.add_row(row["table"], row["suite"], f"{row['evaluated_at']:%Y-%m-%d %H:%M:%S}", row["run_id"][:8],
                     f"{row['met']}/{row['expectations']}", failing,
                     style="red" if any("(fail)" in f for f in row["failing"]) else None)
    out.print(view)


@dq_app.command("docs")
def docs_cmd() -> None:
    """Print the path of the GX Data Docs index (built into the state folder by every check)."""
    from flows.cli import fail, out, settings
    from tasks.quality.docs import index_page

    page = index_page(settings())
    if not page.exists():
        fail(f"no Data Docs yet at {page}: they are built by the first silver promotion or gold build", 1)
    out.print(str(page), highlight=False, soft_wrap=True)
