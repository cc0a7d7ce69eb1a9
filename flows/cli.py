"""The ``lakehouse`` command. It reads the settings once and dispatches to flows and the stack."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tasks.settings import Settings, SettingsError, load_settings

STACK_CONFIG = Path(__file__).resolve().parents[1] / "infra" / "stack.toml"


class _Commands(typer.core.TyperGroup):
    """The root command. Wrong input to any command ends as one line and exit code 2: a usage error
    (unknown option, a value of the wrong type, a missing argument) or a ``QueryError`` from
    ``tasks.serving``. Anything else is a bug and keeps its traceback."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        with _user_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context):
        with _user_errors():  # every subcommand parses its arguments and runs in here
            return super().invoke(ctx)


@contextmanager
def _user_errors():
    """The one place that turns the user's wrong input into ``fail(..., 2)``."""
    from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click: not `click`'s

    try:
        yield
    except (typer.Exit, typer.Abort, NoArgsIsHelpError):
        raise  # already said, or asked for help
    except UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(exc.format_message() + where, 2)
    except Exception as exc:
        serving = sys.modules.get("tasks.serving")  # QueryError's home; not imported, then not raised
        if serving is not None and isinstance(exc, serving.QueryError):
            fail(str(exc), 2)
        raise


app = typer.Typer(cls=_Commands, no_args_is_help=True, add_completion=False,
                  help="The Roman Numeral Service lakehouse.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack: Kafka, SeaweedFS S3, Iceberg REST, Prefect, Ray.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the settings.")
app.add_typer(stack_app, name="stack")
app.add_typer(config_app, name="config")
run_app = typer.Typer(no_args_is_help=True, help="Run one flow in-process (Prefect logs it to its server).")
app.add_typer(run_app, name="run")
ingest_app = typer.Typer(no_args_is_help=True, help="Operator actions on the Kafka → bronze ingest.")
app.add_typer(ingest_app, name="ingest")

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
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="TOML settings file (else $LAKEHOUSE_CONFIG); env vars override it."
    ),
) -> None:
    import logging

    _State.config = config
    if ctx.invoked_subcommand in ("stack", "demo"):
        # the local stack's secrets exist before the settings that read them (tasks/stack_secrets.py)
        from tasks.settings import state_dir_of
        from tasks.stack_secrets import generate

        generate(state_dir_of(config), list(Settings.model_fields))
    _State.settings = None
    logging.getLogger("daft.io").setLevel(logging.ERROR)  # "full table scan" notes are not for users
    import os

    from infra.services import ray_env

    _client_env(settings())  # validates at startup: a bad value fails first


