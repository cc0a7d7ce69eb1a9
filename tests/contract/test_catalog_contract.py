"""The catalog contract: both catalogs must behave the same for everything the lakehouse relies on.

Run over the SQLite SQL catalog on a file warehouse and the REST catalog on S3 (the real stack).
"""

from __future__ import annotations

import os
import threading
import uuid

import pyarrow as pa
import pytest
from pyiceberg.exceptions import NamespaceAlreadyExistsError
from pyiceberg.schema import Schema
from pyiceberg.types import LongType, NestedField, StringType

from tasks.catalog import open_catalog

SCHEMA = Schema(
    NestedField(1, "id", LongType(), required=True),
    NestedField(2, "numeral", StringType(), required=False),
)


def _rows(*pairs: tuple[int, str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": i, "numeral": n} for i, n in pairs],
        schema=pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("numeral", pa.string())]),
    )


@pytest.fixture(params=["sql", "rest"])
def catalog_env(request, tmp_path, monkeypatch):
    """(catalog, settings, namespace) for one catalog flavour, with a fresh namespace."""
    if request.param == "sql":
        from tasks.settings import load_settings

        for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
            monkeypatch.delenv(key)  # the embedded defaults, whatever the caller's environment
        settings = load_settings(profile="embedded", state_dir=str(tmp_path / "state"))
    else:
        settings = request.getfixturevalue("stack_settings")
    catalog = open_catalog(settings, "ingest")
    namespace = f"contract_{uuid.uuid4().hex[:8]}"
    catalog.create_namespace(namespace, {"location": f"{settings.layer_location('bronze')}/{namespace}"})
    yield catalog, settings, namespace
    for ident in catalog.list_tables(namespace):
        catalog.drop_table(ident)
    catalog.drop_namespace(namespace)


def _create(catalog, settings, namespace, name="contract_numerals_test"):
    location = f"{settings.layer_location('bronze')}/{namespace}/{name}"
    return catalog.create_table(f"{namespace}.{name}", schema=SCHEMA, location=location)


def test_namespace_and_table_are_created_once(catalog_env):
    catalog, settings, namespace = catalog_env
    with pytest.raises(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)
    table = _create(catalog, settings, namespace)
    assert (namespace, "contract_numerals_test") in catalog.list_tables(namespace)
    assert catalog.load_table(f"{namespace}.contract_numerals_test").metadata.table_uuid == table.metadata.table_uuid
    expected_prefix = settings.layer_location("bronze")
    assert table.location().startswith(expected_prefix)


def test_append_and_read_back(catalog_env):
    catalog, settings, namespace = catalog_env
    table = _create(catalog, settings, namespace)
    table.append(_rows((1, "I"), (4, "IV"), (3999, "MMMCMXCIX")))
    got = catalog.load_table(table.name()).scan().to_arrow().sort_by("id")
    assert got.column("id").to_pylist() == [1, 4, 3999]
    assert got.column("numeral").to_pylist() == ["I", "IV", "MMMCMXCIX"]


def test_schema_add_column_keeps_old_rows(catalog_env):
    catalog, settings, namespace = catalog_env
    table = _create(catalog, settings, namespace)
    table.append(_rows((1, "I")))
    with table.update_schema() as update:
        update.add_column("region", StringType())
    table = catalog.load_table(table.name())
    assert [f.name for f in table.schema().fields] == ["id", "numeral", "region"]
    new = pa.Table.from_pylist(
        [{"id": 2, "numeral": "II", "region": "eu-west-1"}],
        schema=table.schema().as_arrow(),
    )
    table.append(new)
    got = table.scan().to_arrow().sort_by("id").to_pylist()
    assert got == [
        {"id": 1, "numeral": "I", "region": None},
        {"id": 2, "numeral": "II", "region": "eu-west-1"},
    ]


def test_time_travel_to_first_snapshot(catalog_env):
    catalog, settings, namespace = catalog_env
    table = _create(catalog, settings, namespace)
    table.append(_rows((1, "I")))
    first = table.current_snapshot().snapshot_id
    table.append(_rows((2, "II")))
    table = catalog.load_table(table.name())
    assert len(table.history()) == 2
    assert table.scan(snapshot_id=first).to_arrow().column("id").to_pylist() == [1]
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 2]


def test_concurrent_appends_from_two_handles_both_survive(catalog_env):
    catalog, settings, namespace = catalog_env
    _create(catalog, settings, namespace)
    ident = f"{namespace}.contract_numerals_test"
    # Two handles loaded before either commits: the second commit must not drop the first's rows.
    handles = [open_catalog(settings, "ingest").load_table(ident) for _ in range(2)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def append(handle, row):
        try:
            barrier.wait(timeout=10)
            handle.append(_rows(row))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=append, args=(handles[0], (10, "X"))),
        threading.Thread(target=append, args=(handles[1], (20, "XX"))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    got = sorted(catalog.load_table(ident).scan().to_arrow().column("id").to_pylist())
    assert got == [10, 20]


def test_files_written_apart_commit_once_with_their_offsets(catalog_env):
    """The ingest's two-stage write: files written first (by the writer actors), then one commit
    that records the next offsets; a second commit planned on the same offsets is refused."""
    from pyiceberg.io import load_file_io
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    from tasks.commits import OffsetsMovedError, append_files_with_offsets, latest_offsets

    catalog, settings, namespace = catalog_env
    table = _create(catalog, settings, namespace)
    table.transaction().set_properties({"commit.retry.num-retries": "0"}).commit_transaction()
    table = table.refresh()
    io = load_file_io(dict(table.io.properties), table.metadata.location)
    files = [f for rows in (_rows((1, "I")), _rows((2, "II"), (3, "III")))
             for f in _dataframe_to_data_files(table.metadata, rows, io, write_uuid=uuid.uuid4())]

    snapshot = append_files_with_offsets(table, files, {}, {"t": {0: 3}}, "run-1", {"records": 3})
    with pytest.raises(OffsetsMovedError):  # planned on the old (empty) offsets: refused, nothing added
        append_files_with_offsets(table, files, {}, {"t": {0: 3}}, "run-2", {"records": 3})

    table = table.refresh()
    assert table.current_snapshot().snapshot_id == snapshot
    assert latest_offsets(table) == {"t": {0: 3}}
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 2, 3]
