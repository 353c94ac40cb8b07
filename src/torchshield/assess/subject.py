"""The thing being assessed: a bundle's model rebuilt from its manifest, and data sets
preprocessed the way training preprocessed them.

Bundles written by ``torchshield train`` describe their architecture in ``metadata.model``
(``{"spec", "input_shape", "num_classes"}``) and their data in ``metadata.data`` (feature
names, normalisation, classes, input bounds); bundles prepared for serving use the flat form
(``metadata.model`` is the spec, ``metadata.input.shape``, ``metadata.num_classes``). Both are
read here so one report works on either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelSubject", "NotAssessable", "load_split", "open_subject", "rebuild_model"]


class NotAssessable(Exception):
    """A check cannot run on this input; the message (no secrets) becomes the skip reason."""

    def __init__(self, reason: str, action: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.action = action


@dataclass
class ModelSubject:
    module: Any  # torch.nn.Module in eval mode
    input_shape: tuple[int, ...]
    num_classes: int
    data: dict[str, Any]  # metadata.data as written by training (may be empty)

    @property
    def bounds(self) -> tuple[float, float] | None:
        b = self.data.get("input_bounds")
        return (float(b[0]), float(b[1])) if isinstance(b, list) and len(b) == 2 else None


def _architecture(meta: dict[str, Any]) -> tuple[dict[str, Any], tuple[int, ...], int]:
    from torchshield.train.bundle_meta import flat_model_metadata

    if not isinstance(meta.get("model"), dict):
        raise NotAssessable(
            "the bundle's metadata does not describe its architecture (metadata.model)",
            "train with `torchshield train`, or save with metadata={'model': spec, ...}",
        )
    flat = flat_model_metadata(meta)
    shape, n = (flat.get("input") or {}).get("shape"), flat.get("num_classes")
    if not shape or not n:
        raise NotAssessable("the bundle's metadata lacks the model's input shape or class count")
    return dict(flat["model"]), tuple(int(s) for s in shape), int(n)


def rebuild_model(manifest: dict[str, Any], tensors: dict[str, Any]) -> ModelSubject:
    """Build the architecture the manifest names, re-apply its recorded fixes (BatchNorm ->
    GroupNorm for DP training) and load the bundle's weights into it."""
    from torchshield.model.sources.fixes import apply_fixes
    from torchshield.nn.zoo import build_model

    meta = dict(manifest.get("metadata") or {})
    spec, shape, n = _architecture(meta)
    module = build_model(spec, in_shape=shape, num_classes=n)
    apply_fixes(module, (manifest.get("privacy") or {}).get("model_fixes") or [])
    try:
        module.load_state_dict(tensors)
    except RuntimeError:
        raise NotAssessable("the bundle's weights do not fit the architecture its metadata names") from None
    module.eval()
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    return ModelSubject(module, shape, n, dict(data))


def open_subject(path: Path, *, key: Any, pubkey: Path | None) -> ModelSubject:
    """A bundle that records its architecture (``model protect`` of a user's model): the ready
    module as attacks see it (logits from raw inputs in their natural shape)."""
    from torchshield.model.header import inspect
    from torchshield.model.loading import open_model, preprocessing_of
    from torchshield.robust.subject import NotApplicable, attackable, input_bounds

    pre = preprocessing_of(inspect(path).manifest)
    if (pre.get("input") or {}).get("kind") == "tokens" or (pre.get("output") or {}).get("kind") == "causal-lm":
        raise NotAssessable("not applicable: the model takes token ids, and Lp-ball attacks and membership tests "
                            "on tabular rows do not apply to text models")
    loaded = open_model(path, key=key, verify_with=pubkey)
    try:
        net, shape = attackable(loaded.module, loaded.preprocessing)
    except NotApplicable as exc:
        raise NotAssessable(f"not applicable: {exc.message}") from None
    n = (loaded.preprocessing.get("output") or {}).get("num_classes")
    if shape is None or not n:
        raise NotAssessable("the bundle does not record its input shape or class count",
                            "protect it with --input-shape (and an architecture that names num_classes)")
    bounds = input_bounds(loaded.preprocessing)
    data = {"input_bounds": list(bounds)} if bounds else {}
    return ModelSubject(net, shape, int(n), {**data, "tensor_inputs": True})


def _tensor_split(path: Path, subject: ModelSubject) -> tuple[Any, Any]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            doc = load_file(str(path))
        else:
            doc = torch.load(path, map_location="cpu", weights_only=True)
        x, y = doc["inputs"], doc["labels"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a reason to skip, said plainly
        raise NotAssessable(f"{path.name} is not a tensor file with 'inputs' and 'labels' ({type(exc).__name__})",
                            "save {'inputs': x, 'labels': y} with safetensors.torch.save_file") from None
    if tuple(x.shape[1:]) != subject.input_shape:
        raise NotAssessable(f"{path.name}: inputs have shape {tuple(x.shape[1:])} per example, the model takes "
                            f"{subject.input_shape}")
    return x.float(), y.long()


def load_split(path: Path, subject: ModelSubject) -> tuple[Any, Any]:
    """Read a CSV/Parquet table (or, for a user's own model, a tensor file with ``inputs`` in the
    model's natural shape and ``labels``) and turn it into the model's inputs and label indices."""
    if subject.data.get("tensor_inputs") or path.suffix in (".safetensors", ".pt"):
        return _tensor_split(path, subject)
    from torchshield.nn.datasets import read_table, table_to_tensors

    d = subject.data
    norm = d.get("normalization") or {}
    label, features = norm.get("label"), d.get("feature_names")
    if not label or not features:
        raise NotAssessable(
            "the bundle does not record the label and feature columns it was trained on",
            "train from a table with `torchshield train` (data: {path, label})",
        )
    df = read_table(path)
    classes = d.get("classes") or None
    x, y = table_to_tensors(
        df, label=label, features=features, normalization=norm, classes=classes, source=str(path)
    )
    return x.reshape(len(x), *subject.input_shape), y
