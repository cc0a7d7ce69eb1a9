"""What the two Spark peer jobs share: their JSON milestone lines and a local session's settings.

Imported by infra/peers/spark_stream.py and spark_silver.py, which run as scripts in the peers' own
virtualenv (their folder is on sys.path); it imports nothing of the lakehouse.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JARS = ROOT / ".lakehouse" / "peers" / "jars" / "spark"
CATALOG = "spark.sql.catalog.peers"


def say(event: str, **extra) -> None:
    """One milestone line on stdout, read by benchmarks/peers.py."""
    print(json.dumps({"event": event, "at": time.time(), **extra}), flush=True)


def local_session(app: str, cores: int, driver_memory: str, jars: str, catalog: dict[str, str],
                  extra: dict[str, str] | None = None):
    """A local Spark session with the Iceberg extensions and one Iceberg catalog, ``peers``.

    ``jars`` is a glob in the peers' jar folder; ``catalog`` holds the catalog's own properties
    (without the ``spark.sql.catalog.peers.`` prefix); ``extra`` any other Spark settings.
    """
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(f"local[{cores}]").appName(app)
        .config("spark.jars", ",".join(str(p) for p in sorted(JARS.glob(jars))))
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(cores))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config(CATALOG, "org.apache.iceberg.spark.SparkCatalog")
    )
    for key, value in (extra or {}).items():
        builder = builder.config(key, value)
    for key, value in catalog.items():
        builder = builder.config(f"{CATALOG}.{key}", value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
