"""Bronze → silver promotion at scale, against single-node and pyiceberg peers measured in the same run.

    .venv/bin/python benchmarks/silver_promotion.py [--events 1000000] [--history 5000000]
        [--small-history 1000000] [--days 30] [--runners ray,native] [--upsert-rows 100000]
        [--workdir /tmp/bench-silver] [--rebuild] [--profile]

One simulator stream of history + events records (5% duplicates, 2% malformed, 1% late) is
generated once and cached in the workdir.

Never writes the tables of the lakehouse it is pointed at: every table is in a private lakehouse
(benchmarks/private_lake.file_lake: SQLite catalog and file warehouse under the workdir), and the
promotions' commit events and artifacts are renamed (private_lake.isolate_prefect) so that no
deployment of the lakehouse (gold listens to silver commits) is triggered.

Two PRIVATE lakehouses (SQLite catalog, file warehouse under the workdir; never the stack's REST
catalog) are built from it:

* ``big``: silver.fact_conversions holds the first ``--history`` records' facts (validated and
  deduplicated with the project's own silver transforms on Daft's native runner, then appended
  directly in 5 commits, as 5 earlier promotions would have), silver.dim_users their SCD2
  versions; bronze holds only the next ``--events`` records, landed as the ingest does (500k-record
  snapshots, one topic, 3 partitions, continuing offsets). Silver has no watermark, so the flow
  promotes exactly those bronze snapshots.
* ``small``: the same bronze, but silver holds only the last ``--small-history`` history records.

Each catalog is saved after setup and restored before every measured run, so every run promotes
the same increment into the same silver. Measured, each in its own subprocess while /proc is
sampled (the process tree, and the Ray workers of its Ray job):

1. ``silver_flow`` per runner against ``big`` and ``small``: on the stack's Ray head via
   ray_address=auto, where the Daft jobs run on the warm Daft host (``ray``: warm from an earlier
   run, the steady state; ``ray-cold``: retired first, so the run starts it, as the first run
   after a deploy or an idle spell does), or on Daft's native runner in the flow's process;
2. DuckDB doing the same validation (SQL over the JSON: required fields, types, enums, a lookup
   table of the 3999 numerals for wrong conversions, consistency, future events), the first-arrival
   dedup within the batch and the anti-join against silver's history, over the same Parquet files
   (bronze's data files and silver's files of the batch's days, from the Iceberg tables'
   plan_files), writing its facts and quarantine as Parquet; SCD2 users timed separately;
3. pyiceberg's ``Table.upsert`` merging ``--upsert-rows`` of the batch's first arrivals by event_id
   into a copy of ``big``'s silver.fact_conversions (register_table on the same metadata).

Writes benchmarks/results/silver_promotion.json. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from private_lake import file_lake, isolate_prefect  # noqa: E402
from sampling import PeriodicSampler, job_of, mb, process_tree, ray_workers, read_processes, read_status  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "silver_promotion.json"
TOPIC = "conversion-events"
PARTITIONS = 3
BATCH_RECORDS = 500_000  # the ingest's default micro-batch
HISTORY_COMMITS = 5
UPSTREAM_MINUTES_PER_MILLION = 17  # pyiceberg upsert, as reported upstream
TARGET_VS_DUCKDB = 2.0
TARGET_VS_UPSERT = 30.0


# ---- child processes ----------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    env["PREFECT_API_URL"] = "http://127.0.0.1:4200/api"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ---- the stream ------------------------------------------------------------------------------------

STREAM_COLUMNS = ("seq", "key", "value", "timestamp_ms", "partition", "offset", "kind")


def generate_stream(path: Path, total: int, days: int, seed: int) -> dict:
    """Simulator records with the partition and offset a 3-partition topic would give them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.simulator import TrafficProfile, generate

    schema = pa.schema([("seq", pa.int64()), ("key", pa.binary()), ("value", pa.binary()),
                        ("timestamp_ms", pa.int64()), ("partition", pa.int32()), ("offset", pa.int64()),
                        ("kind", pa.string())])
    profile = TrafficProfile(events=total, days=days, seed=seed, duplicate_rate=0.05, late_rate=0.01,
                             malformed_rate=0.02)
    began = time.monotonic()
    tmp = path.with_suffix(".partial")
    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
    offsets = [0] * PARTITIONS
    cols: dict[str, list] = {c: [] for c in STREAM_COLUMNS}
    rr = 0
    for seq, r in enumerate(generate(profile)):
        if r.partition is not None:
            p = r.partition % PARTITIONS
        elif r.key is not None:
            p = zlib.crc32(r.key) % PARTITIONS
        else:
            p, rr = rr, (rr + 1) % PARTITIONS
        cols["seq"].append(seq)
        cols["key"].append(r.key)
        cols["value"].append(r.value)
        cols["timestamp_ms"].append(r.timestamp_ms)
        cols["partition"].append(p)
        cols["offset"].append(offsets[p])
        cols["kind"].append(r.kind)
        offsets[p] += 1
        if len(cols["seq"]) == 250_000:
            writer.write_table(pa.table(cols, schema=schema))
            cols = {c: [] for c in STREAM_COLUMNS}
    if cols["seq"]:
        writer.write_table(pa.table(cols, schema=schema))
    writer.close()
    tmp.rename(path)
    return {"records": total, "seconds": round(time.monotonic() - began, 1)}


def read_stream(path: Path, start: int, stop: int):
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    data = ds.dataset(path)
    return data.to_table(filter=(pc.field("seq") >= start) & (pc.field("seq") < stop))


# ---- building a private lakehouse --------------------------------------------------------------------