def _client_env(s: Settings) -> None:
    """Ray and Prefect read their settings once, at import, and Daft may import Ray before any
    flow runs: the same Ray mode, token and loopback rule as the head (or the in-process
    cluster), and Prefect's basic-auth credential."""
    import os

    from infra.services import prefect_env, ray_env

    os.environ.update(ray_env(s))
    os.environ.update({k: v for k, v in prefect_env(s).items() if k == "PREFECT_API_AUTH_STRING"})


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

    return Stack(settings())


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
        out.print(status.line(), markup=False, highlight=False, soft_wrap=True)
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
    """One line per service: name, address, pid, healthy or not, what is wrong, and every address its
    processes listen on (any not on loopback makes it unhealthy). Exit 1 if any is not healthy."""
    stack = _stack()
    try:
        rows = stack.status(services or None)
    except SettingsError as exc:
        fail(str(exc), 2)
    for row in rows:
        out.print(row.line(), markup=False, highlight=False, soft_wrap=True)  # one line per service, however long
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@app.command("produce")
def produce(
    events: int = typer.Option(10_000, min=1, help="Kafka records to send (duplicates and malformed included)"),
    rate: float = typer.Option(0.0, min=0, help="records per second; 0 = as fast as possible"),
    days: int = typer.Option(7, min=1, help="span of occurred_at, ending now"),
    seed: int = typer.Option(42, help="the same seed gives the same events"),
    duplicate_rate: float = typer.Option(0.01, help="share re-sent later, maybe on another partition"),
    late_rate: float = typer.Option(0.01, help="share whose occurred_at is days before the send"),
    malformed_rate: float = typer.Option(0.001, help="share of broken records (bad JSON, wrong types, empty, multi-MB)"),
    wrong_conversion_rate: float = typer.Option(0.0005, help="share of successful calls with a wrong answer"),
    v2_share: float = typer.Option(0.3, help="share of schema_version 2 events"),
    users: int = typer.Option(5000, min=1, help="size of the user population"),
    trend: float = typer.Option(0.0, help="traffic growth per week (0.05 = +5%/week)"),
    seasonal: bool = typer.Option(False, help="a weekday profile and hour-to-hour noise on the daily curve"),
    incident: list[str] = typer.Option([], help="inject KIND@YYYY-MM-DDTHH[+HOURS][:DIRECTION][*MAGNITUDE]; "
                                       "KIND error_burst|latency_spike|traffic_drop, DIRECTION to_roman|from_roman|both"),
    random_incidents: int = typer.Option(0, min=0, help="inject this many incidents at seeded random hours"),
    truth: Optional[Path] = typer.Option(None, help="write what was injected (JSON) to this file"),
) -> None:
    """Emulate the Roman Numeral Service: send conversion events to the Kafka topic."""
    from datetime import datetime, timezone

    from tasks.simulator import ProduceError, TrafficProfile, choose_incidents, write_truth
    from tasks.simulator import produce as send

    s = settings()
    try:
        end = datetime.now(timezone.utc)
        profile = TrafficProfile(
            events=events, rate=rate, days=days, seed=seed, duplicate_rate=duplicate_rate, late_rate=late_rate,
            malformed_rate=malformed_rate, wrong_conversion_rate=wrong_conversion_rate, v2_share=v2_share,
            users=users, end=end, trend=trend, seasonal=seasonal,
            incidents=choose_incidents(incident, random_incidents, end, days, seed),
        )
    except ValueError as exc:
        fail(str(exc), 2)
    if truth is not None:
        write_truth(profile, truth)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as progress:
        row = progress.add_task(f"producing to {s.kafka_topic}", total=events)
        try:
            report = send(s, profile, progress=lambda n: progress.update(row, completed=n))
        except ProduceError as exc:
            fail(str(exc), 1)
    out.print(
        f"sent {report.events} records ({report.bytes / 1e6:.1f} MB) to {report.topic} in {report.seconds:.1f}s: "
        f"{report.rate:,.0f} records/s; kinds {report.per_kind}",
        highlight=False,
    )


def _fail_if_store_full(exc: BaseException) -> None:
    """A full disk or quota is the operator's to fix: one line naming where, exit 1, also when
    a Ray actor (a bronze writer) hit it. Anything else keeps its traceback."""
    import errno

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            plain = OSError(cause.errno, cause.strerror, cause.filename) if cause.strerror else cause
            fail(f"{plain}; free space and rerun: nothing was committed by the failed step", 1)
        nested = getattr(cause, "cause", None)  # a Ray actor's error carries the original
        cause = nested if isinstance(nested, BaseException) and nested is not cause else cause.__cause__
    raise exc


@run_app.command("ingest")
def run_ingest(
    max_records: Optional[int] = typer.Option(None, min=1, help="records per batch (default LAKEHOUSE_INGEST_MAX_RECORDS)"),
    max_bytes: Optional[int] = typer.Option(None, min=1024, help="bytes per batch (default LAKEHOUSE_INGEST_MAX_BYTES)"),
    max_seconds: Optional[float] = typer.Option(None, min=0.1, help="seconds per batch (default LAKEHOUSE_INGEST_MAX_SECONDS)"),
    until_caught_up: bool = typer.Option(False, "--until-caught-up", help="repeat batches until no lag is left"),
    crash_at: Optional[str] = typer.Option(None, hidden=True, help="test only: SIGKILL at this point"),
) -> None:
    """One Kafka → bronze micro-batch (or several, with --until-caught-up), exactly once."""
    s = settings()
    _prefect_client_env(s)
    from flows.ingest import ingest_flow
    from tasks.commits import OffsetsMovedError
    from tasks.offsets import OffsetsOutOfRangeError

    try:
        with flow_prints_to_stderr():
            report = ingest_flow(max_records=max_records, max_bytes=max_bytes, max_seconds=max_seconds,
                                 max_batches=1_000_000 if until_caught_up else 1, settings=s, crash_at=crash_at)
    except OffsetsMovedError as exc:
        fail(f"another ingest run committed first; rerun to continue ({exc})", 3)
    except OffsetsOutOfRangeError as exc:
        fail(f"ingest stopped, nothing committed: {exc}", 4)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a full store
        _fail_if_store_full(exc)
    out.print_json(json.dumps(report))


