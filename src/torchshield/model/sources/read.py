"""What a user has -> one :class:`ModelSource`: tensors, how to rebuild the module, its
preprocessing, the files that travel with it, and any training state.

Four kinds of architecture reference, recorded as JSON in the bundle's ``architecture``::

    {"kind": "hf", "config": {...config.json...}}                    a transformers class
    {"kind": "registry", "name": "resnet18", "kwargs": {...}}         a registered / torchvision name
    {"kind": "factory", "target": "pkg.mod:fn", "kwargs": {...}}      any importable function
    {"kind": "zoo", "spec": {...}, "in_shape": [...], "num_classes": n}   torchshield's zoo
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from torchshield.errors import FormatError, InputError
from torchshield.model.bundle import TrainingState

__all__ = ["ARCH_KINDS", "ModelSource", "build_module", "read_source"]

ARCH_KINDS = ("hf", "registry", "factory", "zoo")
Scanner = Callable[[Path], None]


@dataclass
class ModelSource:
    """A model as torchshield carries it. ``tensors`` is a state dict (tied names share memory)."""

    tensors: dict[str, torch.Tensor]
    architecture: dict[str, Any] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    training_state: TrainingState | None = None
    dropped: dict[str, str] = field(default_factory=dict)  # training-state entries left out
    read: list[str] = field(default_factory=list)  # files whose bytes were read
    module: nn.Module | None = None


def build_module(architecture: Mapping[str, Any], *, allow_code: bool = False) -> nn.Module:
    """The module ``architecture`` describes, with placeholder (random) weights.

    ``allow_code`` permits importing code the reference names (``factory`` and zoo specs with a
    ``module:function`` type); callers set it only for a bundle of proven origin or a factory
    the user named."""
    kind = architecture.get("kind")
    if kind == "hf":
        from torchshield.model.sources.hf import build_hf_model

        config = architecture.get("config")
        if not isinstance(config, dict):
            raise FormatError("the architecture record lacks its config")
        return build_hf_model(config)
    if kind == "registry":
        from torchshield.model.sources.registry import build_architecture

        return build_architecture(str(architecture.get("name")), dict(architecture.get("kwargs") or {}))
    if kind == "factory":
        from torchshield.model.sources.factory import call_factory

        target = str(architecture.get("target"))
        if not allow_code:
            raise InputError(f"the model is built by {target}, code this bundle names; its origin is not proven",
                             hint="verify its signature (verify_with= / --pubkey), or allow the factory "
                                  "explicitly (allow_factories=[...] / --allow-factory)")
        return call_factory(target, dict(architecture.get("kwargs") or {}))
    if kind == "zoo":
        from torchshield.model.sources.zoo import build_zoo_model

        try:
            spec, shape, n = dict(architecture["spec"]), list(architecture["in_shape"]), int(architecture["num_classes"])
        except (KeyError, TypeError, ValueError):
            raise FormatError("the zoo architecture record needs spec, in_shape and num_classes") from None
        return build_zoo_model(spec, in_shape=shape, num_classes=n, allow_factory=allow_code)
    raise FormatError(f"unknown architecture kind {kind!r}", hint=f"expected one of {ARCH_KINDS}; upgrade torchshield")


def _fill(module: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{source}: the weights do not fit the architecture ({_first_problem(exc)})",
                         hint="check --arch/--factory and its options (e.g. num_classes)") from None


def read_source(path: str | os.PathLike[str], *, architecture: Mapping[str, Any] | None = None,
                input_spec: Mapping[str, Any] | None = None, keep_training_state: bool = False,
                key: Any = None, scan: Scanner | None = None, allow_code: bool = True) -> ModelSource:
    """Read a Hugging Face directory or a checkpoint file (plus an optional architecture
    reference for it) into a :class:`ModelSource`. ``scan(path)`` is called on every file
    before its bytes are deserialised and raises to refuse it."""
    from torchshield.model.checkpoint import read_training_checkpoint
    from torchshield.model.sources.hf import is_hf_dir
    from torchshield.model.sources.state import describe_dropped, flatten_state

    p = Path(path)
    if p.is_dir():
        if not is_hf_dir(p):
            raise InputError(f"{p} is a directory without config.json",
                             hint="pass a Hugging Face model directory (save_pretrained) or a model file")
        if architecture is not None:
            raise InputError("--arch/--factory apply to a weights file; a model directory names its own architecture")
        src = _read_hf(p, scan)
    elif architecture is None and _is_bundle(p):
        src = _read_bundle(p, key=key, keep_training_state=keep_training_state)
    else:
        if scan is not None:
            scan(p)
        tensors, rest = read_training_checkpoint(p, key=key, scan_first=False)
        src = ModelSource(tensors, read=[p.name])
        if rest:
            if keep_training_state:
                src.training_state = flatten_state(rest)
            else:
                src.dropped = describe_dropped(rest)
        if architecture is not None:
            module = build_module(architecture, allow_code=allow_code)
            _fill(module, tensors, str(p))
            src.architecture, src.module = dict(architecture), module.eval()
            src.tensors = dict(module.state_dict())
    if input_spec:
        src.preprocessing["input"] = {**src.preprocessing.get("input", {}), **dict(input_spec)}
    if src.module is not None and "output" not in src.preprocessing:
        src.preprocessing.update(_probe_output(src.module, src.preprocessing.get("input") or {}))
    return src


def _probe_output(module: nn.Module, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The output a model gives for one zero example of its declared shape: ``(1, C)`` logits
    tell the class count. Models that do not run on it are described no further."""
    shape = spec.get("shape")
    if not shape or str(spec.get("dtype", "float32")).startswith(("int", "uint")):
        return {}
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(1, *(int(s) for s in shape)))
    except Exception:  # noqa: BLE001 - a model that needs other inputs: nothing to learn here
        return {}
    logits = getattr(out, "logits", out)
    if isinstance(logits, torch.Tensor) and logits.ndim == 2:
        return {"output": {"kind": "logits", "num_classes": int(logits.shape[1]), "labels": None}}
    return {}


