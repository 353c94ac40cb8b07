"""What the demo's steps share: the output folder, the files each step made, and their results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchshield.nn.loop import ProgressFactory

__all__ = ["DemoState", "StepResult", "StepSkipped"]


class StepSkipped(Exception):
    """A step cannot run (a capability is not in this build, or a step it needs did not run)."""


@dataclass
class StepResult:
    id: str
    title: str
    status: str  # "ok" | "skipped" | "failed"
    summary: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "summary": self.summary,
            "seconds": round(self.seconds, 2),
            "details": self.details,
        }


@dataclass
class DemoState:
    out: Path
    quick: bool = False
    seed: int = 0
    progress: ProgressFactory | None = None  # the CLI's progress bars inside long steps (on a terminal)
    files: dict[str, Path] = field(default_factory=dict)  # named artifacts: "raw", "train", "model", ...
    facts: dict[str, Any] = field(default_factory=dict)  # numbers later steps and the summary use
    results: list[StepResult] = field(default_factory=list)
    live: dict[str, Any] = field(default_factory=dict)  # running things (the server); never serialised
    cleanups: list[Any] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return 1000 if self.quick else 6000

    def path(self, name: str, relative: str) -> Path:
        p = self.out / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        self.files[name] = p
        return p

    def need(self, *names: str) -> list[Path]:
        """The files earlier steps made; a missing one skips this step with the reason."""
        missing = [n for n in names if n not in self.files or not self.files[n].exists()]
        if missing:
            raise StepSkipped(f"needs '{missing[0]}', which an earlier step did not produce")
        return [self.files[n] for n in names]