@ingest_app.command("reset")
def ingest_reset(
    to: str = typer.Option(..., "--to", help="earliest (low watermark), latest (high watermark) or an offset"),
    partition: Optional[list[int]] = typer.Option(None, "--partition", help="a partition to move (repeat); default every partition"),
    reason: str = typer.Option(..., "--reason", help="why: recorded in bronze's snapshot summary for auditors"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show the moves, commit nothing"),
) -> None:
    """Move bronze's Kafka offsets, audited: one bronze commit without rows records each partition's
    old and new offset, the records skipped, the reason and who did it (`lakehouse history` shows it)."""
    s = settings()
    _prefect_client_env(s)
    from flows.ingest import reset_offsets

    try:
        result = reset_offsets(s, to, partition or None, reason, dry_run=dry_run)
    except ValueError as exc:
        fail(str(exc), 2)
    out.print_json(json.dumps(result))


@run_app.command("silver")
def run_silver(crash_at: Optional[str] = typer.Option(None, hidden=True, help="test only: SIGKILL at this point")) -> None:
    """Promote every bronze snapshot not yet in silver: validate, quarantine, dedup, SCD2 users."""
    s = settings()
    _prefect_client_env(s)
    from flows.silver import silver_flow
    from tasks.commits import StaleCommitError

    try:
        with flow_prints_to_stderr():
            report = silver_flow(settings=s, crash_at=crash_at)
    except StaleCommitError as exc:
        fail(f"another silver run committed first; rerun to continue ({exc})", 3)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a full store
        _fail_if_store_full(exc)
    out.print_json(json.dumps(report))


@run_app.command("gold")
def run_gold(
    full: bool = typer.Option(False, "--full", help="rebuild every day and user, not only what silver touched"),
    crash_at: Optional[str] = typer.Option(None, hidden=True, help="test only: SIGKILL at this point"),
) -> None:
    """Rebuild gold for the days and users that silver commits touched since the last build."""
    s = settings()
    _prefect_client_env(s)
    from flows.gold import gold_flow
    from tasks.commits import StaleCommitError

    try:
        with flow_prints_to_stderr():
            report = gold_flow(full=full, settings=s, crash_at=crash_at)
    except StaleCommitError as exc:
        fail(f"another gold build committed first; rerun to continue ({exc})", 3)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a full store
        _fail_if_store_full(exc)
    out.print_json(json.dumps(report))


@app.command("serve-continuous")
def serve_continuous(
    seconds: Optional[float] = typer.Option(None, min=1, help="stop after this long (default: until SIGUSR1, SIGTERM or Ctrl-C)"),
) -> None:
    """Continuous mode: bronze commits every LAKEHOUSE_CONTINUOUS_COMMIT_SECONDS and warm silver and
    gold promotions in this process, as Prefect flow runs (the stack starts it when
    LAKEHOUSE_PIPELINE_MODE=continuous)."""
    import os
    import signal

    s = settings()
    _prefect_client_env(s)
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")  # the zombie automation watches them
    from flows.continuous import continuous_flow, request_stop

    # SIGUSR1: finish the batch, promote once more, end Completed. SIGTERM stays Prefect's: the run
    # ends Crashed (or Cancelled, when cancelled from the UI), and the next run resumes exactly.
    signal.signal(signal.SIGUSR1, lambda *_: request_stop())
    try:
        with flow_prints_to_stderr():
            report = continuous_flow(run_seconds=seconds, settings=s)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    out.print_json(json.dumps(report))


@app.command("deploy")
def deploy_cmd() -> None:
    """Create the work pool and per-table concurrency limits, and apply every deployment of prefect.yaml."""
    from deployments.deploy import DeployError, deploy

    s = settings()
    try:
        result = deploy(s)
    except DeployError as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"LAKEHOUSE_PREFECT_API_URL: cannot reach Prefect at {s.prefect_api_url} ({exc}); is the stack up?", 1)
    out.print(f"work pool 'lakehouse': {'created' if result.pool_created else 'already there'}", highlight=False)
    out.print(f"concurrency limits created: {', '.join(result.limits_created) or 'none, all there'}", highlight=False)
    out.print("deployments: " + ", ".join(result.deployments), highlight=False)
    if result.paused:
        out.print("continuous mode: paused " + ", ".join(result.paused)
                  + "; `lakehouse stack up` starts `lakehouse serve-continuous`", highlight=False)
    out.print("A worker runs with the stack (`lakehouse stack status`). Another one: "
              "prefect worker start --pool lakehouse --type process", highlight=False)


