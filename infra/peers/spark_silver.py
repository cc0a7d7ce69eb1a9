"""The Spark 4.0 peer of silver promotion, run by benchmarks/peers.py (``--parts silver``).

Runs in the peers' own virtualenv (`make peers`: .lakehouse/peers/venv), never in the lakehouse's:

    .lakehouse/peers/venv/bin/python infra/peers/spark_silver.py --spec SPEC.json --out OUT.json

The spec (written by the harness) names the Iceberg metadata files of a private lakehouse's bronze,
silver facts and quarantine tables and carries silver's rules (required fields, enums, the 3999
numerals, the size bound), so this job imports nothing of the lakehouse. The three tables are
registered in a Hadoop catalog of the job's own (``--warehouse``: each table's current metadata file
copied in as its ``v1.metadata.json``, the Hadoop catalog's form of ``register_table``): Spark appends
its facts and quarantined rows to them as the flow would, and nothing of the lakehouse's catalog
sees those commits.

The SQL is silver_promotion.duckdb_sql's, in Spark SQL: one parse per row (``try_parse_json`` to a
VARIANT), type tests with ``schema_of_variant``, then every reason code; the first arrival of each
event id in the batch (``row_number``); an anti-join against the history rows of the batch's days,
where an earlier arrival replaces the stored row (DELETE + append, as the flow does).

Prints one JSON line per milestone (``{"event": ..., "at": epoch seconds}``) on stdout and writes
its figures to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spark_job import local_session, say

PATHS = ("event_id", "event_type", "schema_version", "occurred_at", "user_id", "user_plan", "user_country",
         "direction", "input", "output", "success", "error_code", "latency_ms", "endpoint", "http_status",
         "client", "region", "cache_hit")
STRING_FIELDS = (("event_id", False), ("event_type", False), ("user_id", True), ("user_plan", True),
                 ("user_country", True), ("direction", False), ("input", False), ("output", True),
                 ("error_code", True), ("endpoint", False), ("client", True), ("region", False))
UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ISO_TS = "^[0-9]{4}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9](:[0-9][0-9](\\\\.[0-9]{1,6})?)?(Z|[+-][0-9][0-9]:?[0-9][0-9])$"
INTEGER = ("BIGINT",)
NUMBER = ("BIGINT", "DOUBLE", "DECIMAL%")


def session(args):
    """The local session on the job's own Hadoop catalog (``--warehouse``)."""
    return local_session("lakehouse-peer-spark-silver", args.cores, args.driver_memory, "iceberg-*.jar",
                         {"type": "hadoop", "warehouse": args.warehouse},
                         # event_id is required; rejected rows never reach facts
                         {"spark.sql.iceberg.check-nullability": "false"})


