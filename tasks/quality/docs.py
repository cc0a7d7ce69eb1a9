"""GX Data Docs in the state folder: one validation page per checked batch, and an index of the
latest. Built with this process's ephemeral context; nothing else of GX is written anywhere."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tasks.settings import Settings

SITE = "lakehouse"


def docs_folder(settings: Settings) -> Path:
    """Where the Data Docs of this lakehouse live: per catalog, in the state folder, or beside a
    SQLite catalog's file (a test's or benchmark's private lakehouse keeps its pages in its own folder)."""
    uri = settings.catalog_uri or ""
    if settings.catalog_type == "sql" and uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "dq" / "data_docs" / settings.catalog_tag
    return settings.state_dir / "dq" / "data_docs" / settings.catalog_tag


def index_page(settings: Settings) -> Path:
    return docs_folder(settings) / "index.html"


def build_page(settings: Settings, suite_name: str, run_id: str, batch: str, evaluated_at: datetime, result) -> Path:
    """Write the validation page of ``result`` and rebuild the index; returns the page's path.

    The in-memory results store keeps only this result (the pages of earlier runs stay on disk), so
    a long-running worker does not grow."""
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from tasks.quality.runner import context

    gx = context()
    folder = docs_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    sites = gx.variables.data_docs_sites or {}
    if SITE not in sites or sites[SITE]["store_backend"]["base_directory"] != str(folder):
        if SITE in sites:
            gx.delete_data_docs_site(SITE)
        gx.add_data_docs_site(SITE, {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(folder)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=suite_name),
                                     RunIdentifier(run_name=run_id, run_time=evaluated_at), batch)
    store = gx.validation_results_store
    store.set(key, _plain(result))
    try:
        gx.build_data_docs(site_names=[SITE], resource_identifiers=[key])
    finally:
        store.remove_key(key)
    pages = sorted((folder / "validations" / suite_name / run_id).rglob("*.html"))
    return pages[-1] if pages else index_page(settings)


def _plain(result):
    """The result with numpy scalars (a pandas view's values) as plain JSON types: the store
    serializes with the standard encoder."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResultSchema

    return ExpectationSuiteValidationResultSchema().load(result.to_json_dict())
