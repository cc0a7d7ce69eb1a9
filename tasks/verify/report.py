"""The results of `lakehouse verify`: a :class:`Check` per reconciliation, the :class:`VerifyReport`
that holds them (and its text table), and the :class:`Options` the checks run with."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.settings import LAYERS

EXAMPLES = 5  # offending keys named in a detail


@dataclass
class Check:
    """One reconciliation result. ``warning``: passed, but with something a person should look at."""

    name: str
    layer: str
    ok: bool
    detail: str
    counts: dict = field(default_factory=dict)
    warning: bool = False

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else "WARN" if self.warning else "PASS"

    def as_dict(self) -> dict:
        return {"name": self.name, "layer": self.layer, "status": self.status, "ok": self.ok,
                "warning": self.warning, "detail": self.detail, "counts": self.counts}


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)
    layers: tuple[str, ...] = LAYERS
    strict: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.ok), None)

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.ok and check.warning]

    def check(self, name: str) -> Check:
        """The check called ``name``; KeyError if it did not run."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "strict": self.strict,
            "layers": list(self.layers),
            "passed": sum(1 for c in self.checks if c.status == "PASS"),
            "warnings": len(self.warnings),
            "failed": sum(1 for c in self.checks if not c.ok),
            "first_failure": self.first_failure.name if self.first_failure else None,
            "checks": [check.as_dict() for check in self.checks],
        }


def render_table(report: VerifyReport) -> str:
    """A plain text table: status, check, detail; then one summary line."""
    rows = [("STATUS", "CHECK", "DETAIL")] + [(c.status, c.name, c.detail) for c in report.checks]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{status:<{widths[0]}}  {name:<{widths[1]}}  {detail}" for status, name, detail in rows]
    summary = report.as_dict()
    lines.append(f"verify {'ok' if report.ok else 'FAILED'}: {len(report.checks)} checks, {summary['passed']} passed, "
                 f"{summary['warnings']} with warnings, {summary['failed']} failed"
                 + (" (strict: warnings fail)" if report.strict else ""))
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    allow_unexplained_gaps: bool = True
    max_marker_gap: int = 1
    strict: bool = False
