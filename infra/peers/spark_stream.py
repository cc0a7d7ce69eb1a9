"""The Spark 4.0 peer: Kafka → Iceberg with Structured Streaming, run by benchmarks/peers.py.

Runs in the peers' own virtualenv (`make peers`: .lakehouse/peers/venv), never in the lakehouse's:

    .lakehouse/peers/venv/bin/python infra/peers/spark_stream.py ingest|stream ARGS

* ``ingest``: drain the topic into the table with ``trigger(availableNow=True)`` (bronze ingest rate);
* ``stream``: a long-running query with ``trigger(processingTime=N s)`` until SIGTERM (freshness).

The catalog is the REST catalog given by ``--catalog-uri``; its token and the S3 keys come from the
environment (PEERS_CATALOG_TOKEN, PEERS_S3_ACCESS_KEY_ID, PEERS_S3_SECRET_ACCESS_KEY), never argv.
Prints one JSON line per milestone (``{"event": ..., "at": epoch seconds}``) on stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading

from spark_job import local_session, say


def session(args):
    """The local session on the stack's REST catalog; the S3 keys and token come from the environment."""
    catalog = {
        "type": "rest",
        "uri": args.catalog_uri,
        "io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "s3.endpoint": args.s3_endpoint,
        "s3.path-style-access": "true",
        "client.region": args.s3_region,
        "s3.access-key-id": os.environ["PEERS_S3_ACCESS_KEY_ID"],
        "s3.secret-access-key": os.environ["PEERS_S3_SECRET_ACCESS_KEY"],
    }
    if os.environ.get("PEERS_CATALOG_TOKEN"):
        catalog["token"] = os.environ["PEERS_CATALOG_TOKEN"]
    return local_session("lakehouse-peer-spark", args.cores, args.driver_memory, "*.jar", catalog)


def bronze_stream(spark, args):
    """Kafka records as our bronze keeps them: coordinates, timestamp, key and value bytes."""
    from pyspark.sql import functions as F

    source = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", args.bootstrap)
              .option("subscribe", args.topic)
              .option("startingOffsets", "earliest")
              .option("failOnDataLoss", "false"))
    if args.max_offsets:
        source = source.option("maxOffsetsPerTrigger", str(args.max_offsets))
    return source.load().select(
        F.col("topic"), F.col("partition"), F.col("offset"), F.col("timestamp").alias("kafka_timestamp"),
        F.col("key"), F.col("value"), F.current_timestamp().alias("ingested_at"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("ingest", "stream"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--table", required=True, help="namespace.table in the REST catalog")
    parser.add_argument("--catalog-uri", required=True)
    parser.add_argument("--s3-endpoint", required=True)
    parser.add_argument("--s3-region", default="us-east-1")
    parser.add_argument("--trigger-seconds", type=float, default=10.0)
    parser.add_argument("--max-offsets", type=int, default=0)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--driver-memory", default="2g")
    args = parser.parse_args()

    say("launched")
    spark = session(args)
    spark.sql(f"SELECT count(*) FROM peers.{args.table}").collect()  # catalog + S3 reached: start-up done
    say("session_ready")
    checkpoint = tempfile.mkdtemp(prefix="peers-spark-checkpoint-")
    writer = (bronze_stream(spark, args).writeStream.format("iceberg").outputMode("append")
              .option("checkpointLocation", checkpoint))
    if args.mode == "ingest":
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{args.trigger_seconds} seconds")
    query = writer.toTable(f"peers.{args.table}")
    say("query_started")
    if args.mode == "ingest":
        query.awaitTermination()
        say("query_finished", batches=len(query.recentProgress),
            rows=sum(p.get("numInputRows", 0) for p in query.recentProgress))
    else:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.5) and query.isActive:
            pass
        query.stop()
        say("query_stopped", batches=len(query.recentProgress))
    spark.stop()


if __name__ == "__main__":
    sys.exit(main())
