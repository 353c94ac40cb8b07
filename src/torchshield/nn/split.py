"""Which rows of its data a ``train`` run trained on: ``<bundle>.split.json``, beside the bundle.

A membership audit needs the exact training rows, and ``train`` splits its input itself, so it
records the split: one bit per row of the source (its path, row count and SHA-256), set where the
row trained the model. The file is the data owner's: it says who is in the training set, so it
is written mode 0600 and never copied into a bundle (a DP bundle carrying it would publish
membership outright)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchshield.atomic import atomic_write_bytes
from torchshield.errors import FormatError, InputError

__all__ = ["TrainingSplit", "file_sha256", "read_split", "split_path", "write_split"]

FORMAT = "torchshield-split"


def split_path(bundle: Path) -> Path:
    """Where ``train`` records the rows that trained the model in ``bundle``."""
    bundle = Path(bundle)
    return bundle.with_name(bundle.name + ".split.json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TrainingSplit:
    source: dict[str, Any]
    trained: np.ndarray  # bool per row of the source

    def describes(self, path: Path) -> bool:
        """Is ``path`` the very file the model was trained from (same bytes)?"""
        digest = self.source.get("sha256")
        return bool(digest) and file_sha256(path) == digest


def write_split(bundle: Path, data: Any, *, private: bool) -> Path | None:
    """Write ``<bundle>.split.json`` for ``data`` (a loaded data set with ``split_rows``)."""
    if getattr(data, "split_rows", None) is None:
        return None
    train_rows, _ = data.split_rows
    mask = np.zeros(int(data.source.get("rows", 0)), dtype=bool)
    mask[np.asarray(train_rows, dtype=np.int64)] = True
    doc = {"format": FORMAT, "version": 1, "bundle": Path(bundle).name, "source": data.source,
           "train": base64.b64encode(np.packbits(mask).tobytes()).decode(), "private": private,
           "note": "row i of the source trained the model iff bit i of 'train' is set (numpy packbits). "
                   "Private to the data owner: it reveals who is in the training set."}
    path = split_path(bundle)
    atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode(), mode=0o600)
    return path


def read_split(path: Path) -> TrainingSplit:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--split: {path} does not exist", hint="train writes it beside the bundle")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT or doc.get("version") != 1:
            raise ValueError("not a split file")
        rows = int(doc["source"]["rows"])
        bits = np.frombuffer(base64.b64decode(doc["train"], validate=True), dtype=np.uint8)
        trained = np.unpackbits(bits)[:rows].astype(bool)
        if len(trained) != rows:
            raise ValueError("mask shorter than the row count")
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not a torchshield split file ({exc})") from None
    return TrainingSplit(doc["source"], trained)
