"""What a scan says: findings, a verdict per file, and the exit code the CLI uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SEVERITIES", "FileReport", "Finding", "ScanReport"]

# Ordered worst first. "critical" and "high" make a file unsafe; "medium" is a structural oddity
# worth reading (a CRC mismatch, trailing bytes) that cannot run code by itself.
SEVERITIES = ("critical", "high", "medium", "low")
UNSAFE_SEVERITIES = frozenset({"critical", "high"})

SAFE, UNSAFE, UNREADABLE = "safe", "unsafe", "unreadable"


@dataclass(frozen=True)
class Finding:
    """One thing a scan found: where it is, what it names, how bad it is."""

    file: str
    severity: str
    kind: str
    message: str
    member: str | None = None
    offset: int | None = None
    callable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "member": self.member,
            "offset": self.offset,
            "callable": self.callable,
            "severity": self.severity,
            "kind": self.kind,
            "message": self.message,
        }


@dataclass
class FileReport:
    """The verdict on one file: ``safe``, ``unsafe`` (it can run code or is built to mislead
    scanners) or ``unreadable`` (missing, a directory, empty, or not a model file we can parse)."""

    path: str
    format: str = "unknown"
    findings: list[Finding] = field(default_factory=list)
    unreadable_reason: str | None = None
    members_scanned: int = 0
    pickles: int = 0
    imports: int = 0
    bytes_scanned: int = 0
    size: int = 0

    @property
    def status(self) -> str:
        if any(f.severity in UNSAFE_SEVERITIES for f in self.findings if f.kind != "unreadable"):
            return UNSAFE
        if self.unreadable_reason is not None:
            return UNREADABLE
        return SAFE

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "format": self.format,
            "size": self.size,
            "unreadable_reason": self.unreadable_reason,
            "members_scanned": self.members_scanned,
            "pickles": self.pickles,
            "imports": self.imports,
            "bytes_scanned": self.bytes_scanned,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class ScanReport:
    """The result of ``torchshield.scan``: one ``FileReport`` per path.

    ``safe`` is True only when every file was read and nothing unsafe was found.
    ``exit_code``: 0 all safe, 1 any file unsafe (this wins: a reader must act on it),
    2 nothing unsafe but a file could not be read."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for report in self.files for f in report.findings]

    @property
    def safe(self) -> bool:
        return all(report.status == SAFE for report in self.files)

    @property
    def exit_code(self) -> int:
        statuses = {report.status for report in self.files}
        if UNSAFE in statuses:
            return 1
        if UNREADABLE in statuses:
            return 2
        return 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "safe": self.safe,
            "exit_code": self.exit_code,
            "files": [report.to_dict() for report in self.files],
        }