def history_silver(records):
    """Facts and SCD2 user versions of history records, by the project's own silver transforms."""
    import daft
    import pyarrow as pa
    import pyarrow.compute as pc

    from tasks.transforms import silver

    n = records.num_rows
    bronze_like = pa.table({
        "topic": pa.array([TOPIC] * n, pa.string()),
        "partition": records.column("partition"),
        "offset": records.column("offset"),
        "kafka_timestamp": pc.multiply(records.column("timestamp_ms"), 1000).cast(pa.timestamp("us", "UTC")),
        "value": records.column("value"),
        "bronze_snapshot_id": pa.nulls(n, pa.int64()),
    })
    checked = silver.validate(daft.from_arrow(bronze_like), 1024 * 1024).collect()
    batch = silver.first_arrivals(silver.valid(checked)).collect()
    facts = silver.facts(batch).to_arrow().sort_by([("kafka_timestamp", "ascending")])
    users = silver.user_versions(daft.from_arrow(facts)).to_arrow()
    return facts, users


def land_bronze(settings, records) -> list[int]:
    """Append records to bronze exactly as the ingest would: 500k-record snapshots with offsets."""
    import uuid

    import pyarrow as pa

    from tasks.catalog import open_catalog
    from tasks.commits import append_with_offsets, latest_offsets
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, ensure_table
    from tasks.transforms.bronze import RecordColumns, records_to_arrow

    table = ensure_table(open_catalog(settings, "ingest"), settings, BRONZE_CONVERSION_EVENTS_RAW)
    snapshots = []
    for start in range(0, records.num_rows, BATCH_RECORDS):
        chunk = records.slice(start, BATCH_RECORDS)
        expected = latest_offsets(table)
        following = {TOPIC: dict(expected.get(TOPIC, {}))}
        run_id = "bench-" + uuid.uuid4().hex
        now = datetime.now(timezone.utc)
        parts = []
        for p in range(PARTITIONS):
            rows = chunk.filter(pa.compute.equal(chunk.column("partition"), p))
            if not rows.num_rows:
                continue
            offsets = rows.column("offset").to_pylist()
            columns = RecordColumns(offsets=offsets, timestamps_ms=rows.column("timestamp_ms").to_pylist(),
                                    keys=rows.column("key").to_pylist(), values=rows.column("value").to_pylist(),
                                    headers=[None] * rows.num_rows)
            parts.append(records_to_arrow(TOPIC, p, columns, now, run_id))
            following[TOPIC][p] = offsets[-1] + 1
        snapshots.append(append_with_offsets(table, pa.concat_tables(parts), expected, following, run_id,
                                             {"records": chunk.num_rows}))
        table = table.refresh()
    return snapshots