def typed_sql(rules: dict) -> str:
    """Validation of every bronze row (view ``raw``) into view ``typed`` with ``reason_codes``."""
    max_bytes = int(rules["max_bytes"])
    f = {name: f"f_{name}" for name in PATHS}

    def t(name):
        return f"schema_of_variant({f[name]})"

    def s(name):  # typed string, NULL when absent, JSON null or another type
        return f"CASE WHEN {t(name)} = 'STRING' THEN variant_get({f[name]}, '$', 'string') END"

    def is_type(name, types):
        return " OR ".join(f"{t(name)} LIKE '{x}'" for x in types)

    def wrong(name, types, nullable):
        allowed = types + (("VOID",) if nullable else ())
        return f"({f[name]} IS NOT NULL AND NOT ({is_type(name, allowed)}))"

    bad_types = [wrong(n, ("STRING",), nullable) for n, nullable in STRING_FIELDS]
    bad_types += [wrong("success", ("BOOLEAN",), False), wrong("cache_hit", ("BOOLEAN",), False),
                  wrong("latency_ms", NUMBER, False), wrong("http_status", INTEGER, False),
                  wrong("schema_version", INTEGER, False),
                  f"(ev_id IS NOT NULL AND NOT ev_id RLIKE '{UUID}')",
                  f"({f['occurred_at']} IS NOT NULL AND occurred_at IS NULL)"]
    missing_v1 = " OR ".join(f"{f[n]} IS NULL" for n in rules["required_v1"])
    missing_v2 = " OR ".join(f"{f[n]} IS NULL" for n in rules["required_v2"])
    plans = ", ".join(f"'{p}'" for p in rules["plans"])
    errors = ", ".join(f"'{e}'" for e in rules["error_codes"])
    fields = ",\n    ".join(f"CASE WHEN is_object THEN variant_get(v, '$.{n}') END AS {f[n]}" for n in PATHS)
    return f"""
CREATE OR REPLACE TEMP VIEW parsed AS
WITH t AS (
  SELECT source_topic, source_partition, source_offset, kafka_timestamp, value,
         CASE WHEN value IS NOT NULL AND octet_length(value) BETWEEN 1 AND {max_bytes}
              THEN try_validate_utf8(CAST(value AS STRING)) END AS txt
  FROM raw
), j AS (
  SELECT *, try_parse_json(txt) AS v FROM t
), o AS (
  SELECT *, v IS NOT NULL AS is_json, v IS NOT NULL AND schema_of_variant(v) LIKE 'OBJECT%' AS is_object FROM j
)
SELECT source_topic, source_partition, source_offset, kafka_timestamp, value, is_json, is_object,
    {fields}
FROM o;

CREATE OR REPLACE TEMP VIEW typed AS
WITH a AS (
  SELECT *,
    {s('event_id')} AS ev_id,
    {s('event_type')} AS event_type,
    CASE WHEN {t('schema_version')} = 'BIGINT' THEN try_cast(variant_get(f_schema_version, '$', 'bigint') AS INT) END AS sv,
    CASE WHEN {t('occurred_at')} = 'STRING' AND variant_get(f_occurred_at, '$', 'string') RLIKE '{ISO_TS}'
         THEN try_cast(variant_get(f_occurred_at, '$', 'string') AS TIMESTAMP) END AS occurred_at,
    {s('user_id')} AS user_id, {s('user_plan')} AS user_plan, {s('user_country')} AS user_country,
    {s('direction')} AS dir_raw, {s('input')} AS input, {s('output')} AS output,
    CASE WHEN {t('success')} = 'BOOLEAN' THEN variant_get(f_success, '$', 'boolean') END AS success,
    {s('error_code')} AS error_code,
    CASE WHEN {is_type('latency_ms', NUMBER)} THEN try_variant_get(f_latency_ms, '$', 'double') END AS latency_ms,
    {s('endpoint')} AS endpoint,
    CASE WHEN {t('http_status')} = 'BIGINT' THEN try_cast(variant_get(f_http_status, '$', 'bigint') AS INT) END AS http_status,
    {s('client')} AS client, {s('region')} AS region,
    CASE WHEN {t('cache_hit')} = 'BOOLEAN' THEN variant_get(f_cache_hit, '$', 'boolean') END AS cache_hit
  FROM parsed
), b AS (
  SELECT a.*, CASE WHEN dir_raw IN ('to_roman', 'from_roman') THEN dir_raw END AS direction,
         lk.expected, lk.numeral_value
  FROM a LEFT JOIN lookup lk ON lk.direction = a.dir_raw AND lk.input = a.input
)
SELECT b.*,
  filter(array(
    CASE WHEN value IS NOT NULL AND octet_length(value) > {max_bytes} THEN 'OVERSIZED' END,
    CASE WHEN value IS NULL OR octet_length(value) = 0
           OR (octet_length(value) <= {max_bytes} AND NOT is_json) THEN 'MALFORMED_JSON' END,
    CASE WHEN is_json AND NOT is_object THEN 'NOT_AN_OBJECT' END,
    CASE WHEN is_object AND ({missing_v1} OR (sv = 2 AND ({missing_v2}))) THEN 'MISSING_FIELD' END,
    CASE WHEN is_object AND ({' OR '.join(bad_types)}) THEN 'BAD_TYPE' END,
    CASE WHEN sv IS NOT NULL AND sv NOT IN (1, 2) THEN 'UNKNOWN_SCHEMA_VERSION' END,
    CASE WHEN (event_type IS NOT NULL AND event_type <> 'conversion')
           OR (user_plan IS NOT NULL AND user_plan NOT IN ({plans}))
           OR (user_country IS NOT NULL AND NOT user_country RLIKE '^[A-Z]{{2}}$')
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
    CASE WHEN occurred_at > kafka_timestamp + INTERVAL 5 MINUTES THEN 'FUTURE_EVENT' END
  ), x -> x IS NOT NULL) AS reason_codes
FROM b
"""