@app.command("demo")
def demo(
    profile: Optional[str] = typer.Option(None, "--profile", help="embedded (default) or stack (S3 + REST catalog + Ray head)"),
    events: int = typer.Option(20_000, min=100, help="events to produce"),
    days: int = typer.Option(3, min=1, help="days of traffic"),
) -> None:
    """The whole platform in one command: stack, deployments, traffic, ingest → silver → gold, metrics."""
    from rich.table import Table

    if profile not in (None, "embedded", "stack"):
        fail(f"--profile: {profile!r} is not allowed; expected 'embedded' or 'stack'", 2)
    s = settings()
    if profile == "stack" and s.profile != "stack":
        try:
            s = load_settings(_State.config or STACK_CONFIG, profile="stack")
        except SettingsError as exc:
            fail(str(exc), 2)
    elif profile == "embedded" and s.profile != "embedded":
        fail("--profile embedded: the settings say profile 'stack'; unset LAKEHOUSE_CONFIG/LAKEHOUSE_PROFILE", 2)
    _prefect_client_env(s)
    from deployments.demo import DemoError, run_demo
    from infra.stack import StackError

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as progress:
        row = progress.add_task("demo")
        try:
            result = run_demo(s, events, days, step=lambda msg: progress.update(row, description=msg))
        except SettingsError as exc:
            fail(str(exc), 2)
        except (StackError, DemoError) as exc:
            fail(str(exc), 1)
    table = Table(title=f"gold.daily_conversion_metrics ({s.profile} profile)")
    for name in ("event_date", "direction", "requests", "success_rate", "unique_users", "p95_latency_ms"):
        table.add_column(name)
    for r in result.gold_rows[-12:]:
        table.add_row(str(r["event_date"]), r["direction"], str(r["requests"]), f"{r['success_rate']:.1%}",
                      str(r["unique_users"]), f"{r['p95_latency_ms']:.1f}")
    out.print(table)
    from tasks.verify import render_table

    print(render_table(result.verify))
    ui = s.prefect_api_url.removesuffix("/api")
    out.print(f"produced {result.produced} events; runs {result.runs}; seconds {result.seconds}", highlight=False)
    out.print(f"Prefect UI: {ui}   ·   rebuild gold: lakehouse run gold --full   ·   stop everything: lakehouse stack down",
              highlight=False)
    if not result.verify.ok:
        fail(f"verify: {result.verify.first_failure.name}: {result.verify.first_failure.detail}", 1)


def _as_json(value):
    """How a value JSON has no type for is written: binary as hex, anything else as its text."""
    return value.hex() if isinstance(value, bytes) else str(value)