def build_lakehouse(lake: Path, history, new) -> dict:
    """A private lakehouse with silver holding ``history`` and bronze holding ``new``."""
    from tasks.catalog import ensure_namespaces, open_catalog
    from tasks.commits import conform
    from tasks.tables import SILVER_CONVERSION_EVENTS_REJECTED, SILVER_DIM_USERS, SILVER_FACT_CONVERSIONS, \
        V2_FACT_COLUMNS, ensure_table

    if lake.exists():
        shutil.rmtree(lake)
    settings = file_lake(lake)
    catalog = open_catalog(settings, "silver")
    ensure_namespaces(catalog, settings)
    began = time.monotonic()
    facts, users = history_silver(history)
    derived = time.monotonic() - began
    table = ensure_table(catalog, settings, SILVER_FACT_CONVERSIONS)
    with table.update_schema() as update:
        for name, kind in V2_FACT_COLUMNS:
            update.add_column(name, kind, doc="schema_version 2")
    step = -(-facts.num_rows // HISTORY_COMMITS)
    for start in range(0, facts.num_rows, step):
        table = table.refresh()
        table.append(conform(facts.slice(start, step), table))
    dim = ensure_table(catalog, settings, SILVER_DIM_USERS)
    dim.append(conform(users, dim))
    ensure_table(catalog, settings, SILVER_CONVERSION_EVENTS_REJECTED)
    written = time.monotonic() - began - derived
    snapshots = land_bronze(settings, new)
    shutil.copy(lake / "catalog.db", lake / "catalog.pristine.db")
    return {"history_records": history.num_rows, "silver_facts": facts.num_rows, "dim_users_rows": users.num_rows,
            "silver_fact_files": len(list(table.refresh().scan().plan_files())),
            "bronze_records": new.num_rows, "bronze_snapshots": len(snapshots),
            "seconds": {"derive_history_silver": round(derived, 1), "write_silver": round(written, 1),
                        "land_bronze": round(time.monotonic() - began - derived - written, 1)}}


def reset(lake: Path) -> None:
    """Back to the state right after setup (files the last run wrote stay as unreferenced orphans)."""
    shutil.copy(lake / "catalog.pristine.db", lake / "catalog.db")


# ---- sampling /proc -------------------------------------------------------------------------------------

class Sampler(PeriodicSampler):
    """RSS of a process tree and of the Ray workers of each Ray job, every ``interval`` seconds."""

    def __init__(self, root: int, interval: float):
        super().__init__(interval)
        self.root = root
        self.samples: list[dict] = []
        self.hwm = 0
        self.jobs: dict[int, str | None] = {}

    def sample(self) -> None:
        procs = read_processes()
        rss = anon = shmem = 0
        for pid in process_tree(self.root, procs):
            if (st := read_status(pid)) is not None:
                rss, anon, shmem = rss + st.get("VmRSS", 0), anon + st.get("RssAnon", 0), shmem + st.get("RssShmem", 0)
                if pid == self.root:
                    self.hwm = max(self.hwm, st.get("VmHWM", 0))
        workers: dict[str, list[int]] = {}
        hosts: set[str] = set()
        for pid in ray_workers(procs):
            cmd = procs[pid][1]
            if pid not in self.jobs:
                self.jobs[pid] = job_of(pid)
            if self.jobs[pid] and (st := read_status(pid)) is not None:
                acc = workers.setdefault(self.jobs[pid], [0, 0, 0])
                acc[0] += st.get("VmRSS", 0)
                acc[1] += st.get("RssAnon", 0)
                acc[2] += 1
                if "DaftHost" in cmd:  # the warm Daft host and its Daft actors: another job
                    hosts.add(self.jobs[pid])
        self.samples.append({"t": time.time(), "rss": rss, "anon": anon, "shmem": shmem, "workers": workers,
                             "hosts": sorted(hosts)})

    def summary(self, job: str | None, timeline: list | None = None) -> dict:
        def workers(s):
            counted = ([job] if job else []) + [h for h in s.get("hosts", []) if h != job]
            parts = [s["workers"].get(j, [0, 0, 0]) for j in counted]
            return [sum(p[i] for p in parts) for i in range(3)]

        if not self.samples:
            return {}
        top = max(self.samples, key=lambda s: s["rss"])
        top_workers = max(self.samples, key=lambda s: workers(s)[0])
        top_total = max(self.samples, key=lambda s: s["rss"] + workers(s)[0])
        return {
            "process_peak_rss_mb": mb(top["rss"]),
            "process_anon_mb_at_peak": mb(top["anon"]),
            "process_shmem_mb_at_peak": mb(top["shmem"]),
            "process_vmhwm_mb": mb(self.hwm),
            "ray_job": job,
            "ray_workers_peak_rss_mb": mb(workers(top_workers)[0]),
            "ray_workers_anon_mb_at_peak": mb(workers(top_workers)[1]),
            "ray_workers_at_peak": workers(top_workers)[2],
            "peak_process_plus_workers_mb (same instant)": mb(top_total["rss"] + workers(top_total)[0]),
            "samples": len(self.samples),
            "process_peak_during": _during(top["t"], timeline),
            "workers_peak_during": _during(top_workers["t"], timeline) if job else None,
            "daft_host_jobs (counted with the workers)": sorted({h for s in self.samples for h in s.get("hosts", [])}),
        }


def _during(moment: float, timeline: list | None) -> str | None:
    """The innermost timed task running at ``moment`` (epoch seconds)."""
    if not timeline:
        return None
    running = [(end - start, name) for name, start, end in timeline if start <= moment <= end]
    return min(running)[1] if running else "outside the timed tasks"


def run_measured(mode: str, args: list[str], workdir: Path, interval: float, script: str = __file__) -> dict:
    """Run ``script`` in ``mode`` as a subprocess while sampling it; returns its JSON plus memory."""
    out = workdir / f"{mode}-{time.time_ns()}.json"
    log = out.with_suffix(".log")
    cmd = [sys.executable, str(Path(script).resolve()), mode, "--out", str(out), *args]
    load_before = round(os.getloadavg()[0], 2)  # the machine is shared: other work skews wall times
    began = time.monotonic()
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=logf, stderr=subprocess.STDOUT)
        with Sampler(proc.pid, interval) as sampler:
            _, status, usage = os.wait4(proc.pid, 0)  # rusage: the child and the descendants it reaped
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - began
    if rc != 0 or not out.exists():
        tail = log.read_text()[-3000:]
        print(f"  !! {mode} {args} failed (rc {rc}); log {log}:\n{tail}", flush=True)
        return {"failed": True, "rc": rc, "log": str(log)}
    result = json.loads(out.read_text())
    result["process_seconds"] = round(elapsed, 2)
    result["load_avg_1m"] = {"before": load_before, "after": round(os.getloadavg()[0], 2)}
    # CPU seconds of the process tree (not of Ray workers): steadier than wall time on a busy machine
    result["process_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    result["memory"] = sampler.summary(result.get("ray_job"), result.pop("timeline", None))
    result["log"] = str(log)
    return result


# ---- children -------------------------------------------------------------------------------------------

def child_promote(ns) -> None:
    """silver_flow on one runner, with its tasks timed."""
    began = time.monotonic()
    lake = Path(ns.lake)
    settings = file_lake(lake)
    isolate_prefect(settings)  # its silver commit events must not trigger the lakehouse's gold deployment
    if ns.runner == "native":
        import daft

        import tasks.compute as compute

        daft.set_runner_native()
        compute._configured = "native"  # silver_flow's use_ray() becomes a no-op
    elif ns.runner == "ray-cold":  # no warm Daft host: this run starts one (the first run after a deploy)
        from tasks.compute import use_ray
        from tasks.daft_host import NAME_PREFIX, code_version
        from tasks.warm_actors import retire_stale

        use_ray(settings)
        # only this private lakehouse's host (named by its catalog), never the stack's own
        retire_stale(f"{NAME_PREFIX}{code_version()}-{settings.catalog_tag}", keep=None, wait_seconds=60)
        time.sleep(2.0)  # let Ray reap the killed actors' processes before the clock starts
    import flows.silver as fs

    spans: dict[str, float] = {}

    timeline: list[tuple[str, float, float]] = []  # (task, epoch start, epoch end)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t, wall = time.monotonic(), time.time()
            try:
                return fn(*a, **kw)
            finally:
                spans[name] = round(spans.get(name, 0) + time.monotonic() - t, 3)
                timeline.append((name, wall, time.time()))

        if hasattr(fn, "submit"):  # a task the flow submits: timed from submit to its result
            class Timed:
                def __init__(self, future, t, wall):
                    self.future, self.t, self.wall = future, t, wall

                def result(self, *a, **kw):
                    try:
                        return self.future.result(*a, **kw)
                    finally:
                        spans[name] = round(spans.get(name, 0) + time.monotonic() - self.t, 3)
                        timeline.append((name, self.wall, time.time()))

            wrapper.submit = lambda *a, **kw: Timed(fn.submit(*a, **kw), time.monotonic(), time.time())
        return wrapper

    for name in ("plan_silver", "use_ray", "plan_while_ray_starts", "check_bronze", "commit_rejected", "commit_facts", "commit_users",
                 "emit_committed", "emit_table_committed", "publish_counts"):
        if hasattr(fs, name):  # the flow's task names, as far as this version of it has them
            setattr(fs, name, timed(name, getattr(fs, name)))
    if hasattr(fs, "table_lock"):  # time to acquire the per-table Prefect concurrency slot
        import contextlib

        lock = fs.table_lock

        @contextlib.contextmanager
        def timed_lock(*args):
            t = time.monotonic()
            with lock(*args):
                spans["table_lock_wait"] = round(spans.get("table_lock_wait", 0) + time.monotonic() - t, 3)
                yield

        fs.table_lock = timed_lock
    profiler = None
    if ns.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    imported = time.monotonic() - began
    t = time.monotonic()
    report = fs.silver_flow(settings=settings)
    flow_seconds = time.monotonic() - t
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(45)
        Path(ns.out).with_suffix(".prof.txt").write_text(buf.getvalue())
    job = None
    if ns.runner.startswith("ray"):
        import ray

        job = ray.get_runtime_context().get_job_id()
    Path(ns.out).write_text(json.dumps({"runner": ns.runner, "flow_seconds": round(flow_seconds, 2),
                                        "startup_seconds": round(imported, 2), "tasks": spans,
                                        "report": report, "ray_job": job, "timeline": timeline}, default=str))


DUCK_PATHS = ("event_id", "event_type", "schema_version", "occurred_at", "user_id", "user_plan", "user_country",
              "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status",
              "client", "region", "cache_hit")


def duckdb_sql(max_bytes: int) -> str:
    """Validation of every bronze row, as SQL over the raw JSON; one parse per row (json_extract of
    all paths at once), then type tests on the extracted values."""
    from tasks.transforms.contract import ERROR_CODES, PLANS, REQUIRED_V1, REQUIRED_V2

    i = {name: n + 1 for n, name in enumerate(DUCK_PATHS)}
    paths = ", ".join(f"'$.{p}'" for p in DUCK_PATHS)

    def f(name):
        return f"f[{i[name]}]"

    def s(name):  # typed string, NULL when absent, JSON null or another type
        return f"CASE WHEN json_type({f(name)}) = 'VARCHAR' THEN json_extract_string({f(name)}, '$') END"

    def present(name):
        return f"{f(name)} IS NOT NULL"

    def wrong(name, types, nullable):
        allowed = ", ".join(f"'{t}'" for t in types + (("NULL",) if nullable else ()))
        return f"({present(name)} AND json_type({f(name)}) NOT IN ({allowed}))"

    string_fields = [("event_id", False), ("event_type", False), ("user_id", True), ("user_plan", True),
                     ("user_country", True), ("direction", False), ("input", False), ("output", True),
                     ("error_code", True), ("endpoint", False), ("client", True), ("region", False)]
    bad_types = [wrong(n, ("VARCHAR",), nullable) for n, nullable in string_fields]
    bad_types += [wrong("success", ("BOOLEAN",), False), wrong("cache_hit", ("BOOLEAN",), False),
                  wrong("latency_ms", ("BIGINT", "UBIGINT", "DOUBLE"), False),
                  wrong("http_status", ("BIGINT", "UBIGINT"), False),
                  wrong("schema_version", ("BIGINT", "UBIGINT"), False),
                  "(ev_id IS NOT NULL AND NOT regexp_full_match(ev_id, '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                  "[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'))",
                  f"({present('occurred_at')} AND occurred_at IS NULL)"]
    missing_v1 = " OR ".join(f"{f(n)} IS NULL" for n in REQUIRED_V1)
    missing_v2 = " OR ".join(f"{f(n)} IS NULL" for n in REQUIRED_V2)
    plans = ", ".join(f"'{p}'" for p in PLANS)
    errors = ", ".join(f"'{e}'" for e in ERROR_CODES)
    return f"""
CREATE OR REPLACE TEMP TABLE parsed AS
WITH t AS (
  SELECT source_topic, source_partition, source_offset, kafka_timestamp, value,
         CASE WHEN value IS NOT NULL AND octet_length(value) BETWEEN 1 AND {max_bytes}
              THEN try(decode(value)) END AS txt
  FROM raw
)
SELECT * EXCLUDE (txt),
       txt IS NOT NULL AND json_valid(txt) AS is_json,
       CASE WHEN txt IS NOT NULL AND json_valid(txt) AND json_type(txt) = 'OBJECT'
            THEN json_extract(txt, [{paths}]) END AS f
FROM t;

CREATE OR REPLACE TEMP TABLE typed AS
WITH a AS (
  SELECT *,
    {s('event_id')} AS ev_id,
    {s('event_type')} AS event_type,
    CASE WHEN json_type({f('schema_version')}) IN ('BIGINT', 'UBIGINT')
         THEN TRY_CAST(json_extract_string({f('schema_version')}, '$') AS INTEGER) END AS sv,
    CASE WHEN json_type({f('occurred_at')}) = 'VARCHAR'
          AND regexp_full_match(json_extract_string({f('occurred_at')}, '$'),
              '\\d{{4}}-\\d\\d-\\d\\dT\\d\\d:\\d\\d(:\\d\\d(\\.\\d{{1,6}})?)?(Z|[+-]\\d\\d:?\\d\\d)')
         THEN TRY_CAST(json_extract_string({f('occurred_at')}, '$') AS TIMESTAMPTZ) END AS occurred_at,
    {s('user_id')} AS user_id, {s('user_plan')} AS user_plan, {s('user_country')} AS user_country,
    {s('direction')} AS dir_raw, {s('input')} AS input, {s('output')} AS output,
    CASE WHEN json_type({f('success')}) = 'BOOLEAN' THEN json_extract_string({f('success')}, '$')::BOOLEAN END AS success,
    {s('error_code')} AS error_code,
    CASE WHEN json_type({f('latency_ms')}) IN ('BIGINT', 'UBIGINT', 'DOUBLE')
         THEN TRY_CAST(json_extract_string({f('latency_ms')}, '$') AS DOUBLE) END AS latency_ms,
    {s('endpoint')} AS endpoint,
    CASE WHEN json_type({f('http_status')}) IN ('BIGINT', 'UBIGINT')
         THEN TRY_CAST(json_extract_string({f('http_status')}, '$') AS INTEGER) END AS http_status,
    {s('client')} AS client, {s('region')} AS region,
    CASE WHEN json_type({f('cache_hit')}) = 'BOOLEAN' THEN json_extract_string({f('cache_hit')}, '$')::BOOLEAN END AS cache_hit
  FROM parsed
), b AS (
  SELECT a.*, CASE WHEN dir_raw IN ('to_roman', 'from_roman') THEN dir_raw END AS direction,
         lk.expected, lk.numeral_value
  FROM a LEFT JOIN lookup lk ON lk.direction = a.dir_raw AND lk.input = a.input
)
SELECT b.*,
  list_filter([
    CASE WHEN value IS NOT NULL AND octet_length(value) > {max_bytes} THEN 'OVERSIZED' END,
    CASE WHEN value IS NULL OR octet_length(value) = 0
           OR (octet_length(value) <= {max_bytes} AND NOT is_json) THEN 'MALFORMED_JSON' END,
    CASE WHEN is_json AND f IS NULL THEN 'NOT_AN_OBJECT' END,
    CASE WHEN f IS NOT NULL AND ({missing_v1} OR (sv = 2 AND ({missing_v2}))) THEN 'MISSING_FIELD' END,
    CASE WHEN f IS NOT NULL AND ({' OR '.join(bad_types)}) THEN 'BAD_TYPE' END,
    CASE WHEN sv IS NOT NULL AND sv NOT IN (1, 2) THEN 'UNKNOWN_SCHEMA_VERSION' END,
    CASE WHEN (event_type IS NOT NULL AND event_type <> 'conversion')
           OR (user_plan IS NOT NULL AND user_plan NOT IN ({plans}))
           OR (user_country IS NOT NULL AND NOT regexp_full_match(user_country, '[A-Z]{{2}}'))
           OR (dir_raw IS NOT NULL AND direction IS NULL)
           OR (error_code IS NOT NULL AND error_code NOT IN ({errors}))
           OR (endpoint IS NOT NULL AND endpoint NOT IN ('/v1/to-roman', '/v1/from-roman')) THEN 'BAD_ENUM' END,
    CASE WHEN success AND direction IS NOT NULL AND input IS NOT NULL AND output IS DISTINCT FROM expected
         THEN 'WRONG_CONVERSION' END,
    CASE WHEN (endpoint IN ('/v1/to-roman', '/v1/from-roman') AND direction IS NOT NULL
               AND endpoint <> CASE direction WHEN 'to_roman' THEN '/v1/to-roman' ELSE '/v1/from-roman' END)
           OR (success AND (error_code IS NOT NULL OR http_status <> 200))
           OR (NOT success AND (error_code IS NULL OR http_status NOT IN (400, 422) OR output IS NOT NULL))
         THEN 'INCONSISTENT_ERROR' END,
    CASE WHEN latency_ms < 0 THEN 'NEGATIVE_LATENCY' END,
    CASE WHEN occurred_at - kafka_timestamp > INTERVAL 5 MINUTE THEN 'FUTURE_EVENT' END
  ], lambda x: x IS NOT NULL) AS reason_codes
FROM b;
"""


def child_duckdb(ns) -> None:
    """Validation + first-arrival dedup + anti-join against history in DuckDB, timed by phase."""
    import duckdb
    import pyarrow as pa
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    from tasks.catalog import open_catalog
    from tasks.roman import NUMERALS
    from tasks.scans import day_bounds
    from tasks.tables import BRONZE_CONVERSION_EVENTS_RAW, SILVER_FACT_CONVERSIONS

    lake, out_dir = Path(ns.lake), Path(ns.lake) / "duckdb-out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    settings = file_lake(lake)
    spans: dict[str, float] = {}
    began = time.monotonic()

    def mark(name, since):
        spans[name] = round(time.monotonic() - since, 3)
        return time.monotonic()

    t = time.monotonic()
    catalog = open_catalog(settings, "silver")
    bronze = catalog.load_table(BRONZE_CONVERSION_EVENTS_RAW.identifier)
    facts_table = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier)
    bronze_files = [task.file.file_path.removeprefix("file://") for task in bronze.scan().plan_files()]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    lookup = pa.table({
        "direction": ["to_roman"] * 3999 + ["from_roman"] * 3999,
        "input": [str(n) for n in range(1, 4000)] + list(NUMERALS[1:]),
        "expected": list(NUMERALS[1:]) + [str(n) for n in range(1, 4000)],
        "numeral_value": pa.array(list(range(1, 4000)) * 2, pa.int32()),
    })
    con.execute("CREATE TEMP TABLE lookup AS SELECT * FROM lookup")
    files_sql = "[" + ", ".join(f"'{p}'" for p in bronze_files) + "]"
    con.execute(f"CREATE TEMP VIEW raw AS SELECT topic AS source_topic, \"partition\" AS source_partition, "
                f"\"offset\" AS source_offset, kafka_timestamp, value FROM read_parquet({files_sql})")
    t = mark("plan_and_setup", t)
    con.execute(duckdb_sql(settings.silver_max_value_bytes))
    t = mark("read_parse_validate", t)
    con.execute("""
        CREATE TEMP TABLE batch AS
        SELECT ev_id AS event_id, event_type, sv AS schema_version, occurred_at,
               CAST(occurred_at AS DATE) AS event_date, user_id, user_plan, user_country, direction, input, output,
               success, error_code, latency_ms, endpoint, http_status, client, region, cache_hit, numeral_value,
               source_topic, source_partition, source_offset, kafka_timestamp
        FROM typed WHERE len(reason_codes) = 0
        QUALIFY row_number() OVER (PARTITION BY ev_id ORDER BY kafka_timestamp, source_topic, source_partition, source_offset) = 1
    """)
    t = mark("dedup_within_batch", t)
    days = [r[0] for r in con.execute("SELECT DISTINCT event_date FROM batch").fetchall()]
    bounds = day_bounds(days)
    history_files = [task.file.file_path.removeprefix("file://") for task in facts_table.scan(
        row_filter=And(GreaterThanOrEqual("occurred_at", bounds[0].isoformat()),
                       LessThan("occurred_at", bounds[1].isoformat()))).plan_files()]
    hist_sql = "[" + ", ".join(f"'{p}'" for p in history_files) + "]"
    con.execute(f"""
        CREATE TEMP TABLE hist AS
        SELECT event_id, kafka_timestamp, source_topic, source_partition, source_offset
        FROM read_parquet({hist_sql}, union_by_name = true)
        WHERE event_date IN (SELECT event_date FROM batch)
    """)
    hist_rows = con.execute("SELECT count(*) FROM hist").fetchone()[0]
    t = mark("read_history", t)
    con.execute("""
        CREATE TEMP TABLE inserts AS
        SELECT b.*, h.event_id IS NOT NULL AS replaces
        FROM batch b LEFT JOIN hist h ON b.event_id = h.event_id
        WHERE h.event_id IS NULL
           OR (b.kafka_timestamp, b.source_topic, b.source_partition, b.source_offset)
              < (h.kafka_timestamp, h.source_topic, h.source_partition, h.source_offset)
    """)
    t = mark("anti_join_history", t)
    con.execute(f"COPY (SELECT * EXCLUDE (replaces) FROM inserts) TO '{out_dir / 'facts.parquet'}' "
                "(FORMAT parquet, COMPRESSION zstd)")
    con.execute(f"""COPY (SELECT reason_codes, value, source_topic, source_partition, source_offset, kafka_timestamp
                          FROM typed WHERE len(reason_codes) > 0)
                    TO '{out_dir / 'rejected.parquet'}' (FORMAT parquet, COMPRESSION zstd)""")
    t = mark("write_parquet", t)
    core = time.monotonic() - began
    # SCD2 users from every fact of the touched users, versions by lag/lead (commit_users rebuilds
    # only the touched users the batch disrupts; here, as a reference, all of them).
    all_files = "[" + ", ".join(f"'{task.file.file_path.removeprefix('file://')}'"
                                for task in facts_table.scan().plan_files()) + "]"
    con.execute(f"""
        COPY (
          WITH touched AS (SELECT DISTINCT user_id FROM batch WHERE user_id IS NOT NULL),
          ev AS (
            SELECT user_id, occurred_at, event_id, user_plan, user_country
            FROM read_parquet({all_files}, union_by_name = true)
            WHERE user_id IN (SELECT user_id FROM touched)
              AND event_id NOT IN (SELECT event_id FROM inserts WHERE replaces)
            UNION ALL
            SELECT user_id, occurred_at, event_id, user_plan, user_country FROM inserts WHERE user_id IS NOT NULL
          ),
          flagged AS (
            SELECT *, row_number() OVER w = 1 AS first,
                   lag(user_plan) OVER w AS prev_plan, lag(user_country) OVER w AS prev_country
            FROM ev WINDOW w AS (PARTITION BY user_id ORDER BY occurred_at, event_id)
          ),
          starts AS (
            SELECT user_id, user_plan, user_country, occurred_at AS valid_from, event_id FROM flagged
            WHERE first OR user_plan IS DISTINCT FROM prev_plan OR user_country IS DISTINCT FROM prev_country
          )
          SELECT hash(user_id, valid_from, event_id) AS user_sk, user_id, user_plan, user_country, valid_from,
                 lead(valid_from) OVER (PARTITION BY user_id ORDER BY valid_from, event_id) AS valid_to,
                 valid_to IS NULL AS is_current
          FROM starts
        ) TO '{out_dir / 'dim_users.parquet'}' (FORMAT parquet, COMPRESSION zstd)
    """)
    t = mark("scd2_users", t)
    counts = con.execute("""
        SELECT (SELECT count(*) FROM typed), (SELECT count(*) FROM typed WHERE len(reason_codes) > 0),
               (SELECT count(*) FROM batch), (SELECT count(*) FROM inserts),
               (SELECT count(*) FROM inserts WHERE replaces)
    """).fetchone()
    reasons = dict(con.execute("SELECT code, count(*) FROM (SELECT unnest(reason_codes) AS code FROM typed) "
                               "GROUP BY code ORDER BY 2 DESC").fetchall())
    # Untimed: the batch's first arrivals, for the pyiceberg upsert peer.
    con.execute(f"COPY (SELECT * FROM batch ORDER BY kafka_timestamp, source_topic, source_partition, source_offset) "
                f"TO '{out_dir / 'batch.parquet'}' (FORMAT parquet)")
    Path(ns.out).write_text(json.dumps({
        "seconds_validate_dedup_write": round(core, 2),
        "seconds_incl_scd2_users": round(core + spans["scd2_users"], 2),
        "phases": spans, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
        "bronze_files": len(bronze_files), "history_files": len(history_files), "history_rows_read": hist_rows,
        "counts": {"bronze_records": counts[0], "rejected": counts[1], "first_arrivals": counts[2],
                   "facts_inserted": counts[3] - counts[4], "replaced_by_earlier_arrival": counts[4]},
        "reasons": reasons,
    }, default=str))


def child_upsert(ns) -> None:
    """pyiceberg Table.upsert of the batch's first ``rows`` first arrivals into a copy of silver facts."""
    import pyarrow.parquet as pq

    from tasks.catalog import open_catalog
    from tasks.commits import conform
    from tasks.tables import SILVER_FACT_CONVERSIONS

    lake = Path(ns.lake)
    settings = file_lake(lake)
    catalog = open_catalog(settings, "silver")
    source = catalog.load_table(SILVER_FACT_CONVERSIONS.identifier)
    copy = catalog.register_table("silver.fact_conversions_upsert_copy", source.metadata_location)
    rows = pq.read_table(lake / "duckdb-out" / "batch.parquet").slice(0, ns.rows)
    rows = conform(rows, copy)
    began = time.monotonic()
    result = copy.upsert(rows, join_cols=["event_id"])
    seconds = time.monotonic() - began
    Path(ns.out).write_text(json.dumps({"rows": rows.num_rows, "seconds": round(seconds, 2),
                                        "rows_updated": result.rows_updated, "rows_inserted": result.rows_inserted,
                                        "rows_per_s": round(rows.num_rows / seconds)}))


# ---- the benchmark -----------------------------------------------------------------------------------------

def flow_attempts(log: str) -> int:
    """Flow run attempts in a child's log: > 1 means Prefect retried the flow (its timings then add up)."""
    try:
        return Path(log).read_text().count("Beginning flow run")
    except OSError:
        return 0


def promotion_summary(run: dict, events: int) -> dict:
    if run.get("failed"):
        return run
    report = run["report"]
    return {
        "runner": run["runner"],
        "flow_seconds": run["flow_seconds"],
        "flow_attempts": flow_attempts(run["log"]),
        "flow_reported_seconds (last attempt)": report.get("seconds"),
        "process_seconds": run["process_seconds"],
        "process_cpu_seconds (excl. Ray workers)": run["process_cpu_seconds"],
        "records_per_s": round(events / run["flow_seconds"]),
        "tasks_seconds": run["tasks"],
        "report": {k: report[k] for k in ("bronze_records", "facts", "rejected", "duplicates_dropped",
                                         "replaced_by_earlier_arrival", "users_touched", "users_rebuilt", "reasons")
                   if k in report},
        "memory": run["memory"],
        "load_avg_1m": run.get("load_avg_1m"),
        "log": run["log"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="new bronze records to promote")
    parser.add_argument("--history", type=int, default=5_000_000, help="history records behind the big silver")
    parser.add_argument("--small-history", type=int, default=1_000_000, help="history records behind the small silver")
    parser.add_argument("--days", type=int, default=30, help="days the whole stream spans")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--runners", default="ray-cold,ray,native",
                        help="comma-separated: ray-cold (the warm Daft host retired first), ray (host warm), native")
    parser.add_argument("--small-runners", default=None, help="runners for the small silver (default: --runners)")
    parser.add_argument("--upsert-rows", type=int, default=100_000)
    parser.add_argument("--interval", type=float, default=0.2, help="/proc sampling period, seconds")
    parser.add_argument("--workdir", default="/tmp/bench-silver")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the lakehouses even if cached")
    parser.add_argument("--profile", action="store_true", help="cProfile the native-runner promotion's driver")
    parser.add_argument("--skip", default="", help="comma-separated: duckdb, upsert, small")
    parser.add_argument("--result", default=None, help=f"JSON to write (default {RESULT.relative_to(ROOT)})")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    total = args.history + args.events
    skip = set(filter(None, args.skip.split(",")))
    runners = [r for r in args.runners.split(",") if r]
    small_runners = [r for r in (args.small_runners or args.runners).split(",") if r]
    result: dict = {"benchmark": "silver_promotion", "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
                    "params": {"events": args.events, "history": args.history, "small_history": args.small_history,
                               "days": args.days, "seed": args.seed, "upsert_rows": args.upsert_rows,
                               "rates": {"duplicate": 0.05, "malformed": 0.02, "late": 0.01}},
                    "targets": {"promotion_vs_duckdb_max": TARGET_VS_DUCKDB,
                                "promotion_vs_upsert_throughput_min": TARGET_VS_UPSERT}}

    # -- setup (cached) --
    key = f"{args.history}-{args.events}-{args.small_history}-{args.days}-{args.seed}"
    stream = workdir / f"stream-{total}-{args.days}-{args.seed}.parquet"
    lakes = {"big": workdir / "lake-big", "small": workdir / "lake-small"}
    setup_file = workdir / f"setup-{key}.json"
    if args.rebuild or not setup_file.exists() or not all((p / "catalog.pristine.db").exists() for p in lakes.values()):
        import daft

        daft.set_runner_native()  # setup only; every measured run is its own process
        setup: dict = {}
        if not stream.exists():
            print(f"generating {total:,} simulator records over {args.days} days ...", flush=True)
            setup["generate"] = generate_stream(stream, total, args.days, args.seed)
        new = read_stream(stream, args.history, total)
        kinds = new.group_by("kind").aggregate([("seq", "count")]).to_pydict()
        setup["new_batch_kinds"] = dict(zip(kinds["kind"], kinds["seq_count"]))
        for name, start in (("big", 0), ("small", args.history - args.small_history)):
            if name == "small" and "small" in skip:
                continue
            print(f"building the {name} lakehouse: silver from records {start:,}..{args.history:,}, "
                  f"bronze {args.events:,} ...", flush=True)
            setup[name] = build_lakehouse(lakes[name], read_stream(stream, start, args.history), new)
            print(f"  {setup[name]}", flush=True)
        setup_file.write_text(json.dumps(setup))
    setup = json.loads(setup_file.read_text())
    result["setup"] = setup
    print(f"new batch by simulator kind: {setup['new_batch_kinds']}", flush=True)

    # -- measured runs; the catalog is restored before each --
    promotions: dict[str, dict] = {}
    for lake_name, names in (("big", runners), ("small", small_runners)):
        if lake_name == "small" and "small" in skip:
            continue
        for runner in names:
            reset(lakes[lake_name])
            print(f"promoting {args.events:,} records into the {lake_name} silver on the {runner} runner ...", flush=True)
            extra = ["--profile"] if args.profile and runner == "native" else []
            run = run_measured("_promote", ["--lake", str(lakes[lake_name]), "--runner", runner, *extra],
                               workdir, args.interval)
            promotions[f"{lake_name}/{runner}"] = summary = promotion_summary(run, args.events)
            if not run.get("failed"):
                if summary["flow_attempts"] > 1:
                    print(f"  !! the flow ran {summary['flow_attempts']} times (Prefect retry)", flush=True)
                m = summary["memory"]
                print(f"  flow {summary['flow_seconds']} s ({summary['records_per_s']:,} records/s), process "
                      f"{summary['process_seconds']} s wall, {run['process_cpu_seconds']} CPU-s (excl. Ray workers); "
                      f"tasks {summary['tasks_seconds']}", flush=True)
                print(f"  peak RSS: process {m['process_peak_rss_mb']} MB (anon {m['process_anon_mb_at_peak']}), "
                      f"Ray workers {m['ray_workers_peak_rss_mb']} MB (anon {m['ray_workers_anon_mb_at_peak']}), "
                      f"together {m['peak_process_plus_workers_mb (same instant)']} MB", flush=True)
                print(f"  report: {summary['report']}", flush=True)
    reset(lakes["big"])
    result["promotions"] = promotions

    duck = None
    if "duckdb" not in skip:
        print("DuckDB: the same validation, dedup and anti-join over the same Parquet files ...", flush=True)
        duck = run_measured("_duckdb", ["--lake", str(lakes["big"])], workdir, args.interval)
        result["duckdb"] = duck
        if not duck.get("failed"):
            print(f"  process {duck['process_seconds']} s wall, {duck['process_cpu_seconds']} CPU-s", flush=True)
            print(f"  {duck['seconds_validate_dedup_write']} s validate+dedup+write "
                  f"({duck['seconds_incl_scd2_users']} s incl. SCD2 users); phases {duck['phases']}", flush=True)
            print(f"  counts {duck['counts']}; peak RSS {duck['memory']['process_peak_rss_mb']} MB", flush=True)
    upsert = None
    if "upsert" not in skip and duck is not None and not duck.get("failed"):
        print(f"pyiceberg Table.upsert of {args.upsert_rows:,} rows into a copy of the big silver facts ...", flush=True)
        upsert = run_measured("_upsert", ["--lake", str(lakes["big"]), "--rows", str(args.upsert_rows)],
                              workdir, args.interval)
        reset(lakes["big"])
        result["pyiceberg_upsert"] = upsert
        if not upsert.get("failed"):
            print(f"  {upsert['seconds']} s ({upsert['rows_per_s']:,} rows/s; updated {upsert['rows_updated']}, "
                  f"inserted {upsert['rows_inserted']}); peak RSS {upsert['memory']['process_peak_rss_mb']} MB; "
                  f"upstream's ~{UPSTREAM_MINUTES_PER_MILLION} min per 1M keys would be "
                  f"{UPSTREAM_MINUTES_PER_MILLION * 60 * args.upsert_rows / 1e6:.0f} s", flush=True)

    # -- ratios --
    ratios: dict = {}
    for name, run in promotions.items():
        if run.get("failed") or not name.startswith("big/"):
            continue
        r: dict = {}
        if duck and not duck.get("failed"):
            r["vs_duckdb_validate_dedup"] = round(run["flow_seconds"] / duck["seconds_validate_dedup_write"], 2)
            r["vs_duckdb_incl_users"] = round(run["flow_seconds"] / duck["seconds_incl_scd2_users"], 2)
            no_users = run["flow_seconds"] - run["tasks_seconds"].get("commit_users", 0)
            r["without_commit_users_vs_duckdb_validate_dedup"] = round(no_users / duck["seconds_validate_dedup_write"], 2)
            if run["runner"] == "native":  # whole processes, imports included; Ray runs would omit worker CPU
                r["process_cpu_seconds_vs_duckdb_process"] = round(
                    run["process_cpu_seconds (excl. Ray workers)"] / duck["process_cpu_seconds"], 2)
        if upsert and not upsert.get("failed"):
            r["throughput_vs_pyiceberg_upsert"] = round(run["records_per_s"] / upsert["rows_per_s"], 1)
            r["throughput_vs_upstream_17min_per_1M"] = round(
                run["records_per_s"] / (1e6 / (UPSTREAM_MINUTES_PER_MILLION * 60)), 1)
        ratios[name] = r
    for runner in runners:
        big, small = promotions.get(f"big/{runner}"), promotions.get(f"small/{runner}")
        if big and small and not big.get("failed") and not small.get("failed"):
            ratios[f"memory_{runner}_big_vs_small_history"] = {
                "process_peak_mb": [big["memory"]["process_peak_rss_mb"], small["memory"]["process_peak_rss_mb"]],
                "process_plus_workers_mb": [big["memory"]["peak_process_plus_workers_mb (same instant)"],
                                            small["memory"]["peak_process_plus_workers_mb (same instant)"]],
                "flow_seconds": [big["flow_seconds"], small["flow_seconds"]],
            }
    ray_run, native_run = promotions.get("big/ray"), promotions.get("big/native")
    if ray_run and native_run and not ray_run.get("failed") and not native_run.get("failed"):
        ratios["ray_over_native_flow_seconds"] = round(ray_run["flow_seconds"] / native_run["flow_seconds"], 2)
    result["ratios"] = ratios
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    print("ratios:", json.dumps(ratios, indent=1), flush=True)
    target = Path(args.result) if args.result else RESULT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {target}")


def child_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("--out", required=True)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--runner", default="ray")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    ns = parser.parse_args()
    {"_promote": child_promote, "_duckdb": child_duckdb, "_upsert": child_upsert}[ns.mode](ns)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        child_main()
    else:
        main()
