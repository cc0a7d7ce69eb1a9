"""Expectation suites as data: YAML files kept in the repository, severities overridable by
settings (``dq_severities``), checked when loaded so a bad file or override is one clear error."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from tasks.settings import Settings, SettingsError, env_key

SUITES_DIR = Path(__file__).parent / "suites"
SEVERITIES = ("warn", "quarantine", "fail")
BASELINES = ("trailing_same_hour",)
# GX expectations whose result names failing rows: the only ones that can quarantine
ROW_LEVEL = frozenset({
    "expect_column_values_to_not_be_null", "expect_column_values_to_be_unique", "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_between", "expect_column_values_to_not_be_in_set",
    "expect_column_values_to_match_regex", "expect_column_pair_values_to_be_equal",
    "expect_column_pair_values_a_to_be_greater_than_b",
})
SILVER_FACTS_SUITE = "silver_fact_conversions"
GOLD_DAILY_SUITE = "gold_daily_conversion_metrics"


@dataclass(frozen=True)
class Expectation:
    """One named expectation: a GX expectation type, its parameters and what a failure does."""

    name: str
    expectation: str  # GX snake_case type, e.g. expect_column_values_to_not_be_null
    kwargs: Mapping[str, Any]
    severity: str
    baseline: str | None = None  # trailing_same_hour: bounds are ratios of a baseline passed at evaluation

    @property
    def row_level(self) -> bool:
        return self.expectation in ROW_LEVEL

    @property
    def reason_code(self) -> str:
        """The quarantine reason of a row this expectation rejected, in the style of the contract's codes."""
        return f"DQ_{self.name.upper()}"


@dataclass(frozen=True)
class Suite:
    name: str
    table: str
    expectations: tuple[Expectation, ...] = field(default_factory=tuple)

    def columns(self) -> list[str]:
        """The columns the suite reads (the pandas view needs only these)."""
        out: list[str] = []
        for e in self.expectations:
            for key in ("column", "column_A", "column_B"):
                if key in e.kwargs and e.kwargs[key] not in out:
                    out.append(e.kwargs[key])
        return out


def parse_suite(text: str, source: str) -> Suite:
    """A suite from its YAML text; ``source`` names the file in errors."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("suite"), str) or not isinstance(doc.get("expectations"), list):
        raise ValueError(f"{source}: expected keys suite (a name), table and expectations (a list)")
    expectations, seen = [], set()
    for i, item in enumerate(doc["expectations"]):
        where = f"{source}: expectations[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("expectation"), str):
            raise ValueError(f"{where}: needs a name and an expectation (a GX type)")
        name = item["name"]
        if name in seen:
            raise ValueError(f"{where}: name {name!r} repeats")
        seen.add(name)
        unknown = set(item) - {"name", "expectation", "kwargs", "severity", "baseline"}
        if unknown:
            raise ValueError(f"{where} ({name}): unknown keys {sorted(unknown)}")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where} ({name}): kwargs must be a mapping")
        baseline = item.get("baseline")
        if baseline is not None and baseline not in BASELINES:
            raise ValueError(f"{where} ({name}): baseline must be one of {BASELINES}, got {baseline!r}")
        expectation = Expectation(name, item["expectation"], kwargs, item.get("severity", "warn"), baseline)
        _check_severity(expectation, f"{where} ({name}): severity")
        expectations.append(expectation)
    return Suite(doc["suite"], str(doc.get("table", "")), tuple(expectations))


def _check_severity(expectation: Expectation, where: str) -> None:
    if expectation.severity not in SEVERITIES:
        raise ValueError(f"{where} must be one of {SEVERITIES}, got {expectation.severity!r}")
    if expectation.severity == "quarantine" and not expectation.row_level:
        raise ValueError(f"{where} quarantine needs a row-level expectation; {expectation.expectation} judges the batch")


def with_severities(suite: Suite, overrides: Mapping[str, str], key: str = "dq_severities") -> Suite:
    """The suite with severities replaced by ``overrides`` (expectation name -> severity); only
    names of this suite are applied, so one mapping serves every suite."""
    out = []
    for e in suite.expectations:
        if e.name in overrides:
            e = replace(e, severity=overrides[e.name])
            try:
                _check_severity(e, f"{e.name}")
            except ValueError as exc:
                raise SettingsError(env_key(key), str(exc)) from None
        out.append(e)
    return replace(suite, expectations=tuple(out))


def load_suite(settings: Settings, name: str) -> Suite:
    """Suite ``name`` from ``dq_suites_dir`` (default: the repository's), with the settings'
    severity overrides; a missing or malformed file raises SettingsError naming the setting."""
    folder = settings.dq_suites_dir or SUITES_DIR
    path = Path(folder) / f"{name}.yml"
    try:
        suite = parse_suite(path.read_text(), str(path))
    except FileNotFoundError:
        raise SettingsError(env_key("dq_suites_dir"), f"no suite file {str(path)!r}") from None
    except ValueError as exc:
        raise SettingsError(env_key("dq_suites_dir"), str(exc)) from None
    return with_severities(suite, settings.dq_severity_overrides)


def check_override_names(settings: Settings, suite_names: tuple[str, ...] = (SILVER_FACTS_SUITE, GOLD_DAILY_SUITE)) -> None:
    """Every name in ``dq_severities`` is an expectation of some suite: a typo must not pass silently."""
    known = {e.name for name in suite_names for e in load_suite(settings, name).expectations}
    unknown = sorted(set(settings.dq_severity_overrides) - known)
    if unknown:
        raise SettingsError(env_key("dq_severities"), f"unknown expectation {unknown[0]!r}; known: {', '.join(sorted(known))}")