def _as_text(value) -> str | None:
    """A value in one csv or table cell, as the json format writes it: binary as hex, lists and
    structs (bronze's headers) as their JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_as_json)
    return _as_json(value)


def _emit(rows, fmt: str) -> None:
    """Print an Arrow table or a list of dicts as a table, JSON lines or CSV."""
    import pyarrow as pa

    if isinstance(rows, list):
        rows = pa.Table.from_pylist(rows) if rows else pa.table({})
    if fmt == "json":
        for row in rows.to_pylist():
            typer.echo(json.dumps(row, default=_as_json))
    elif fmt == "csv":
        import io

        import pyarrow.csv as pacsv

        def writable(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
            kind = column.type
            if pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind) \
                    or pa.types.is_fixed_size_binary(kind) or pa.types.is_binary_view(kind):
                return pa.array([_as_text(v) for v in column.to_pylist()], pa.string())
            return column

        buffer = io.BytesIO()
        pacsv.write_csv(pa.table([writable(c) for c in rows.columns], names=rows.column_names), buffer)
        typer.echo(buffer.getvalue().decode(), nl=False)
    else:
        from rich.table import Table

        view = Table(show_lines=False)
        for name in rows.column_names:
            view.add_column(name)
        for row in rows.to_pylist()[:1000]:
            view.add_row(*["" if v is None else _as_text(v)[:80] for v in row.values()])
        out.print(view)
        if rows.num_rows > 1000:
            err.print(f"(first 1000 of {rows.num_rows} rows; use --format csv or json for all)")


def _formats(value: str) -> str:
    if value not in ("table", "json", "csv"):
        fail(f"--format: {value!r} is not allowed; expected table, json or csv", 2)
    return value


@app.command("sql")
def sql(
    query: str = typer.Argument(..., help='e.g. "SELECT event_date, sum(requests) FROM gold.daily_conversion_metrics GROUP BY 1"'),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="ISO timestamp: every table as it was then"),
    snapshot: list[str] = typer.Option(None, "--snapshot", help="ID for every table, or TABLE=ID for one (repeatable)"),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
) -> None:
    """Daft SQL over every bronze, silver and gold table, with time travel."""
    from datetime import datetime, timezone

    from tasks.serving import existing_tables, run_sql

    _formats(fmt)
    s = settings()
    moment = None
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            fail(f"--as-of: {as_of!r} is not an ISO timestamp", 2)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    pinned: dict[str, int] = {}
    for item in snapshot or []:
        name, _, value = item.rpartition("=")
        if not value.isdigit():
            fail(f"--snapshot: {item!r} must be ID or TABLE=ID", 2)
        if name:
            pinned[name] = int(value)
        else:
            from tasks.catalog import open_catalog

            for table_name, table in existing_tables(open_catalog(s, "serving")).items():
                if table.metadata.snapshot_by_id(int(value)) is not None:
                    pinned[table_name] = int(value)
            if not pinned:
                fail(f"--snapshot: no table has snapshot {value}", 2)
    _emit(run_sql(s, query, as_of=moment, snapshots=pinned), fmt)


@app.command("tables")
def tables_cmd(fmt: str = typer.Option("table", "--format", help="table, json or csv"),
               wide: bool = typer.Option(False, "--wide", help="every column, however wide")) -> None:
    """Every table with its rows, files, size, current snapshot and last commit time."""
    from dataclasses import asdict

    from flows.commands.terminal import print_tables
    from tasks.serving import describe_tables

    _formats(fmt)
    rows = [asdict(t) for t in describe_tables(settings())]
    if fmt == "table":
        print_tables(out, rows, wide)
    else:
        _emit(rows, fmt)


@app.command("history")
def history_cmd(table: str, fmt: str = typer.Option("table", "--format", help="table, json or csv"),
                wide: bool = typer.Option(False, "--wide", help="add the parent and the summary we keep")) -> None:
    """A table's snapshots: operation, time, and the summary we keep (offsets, upstream snapshot, counts)."""
    from flows.commands.terminal import print_history
    from tasks.serving import history

    _formats(fmt)
    rows = history(settings(), table)
    if fmt == "table":
        print_history(out, rows, wide)
    else:
        _emit(rows, fmt)