BATCH_SQL = """
CREATE OR REPLACE TEMP VIEW batch AS
SELECT * FROM (
  SELECT ev_id AS event_id, event_type, sv AS schema_version, occurred_at, CAST(occurred_at AS DATE) AS event_date,
         user_id, user_plan, user_country, direction, input, output, success, error_code, latency_ms, endpoint,
         http_status, client, region, cache_hit, numeral_value, source_topic, source_partition, source_offset,
         kafka_timestamp,
         row_number() OVER (PARTITION BY ev_id
                            ORDER BY kafka_timestamp, source_topic, source_partition, source_offset) AS arrival
  FROM typed_cached WHERE size(reason_codes) = 0
) WHERE arrival = 1
"""

INSERTS_SQL = """
CREATE OR REPLACE TEMP VIEW inserts AS
SELECT b.*, h.event_id IS NOT NULL AS replaces
FROM batch_cached b LEFT JOIN (
  SELECT event_id, kafka_timestamp, source_topic, source_partition, source_offset FROM peers.silver.fact_conversions
  WHERE event_date IN (SELECT DISTINCT event_date FROM batch_cached)
) h ON b.event_id = h.event_id
WHERE h.event_id IS NULL
   OR named_struct('t', b.kafka_timestamp, 'p', b.source_topic, 'q', b.source_partition, 'o', b.source_offset)
    < named_struct('t', h.kafka_timestamp, 'p', h.source_topic, 'q', h.source_partition, 'o', h.source_offset)
"""


def register(warehouse: str, name: str, metadata_file: str) -> None:
    """The Hadoop catalog's ``register_table``: the table's current metadata as its version 1 (new
    metadata goes to the job's own folder; data and manifests to the table's location, as orphans of
    the private lake)."""
    import shutil

    folder = Path(warehouse.removeprefix("file://")) / Path(*name.split(".")) / "metadata"
    folder.mkdir(parents=True, exist_ok=False)
    shutil.copy(metadata_file.removeprefix("file://"), folder / "v1.metadata.json")
    (folder / "version-hint.text").write_text("1")


