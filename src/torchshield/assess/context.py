"""What an assessment is given, and the expensive things it derives from it, each loaded once
and shared by the checks (the model is decrypted once, the test table read once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from torchshield.assess.subject import ModelSubject, NotAssessable, load_split, open_subject, rebuild_model

__all__ = ["AssessContext", "AssessInputs"]


@dataclass(frozen=True)
class AssessInputs:
    """The inputs of one assessment. ``key`` is a resolved MasterKey (never written anywhere)."""

    model: Path
    data: Path | None = None
    train_data: Path | None = None
    key: Any = None
    pubkey: Path | None = None
    endpoint: str | None = None
    api_key: str | None = field(default=None, repr=False)
    quick: bool = False
    max_examples: int = 2000  # rows per split used by the model checks (time bound on 2 cores)
    endpoint_timeout_s: float = 10.0  # per request to --endpoint (report --endpoint-timeout)
    seed: int = 0


class AssessContext:
    def __init__(self, inputs: AssessInputs) -> None:
        self.inputs = inputs

    @cached_property
    def info(self) -> Any:
        """The bundle's manifest (``torchshield.inspect``); raises ShieldError for a non-bundle."""
        from torchshield.model.bundle import inspect

        return inspect(self.inputs.model)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return dict(self.info.manifest)

    @cached_property
    def tensors(self) -> dict[str, Any]:
        from torchshield.model.bundle import load

        if self.info.encrypted and self.inputs.key is None:
            raise NotAssessable(
                "the bundle is encrypted and no key was given",
                "pass --key-file (or set TORCHSHIELD_KEY_FILE) to assess the model itself",
            )
        return load(self.inputs.model, key=self.inputs.key)

    @cached_property
    def subject(self) -> ModelSubject:
        if isinstance(self.manifest.get("architecture"), dict):  # a user's own model (model protect)
            if self.info.encrypted and self.inputs.key is None:
                self.tensors  # noqa: B018 - raises NotAssessable with the reason
            return open_subject(self.inputs.model, key=self.inputs.key, pubkey=self.inputs.pubkey)
        return rebuild_model(self.manifest, self.tensors)

    def _split(self, path: Path | None, what: str) -> tuple[Any, Any]:
        if path is None:
            raise NotAssessable(f"no {what} table was given", f"pass --{what.replace(' ', '-')} FILE.parquet")
        x, y = load_split(path, self.subject)
        return self._bounded(x, y)

    def _bounded(self, x: Any, y: Any) -> tuple[Any, Any]:
        n = self.inputs.max_examples
        if len(y) > n:  # a fixed, seeded subsample keeps run time bounded and results repeatable
            import torch

            idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.inputs.seed))[:n]
            x, y = x[idx], y[idx]
        return x, y

    @cached_property
    def test_split(self) -> tuple[Any, Any]:
        return self._split(self.inputs.data, "data")

    @cached_property
    def train_split(self) -> tuple[Any, Any]:
        return self._split(self.inputs.train_data, "train data")

    @cached_property
    def membership(self) -> tuple[tuple[Any, Any], tuple[Any, Any], str | None]:
        """Members and non-members for the membership audit, and where they came from.

        ``train`` splits its table itself and records which rows trained in ``<bundle>.split.json``.
        When ``--train-data`` is that very file (same bytes), its trained rows are the members and,
        unless ``--data`` names another file, its held-out rows the non-members: taking the whole
        training file as members would label its held-out rows wrongly."""
        from torchshield.nn.split import read_split, split_path

        train, recorded = self.inputs.train_data, split_path(self.inputs.model)
        if train is None or not recorded.is_file():
            return self.train_split, self.test_split, None
        doc = read_split(recorded)
        if not doc.describes(train):
            return self.train_split, self.test_split, None
        x, y = load_split(train, self.subject)
        if len(y) != len(doc.trained):
            raise NotAssessable(f"{recorded.name} describes {len(doc.trained)} rows, {train.name} gives {len(y)}",
                                "pass the training file unchanged, or a separate --data table")
        import torch

        mask = torch.from_numpy(doc.trained)
        note = f"members: the {int(mask.sum())} rows of {train.name} that trained the model ({recorded.name})"
        data = self.inputs.data
        if data is None or Path(data).resolve() == Path(train).resolve() or doc.describes(Path(data)):
            note += f"; non-members: its {int((~mask).sum())} held-out rows"
            return self._bounded(x[mask], y[mask]), self._bounded(x[~mask], y[~mask]), note
        return self._bounded(x[mask], y[mask]), self.test_split, note