@app.command("verify")
def verify_cmd(
    layer: Optional[list[str]] = typer.Option(None, "--layer", help="bronze, silver or gold (repeat); default all"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    strict: bool = typer.Option(False, "--strict", help="warnings fail too (e.g. offset gaps no reset explains)"),
    kafka: bool = typer.Option(False, "--kafka/--no-kafka",
                               help="confirm bronze's offset gaps against the broker (settings' kafka_bootstrap): "
                                    "markers and aborted transactions pass, a committed record inside a gap fails"),
) -> None:
    """Reconcile the lakehouse from its tables alone: bronze offsets contiguous, every bronze record
    once in silver, SCD2 versions sound, gold equal to a recount of silver, upstream ids that exist.
    With --kafka, bronze's offset gaps are also read back from Kafka (read_committed).
    Exit 0 when every check holds, 1 naming the first discrepancy."""
    from tasks.catalog import open_catalog
    from tasks.settings import LAYERS
    from tasks.verify import KafkaGapProbe, render_table, verify

    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, got {fmt!r}", 2)
    s = settings()
    probe = KafkaGapProbe.from_settings(s) if kafka else None
    try:
        report = verify(open_catalog(s, "serving"), s, layers=tuple(layer) if layer else LAYERS, strict=strict, kafka=probe)
    except ValueError as exc:
        fail(str(exc), 2)
    if fmt == "json":
        out.print_json(json.dumps(report.as_dict(), default=str))
    else:
        print(render_table(report))
    if not report.ok:
        failure = report.first_failure
        fail(f"verify: {failure.name}: {failure.detail}", 1)


@app.command("diff")
def diff_cmd(
    table: str,
    from_snapshot: int = typer.Option(..., "--from", help="snapshot id (exclusive)"),
    to_snapshot: int = typer.Option(..., "--to", help="snapshot id (inclusive)"),
    fmt: str = typer.Option("table", "--format", help="table, json or csv"),
    wide: bool = typer.Option(False, "--wide", help="every column, however wide"),
) -> None:
    """The rows appended to a table between two snapshots."""
    from flows.commands.terminal import print_diff
    from tasks.serving import diff

    _formats(fmt)
    rows = diff(settings(), table, from_snapshot, to_snapshot)
    if fmt == "table":
        print_diff(out, table, rows, wide)
    else:
        _emit(rows, fmt)


@app.command("maintain")
def maintain(
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be compacted, expired and deleted"),
    crash_at: Optional[str] = typer.Option(None, hidden=True, help="test only: SIGKILL at this point"),
) -> None:
    """Compact small files, expire old snapshots and delete unreachable and orphan files, per table."""
    s = settings()
    _prefect_client_env(s)
    from flows.maintenance import maintenance_flow

    with flow_prints_to_stderr():
        report = maintenance_flow(dry_run=dry_run, settings=s, crash_at=crash_at)
    if dry_run:
        for table, parts in report["tables"].items():
            out.print(f"{table}:", highlight=False)
            out.print_json(json.dumps({
                "compaction": parts.get("compaction", {}).get("plan"),
                "snapshots_expired": parts.get("expiry", {}).get("snapshots_expired"),
                "files_to_delete": parts.get("expiry", {}).get("files"),
                "orphans": parts.get("orphans", {}).get("files"),
            }, default=str))
    out.print_json(json.dumps({"dry_run": dry_run, "totals": report["totals"]}, default=str))


@contextmanager
def flow_prints_to_stderr() -> Iterator[None]:
    """While a flow runs in this process, stdout is kept for the command's report: whatever the
    flow's libraries print meanwhile goes to stderr (Ray writes its raylet's warnings to a driver's
    stdout even with log_to_driver off, and `lakehouse run silver | jq` must still read JSON)."""
    with redirect_stdout(sys.stderr):
        yield


def _prefect_client_env(s: Settings) -> None:
    """Flows run in this process talk to the configured Prefect server (set before Prefect reads it)."""
    import os

    from infra.services import prefect_env

    os.environ.update({k: v for k, v in prefect_env(s).items() if k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")})


from flows.commands import notebook as _notebook, report as _report  # noqa: E402 - they use settings() and fail() above

app.command("report")(_report.report_cmd)
app.command("notebook")(_notebook.notebook_cmd)

from flows.commands.dq import dq_app  # noqa: E402
from flows.commands.replay import replay_cmd  # noqa: E402

app.add_typer(dq_app, name="dq")
app.command("replay")(replay_cmd)

from flows.commands.lineage import lineage_cmd  # noqa: E402

app.command("lineage")(lineage_cmd)


def run() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