def aligned(spark, frame, table: str):
    """``frame``'s columns in ``table``'s order and types; columns it lacks are NULL."""
    from pyspark.sql import functions as F

    target = spark.table(table).schema
    have = set(frame.columns)
    return frame.select([(F.col(c.name) if c.name in have else F.lit(None)).cast(c.dataType).alias(c.name)
                         for c in target.fields])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--driver-memory", default="4g")
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())
    args.warehouse = spec["warehouse"]

    say("launched")
    spark = session(args)
    spark.sql("SELECT 1").collect()
    say("session_ready")

    spans: dict[str, float] = {}
    began = t = time.monotonic()

    def mark(name: str) -> None:
        nonlocal t
        spans[name] = round(time.monotonic() - t, 3)
        t = time.monotonic()

    for name, key in (("bronze.conversion_events_raw", "bronze_metadata"), ("silver.fact_conversions", "facts_metadata"),
                      ("silver.conversion_events_rejected", "rejected_metadata")):
        register(args.warehouse, name, spec[key])
    rules = spec["rules"]
    numerals = rules["numerals"]  # numerals[n - 1] is n's numeral
    lookup = ([("to_roman", str(n), numerals[n - 1], n) for n in range(1, len(numerals) + 1)]
              + [("from_roman", numerals[n - 1], str(n), n) for n in range(1, len(numerals) + 1)])
    spark.createDataFrame(lookup, "direction string, input string, expected string, numeral_value int") \
        .createOrReplaceTempView("lookup")
    spark.sql("""CREATE OR REPLACE TEMP VIEW raw AS
                 SELECT topic AS source_topic, `partition` AS source_partition, `offset` AS source_offset,
                        kafka_timestamp, value FROM peers.bronze.conversion_events_raw""")
    mark("register_and_plan")

    for statement in typed_sql(rules).split(";\n"):
        spark.sql(statement)
    # localCheckpoint, not cache: a cached plan over a table is recomputed when that table is written
    typed = spark.table("typed").drop(*[f"f_{n}" for n in PATHS], "is_json", "is_object").localCheckpoint()
    typed.createOrReplaceTempView("typed_cached")
    bronze_records = typed.count()
    mark("read_parse_validate")

    rejected = typed.where("size(reason_codes) > 0")
    aligned(spark, rejected, "peers.silver.conversion_events_rejected") \
        .writeTo("peers.silver.conversion_events_rejected").append()
    mark("commit_rejected")

    spark.sql(BATCH_SQL)
    batch = spark.table("batch").drop("arrival").localCheckpoint()
    batch.createOrReplaceTempView("batch_cached")
    first_arrivals = batch.count()
    mark("dedup_within_batch")

    spark.sql(INSERTS_SQL)
    inserts = spark.table("inserts").localCheckpoint()
    inserts.createOrReplaceTempView("inserts_cached")
    replaced = inserts.where("replaces").count()
    mark("anti_join_history")

    if replaced:  # an earlier arrival replaces the stored row: delete it, then append (the flow: one commit)
        spark.sql("DELETE FROM peers.silver.fact_conversions WHERE event_id IN "
                  "(SELECT event_id FROM inserts_cached WHERE replaces)")
    aligned(spark, inserts.drop("replaces"), "peers.silver.fact_conversions") \
        .writeTo("peers.silver.fact_conversions").append()
    mark("commit_facts")
    seconds = time.monotonic() - began
    say("done", seconds=round(seconds, 3))

    # Untimed: the figures to compare with ours.
    counts = spark.sql("""
        SELECT (SELECT count(*) FROM typed_cached WHERE size(reason_codes) > 0) AS rejected,
               (SELECT count(*) FROM inserts_cached) AS inserted,
               (SELECT count(DISTINCT event_id) FROM inserts_cached) AS inserted_distinct_ids
    """).collect()[0].asDict()
    reasons = {r["code"]: r["n"] for r in spark.sql(
        "SELECT code, count(*) AS n FROM (SELECT explode(reason_codes) AS code FROM typed_cached) GROUP BY code"
    ).collect()}
    facts_after = spark.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM peers.silver.fact_conversions") \
        .collect()[0]
    spark.table("inserts_cached").select("event_id").coalesce(1).write.mode("overwrite").parquet(spec["inserted_ids"])
    snapshots = spark.sql("SELECT summary FROM peers.silver.fact_conversions.snapshots ORDER BY committed_at") \
        .collect()
    Path(args.out).write_text(json.dumps({
        "seconds": round(seconds, 3), "phases": spans, "cores": args.cores, "driver_memory": args.driver_memory,
        "counts": {"bronze_records": bronze_records, "rejected": counts["rejected"], "first_arrivals": first_arrivals,
                   "facts_inserted": counts["inserted"] - replaced, "replaced_by_earlier_arrival": replaced,
                   "inserted_distinct_event_ids": counts["inserted_distinct_ids"],
                   "facts_table_rows_after": facts_after["n"], "facts_table_distinct_event_ids_after": facts_after["ids"]},
        "reasons": reasons,
        "last_facts_commit": dict(snapshots[-1]["summary"]) if snapshots else None,
    }))
    spark.stop()


if __name__ == "__main__":
    sys.exit(main())