def _is_bundle(p: Path) -> bool:
    from torchshield.model.header import is_bundle

    return is_bundle(p)


def _read_bundle(p: Path, *, key: Any, keep_training_state: bool) -> ModelSource:
    """A bundle re-protected (to encrypt or sign it, or under another key) keeps what it carries."""
    from torchshield.model.bundle import load_contents
    from torchshield.model.sources.records import architecture_of, preprocessing_of

    contents = load_contents(p, key=key)
    src = ModelSource(dict(contents.weights), architecture_of(contents.manifest), preprocessing_of(contents.manifest),
                      dict(contents.files), read=[p.name])
    if contents.training_state is not None:
        if keep_training_state:
            src.training_state = contents.training_state
        else:
            src.dropped = {k: "kept in the source bundle" for k in contents.training_state.values}
    return src


def _read_hf(p: Path, scan: Scanner | None) -> ModelSource:
    from torchshield.model.checkpoint import read_checkpoint
    from torchshield.model.sources.hf import (
        carried_files,
        hf_model_from_tensors,
        hf_preprocessing,
        hf_weight_files,
        load_hf_weights,
        read_hf_config,
    )

    config = read_hf_config(p)
    files = hf_weight_files(p)
    if scan is not None:
        for f in files:
            scan(f)
    tensors = load_hf_weights(files, lambda f: read_checkpoint(f, scan_first=False))
    module = hf_model_from_tensors(config, tensors, source=str(p))
    carried = carried_files(p)
    import transformers

    # module.config: hf_model_from_tensors (just above) builds a transformers PreTrainedModel
    arch = {"kind": "hf", "class": config["architectures"][0], "config": cast(Any, module).config.to_dict(),
            "transformers": transformers.__version__}
    return ModelSource(dict(module.state_dict()), arch, hf_preprocessing(config, carried), carried,
                       read=["config.json", *(f.name for f in files), *carried], module=module)


def _first_problem(exc: Exception) -> str:
    """torch's load_state_dict message without its header line: the first mismatch it names."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines[1:]), lines[0] if lines else type(exc).__name__)
    return detail[:300]
