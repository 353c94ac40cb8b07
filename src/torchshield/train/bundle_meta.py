"""One reading of a bundle's model description, whichever layout wrote it.

``torchshield train`` nests the description (``model: {spec, input_shape, num_classes}`` and
``data: {input_bounds, classes, ...}``); bundles prepared by hand for serving use the flat form
(``model`` is the zoo spec, ``input: {shape, dtype, min, max}``, ``num_classes``/``classes``).
Serving and the assessment report both read the flat form through ``flat_model_metadata``."""

from __future__ import annotations

from typing import Any

__all__ = ["flat_model_metadata"]

_BUILD_ARGS = {"in_features", "in_shape", "num_classes"}


def flat_model_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` in the flat layout: ``model`` is a zoo spec (no build arguments in it), with
    ``input`` and ``num_classes``/``classes`` at the top where the training layout has them.
    Inputs are in the model's own space (after ``data.normalization``). Keys already present win."""
    out = dict(meta)
    model = meta.get("model")
    if not isinstance(model, dict):
        return out
    if isinstance(model.get("spec"), dict):
        data_meta = meta.get("data")
        data = data_meta if isinstance(data_meta, dict) else {}
        out["model"] = dict(model["spec"])
        out.setdefault("num_classes", model.get("num_classes") or data.get("num_classes"))
        if "classes" not in out and isinstance(data.get("classes"), list):
            out["classes"] = data["classes"]
        bounds = data.get("input_bounds") or [None, None]
        if "input" not in out and model.get("input_shape"):
            out["input"] = {"shape": list(model["input_shape"]), "dtype": "float32"}
            if None not in bounds:
                out["input"].update(min=float(bounds[0]), max=float(bounds[1]))
    else:
        out["model"] = {k: v for k, v in model.items() if k not in _BUILD_ARGS}
    return out
