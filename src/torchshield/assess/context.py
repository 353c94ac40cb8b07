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
