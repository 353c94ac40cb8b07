"""A bundle manifest's description of its model: the architecture reference and the
preprocessing, read the same way for every manifest version.

Manifest v2 bundles carry ``architecture`` and ``preprocessing``; older bundles written by
``torchshield train`` describe a zoo model in ``metadata.model`` (nested: ``{spec, input_shape,
num_classes}``; or the flat serving form: the spec itself, ``metadata.input.shape``,
``metadata.num_classes``), from which the same records are derived."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["architecture_of", "dp_claim", "normalize_pixels", "preprocessing_of"]


def dp_claim(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The bundle's DP claim: its ``privacy`` slot when that states an epsilon. A slot holding only
    ``model_fixes`` (the architecture changes DP training made, kept when a command that trained
    without DP dropped the claim, so the weights still fit) claims nothing."""
    slot = manifest.get("privacy")
    return dict(slot) if isinstance(slot, Mapping) and slot.get("epsilon") is not None else None


def architecture_of(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The bundle's architecture reference; for bundles written before manifest v2 it is derived
    from the training metadata (``metadata.model``: nested by ``train``, or the flat form)."""
    arch = manifest.get("architecture")
    if isinstance(arch, dict):
        return dict(arch)
    meta = manifest.get("metadata") or {}
    model = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict):
        return None
    if isinstance(model.get("spec"), dict) and model.get("input_shape") and model.get("num_classes"):
        return {"kind": "zoo", "spec": dict(model["spec"]), "in_shape": list(model["input_shape"]),
                "num_classes": int(model["num_classes"])}
    shape = (meta.get("input") or {}).get("shape")
    n = meta.get("num_classes") or len(meta.get("classes") or [])
    if "type" in model and shape and n:
        spec = {k: v for k, v in model.items() if k not in ("in_features", "in_shape", "num_classes")}
        return {"kind": "zoo", "spec": spec, "in_shape": list(shape), "num_classes": int(n)}
    return None


def preprocessing_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's preprocessing; for older bundles the input spec from the training metadata."""
    pre = manifest.get("preprocessing")
    if isinstance(pre, dict):
        return dict(pre)
    meta = manifest.get("metadata") or {}
    model, data = meta.get("model") or {}, meta.get("data") or {}
    out: dict[str, Any] = {}
    shape = model.get("input_shape") if isinstance(model, dict) else None
    bounds = data.get("input_bounds") if isinstance(data, dict) else None
    flat_input = meta.get("input") if isinstance(meta.get("input"), dict) else None
    if shape:
        out["input"] = {"kind": "tensor", "shape": list(shape), "dtype": "float32",
                        "min": bounds[0] if bounds else None, "max": bounds[1] if bounds else None}
    elif flat_input:
        out["input"] = {"kind": "tensor", "dtype": "float32", **flat_input}
    n = (model.get("num_classes") if isinstance(model, dict) else None) or meta.get("num_classes")
    if n:
        out["output"] = {"kind": "logits", "num_classes": int(n), "labels": data.get("classes") or meta.get("classes")}
    return out


def normalize_pixels(x: Any, normalization: Mapping[str, Any] | None) -> Any:
    """``(x - mean) / std`` per channel of N x C x H x W pixels, as the bundle's
    ``preprocessing.normalization`` says (a ViT's image processor: ``image_mean``/``image_std``);
    ``x`` unchanged without one. The one place every caller that runs a model as it is served
    (the service, watermark embedding and verification) applies it, so that a trigger or an input
    means the same pixels to all of them."""
    norm = normalization or {}
    mean, std = norm.get("mean"), norm.get("std")
    if mean is None or std is None:
        return x
    import torch

    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
