"""The ``lakehouse`` command. It reads the settings once and dispatches to flows and the stack."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tasks.settings import Settings, SettingsError, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="The Roman Numeral Service lakehouse.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack: Kafka, SeaweedFS S3, Iceberg REST, Prefect, Ray.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the settings.")
app.add_typer(stack_app, name="stack")
app.add_typer(config_app, name="config")

err = Console(stderr=True)
out = Console()


class _State:
    config: Optional[Path] = None
    settings: Optional[Settings] = None


def fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings() -> Settings:
    """The settings, read and validated once per process."""
    if _State.settings is None:
        try:
            _State.settings = load_settings(_State.config)
        except SettingsError as exc:
            fail(str(exc), 2)
    return _State.settings  # type: ignore[return-value]


@app.callback()
def main(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="TOML settings file (else $LAKEHOUSE_CONFIG); env vars override it."
    ),
) -> None:
    _State.config = config
    _State.settings = None
    settings()  # validate at startup: a bad value fails before any work


@config_app.command("show")
def config_show(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Print every setting as its environment variable; secrets are masked."""
    values = settings().redacted()
    if as_json:
        out.print_json(json.dumps(values))
        return
    for key, value in values.items():
        out.print(f"{key}={value}", markup=False, highlight=False)


def _stack():
    from infra.stack import Stack

    s = settings()
    if s.profile != "stack":
        fail("LAKEHOUSE_PROFILE: the stack commands need profile 'stack' (try --config infra/stack.toml)", 2)
    return Stack(s)


@stack_app.command("up")
def stack_up(services: list[str] = typer.Argument(None, help="only these services")) -> None:
    """Start every service (idempotent), wait until each is healthy, create topics, buckets and namespaces."""
    from infra.stack import StackError

    stack = _stack()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as progress:
        rows: dict[str, int] = {}

        def report(name: str, message: str) -> None:
            if name not in rows:
                rows[name] = progress.add_task(name)
            progress.update(rows[name], description=f"{name:<13} {message}")
            if message.startswith("healthy"):
                progress.update(rows[name], total=1, completed=1)

        try:
            timings = stack.up(services or None, report=report)
        except SettingsError as exc:
            fail(str(exc), 2)
        except StackError as exc:
            fail(str(exc), 1)
    for status in stack.status(services or None):
        out.print(status.line(), markup=False, highlight=False)
    err.print(f"up in {sum(timings.values()):.1f}s", highlight=False)


@stack_app.command("provision")
def stack_provision(services: list[str] = typer.Argument(None, help="only these services")) -> None:
    """Create the topic, buckets and namespaces on running services, e.g. from docker compose."""
    from infra.stack import StackError

    try:
        created = _stack().provision(services or None)
    except SettingsError as exc:
        fail(str(exc), 2)
    except StackError as exc:
        fail(str(exc), 1)
    out.print("created: " + (", ".join(created) if created else "nothing, all present"), highlight=False)


@stack_app.command("down")
def stack_down(services: list[str] = typer.Argument(None, help="only these services")) -> None:
    """Stop what `up` started (by pid and session); data stays in the state folder."""
    stack = _stack()
    try:
        stopped = stack.down(services or None, report=lambda n, m: err.print(f"{n}: {m}", highlight=False))
    except SettingsError as exc:
        fail(str(exc), 2)
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"), highlight=False)


@stack_app.command("status")
def stack_status(services: list[str] = typer.Argument(None, help="only these services")) -> None:
    """One line per service: name, address, pid, healthy or not, and what is wrong. Exit 1 if any is not."""
    stack = _stack()
    try:
        rows = stack.status(services or None)
    except SettingsError as exc:
        fail(str(exc), 2)
    for row in rows:
        out.print(row.line(), markup=False, highlight=False)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


def run() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
