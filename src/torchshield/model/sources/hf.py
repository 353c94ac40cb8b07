"""Hugging Face model directories: ``config.json`` + weights (``model.safetensors``,
``pytorch_model.bin``, or shards listed in an index file) + tokenizer / image-processor files.

Only classes exported by ``transformers`` itself are built (``config.architectures[0]``); no
``trust_remote_code``, no ``auto_map``, no download: a directory whose config points at custom
code is refused. Weights are read by torchshield (safetensors, or torch files after the scanner
and with ``weights_only=True``), never by ``from_pretrained``.

Rebuilding goes through ``from_pretrained(None, config=..., state_dict=...)``: transformers maps
legacy checkpoint names (v5 renames many), skips the random initialisation and ties the
embeddings, and the parameters are the given tensors (no copy)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeGuard, cast

import torch
from torch import nn

from torchshield.errors import FormatError, InputError, MissingDependencyError

__all__ = ["CARRIED_FILES", "build_hf_model", "carried_files", "export_hf_dir", "hf_model_from_tensors", "hf_preprocessing",
           "hf_weight_files", "is_hf_dir", "load_hf_weights", "read_hf_config", "transformers_module"]

# Files a model directory may hold besides config and weights that serving and export need.
CARRIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                 "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                 "tokenizer.model", "preprocessor_config.json", "image_processor_config.json",
                 "generation_config.json", "chat_template.jinja", "chat_template.json")
_MAX_CARRIED = 64 << 20
_INDEXES = (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json",
                                                                     "pytorch_model.bin"))


def transformers_module() -> Any:
    """``transformers``, or a clear error naming the install line."""
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "hf") from None
    return transformers


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def read_hf_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path / 'config.json'} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise FormatError(f"{path / 'config.json'} is not a JSON object")
    if config.get("auto_map"):
        raise InputError(f"{path / 'config.json'} points at custom model code (auto_map)",
                         hint="torchshield builds only classes shipped in transformers; use --factory for your own")
    archs = config.get("architectures")
    if not (isinstance(archs, list) and archs and isinstance(archs[0], str)):
        raise FormatError(f"{path / 'config.json'} does not name its architecture ('architectures')",
                          hint="save the model with model.save_pretrained(DIR)")
    return config


def _plain_name(name: Any, where: Path) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise FormatError(f"{where} names shard {name!r}, which is not a file in the same directory")
    return name


def hf_weight_files(path: Path) -> list[Path]:
    """The weight files of directory ``path``, shards in index order (safetensors preferred)."""
    for index_name, single in _INDEXES:
        index = path / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                shards = sorted({_plain_name(v, index) for v in weight_map.values()})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise FormatError(f"{index} is not a valid shard index (no 'weight_map')") from None
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise InputError(f"{index} lists shard {missing[0]}, which is missing from {path}")
            return [path / s for s in shards]
        if (path / single).is_file():
            return [path / single]
    raise InputError(f"{path} holds no model weights",
                     hint="expected model.safetensors, pytorch_model.bin, or a sharded index of them")


def load_hf_weights(files: list[Path], read: Callable[[Path], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        part = read(f)
        clash = set(part) & set(tensors)
        if clash:
            raise FormatError(f"{f} repeats tensor {sorted(clash)[0]!r} of another shard")
        tensors.update(part)
    return tensors


def carried_files(path: Path) -> dict[str, bytes]:
    out = {}
    for name in CARRIED_FILES:
        f = path / name
        if f.is_file():
            if f.stat().st_size > _MAX_CARRIED:
                raise InputError(f"{f} is larger than {_MAX_CARRIED >> 20} MB", hint="is it really a tokenizer file?")
            out[name] = f.read_bytes()
    return out


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """transformers draws a progress bar while it loads weights; ours is the CLI's."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _is_model_class(cls: Any, transformers: Any) -> TypeGuard[type[Any]]:
    return isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)


def _model_class(config: dict[str, Any]) -> tuple[Any, Any]:
    transformers = transformers_module()
    name = config["architectures"][0]
    cls = getattr(transformers, name, None)
    if not _is_model_class(cls, transformers):
        raise InputError(f"architecture {name!r} is not a model class of transformers {transformers.__version__}",
                         hint="upgrade transformers, or use --factory for a custom model")
    try:
        cfg = cls.config_class.from_dict(dict(config))
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError(f"config of {name} cannot be read by transformers ({exc})") from None
    return cls, cfg


def build_hf_model(config: dict[str, Any]) -> nn.Module:
    """The architecture ``config`` names, randomly initialised (for tests and shape checks)."""
    cls, cfg = _model_class(config)
    return cls(cfg)


def hf_model_from_tensors(config: dict[str, Any], tensors: dict[str, torch.Tensor], *, source: str) -> nn.Module:
    """The model ``config`` names holding ``tensors`` (no copy: parameters are the tensors).

    transformers itself maps checkpoint names to module names (v5 renames legacy keys), skips
    the random initialisation and ties what the config ties; torchshield checks that every
    parameter came from ``tensors``: none may be left at a random initial value."""
    cls, cfg = _model_class(config)
    try:
        with _quiet_progress():
            model, info = cls.from_pretrained(None, config=cfg, state_dict=tensors, output_loading_info=True)
    except (RuntimeError, ValueError) as exc:  # size mismatches, malformed tensors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise FormatError(f"{source}: the weights do not fit {cls.__name__} ({first})",
                          hint="check that config.json belongs to these weights") from None
    problems = [(what, keys) for what in ("missing_keys", "mismatched_keys", "unexpected_keys")
                if (keys := [k for k in info.get(what) or [] if not str(k).endswith("position_ids")])]
    if problems:
        what, keys = problems[0]
        raise FormatError(f"{source}: the weights do not fit {cls.__name__} ({what.replace('_', ' ')}: "
                          f"{[str(k) for k in keys[:3]]})", hint="check that config.json belongs to these weights")
    return model.eval()


def export_hf_dir(model: nn.Module, files: dict[str, bytes], out: Path) -> list[str]:
    """Write ``model`` (a transformers model) and its carried files as a directory
    ``from_pretrained`` reads; returns the file names written."""
    out.mkdir(parents=True, exist_ok=True)
    with _quiet_progress():
        cast(Any, model).save_pretrained(str(out))  # a transformers model, as the docstring requires
    for name, data in files.items():
        if name in CARRIED_FILES:
            (out / name).write_bytes(data)
    return sorted(os.listdir(out))


def hf_preprocessing(config: dict[str, Any], files: dict[str, bytes]) -> dict[str, Any]:
    """Input spec, normalisation, tokenizer and output description of an HF model."""
    arch = config["architectures"][0]
    vision = "pixel_values" if "num_channels" in config and "image_size" in config else None
    pre: dict[str, Any] = {}
    if vision:
        size = config["image_size"]
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        pre["input"] = {"kind": "image", "name": "pixel_values", "shape": [int(config["num_channels"]), h, w],
                        "dtype": "float32", "layout": "NCHW", "min": 0.0, "max": 1.0}
        proc = _json_file(files.get("preprocessor_config.json"))
        if proc.get("image_mean") is not None and proc.get("image_std") is not None:
            pre["normalization"] = {"mean": [float(v) for v in proc["image_mean"]],
                                    "std": [float(v) for v in proc["image_std"]],
                                    "rescale_factor": float(proc.get("rescale_factor", 1 / 255))}
        else:  # no processor: the model's own input range is unknown
            pre["input"].update(min=None, max=None)
    elif isinstance(config.get("vocab_size"), int):
        max_len = config.get("max_position_embeddings") or config.get("n_positions") or config.get("n_ctx")
        pre["input"] = {"kind": "tokens", "names": ["input_ids", "attention_mask"], "dtype": "int64",
                        "min": 0, "max": int(config["vocab_size"]) - 1,
                        "max_length": int(max_len) if max_len else None}
    tok = [n for n in files if n not in ("preprocessor_config.json", "image_processor_config.json",
                                         "generation_config.json")]
    if tok:
        pre["tokenizer"] = {"files": sorted(tok)}
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        pre["output"] = {"kind": "causal-lm", "vocab_size": int(config.get("vocab_size") or 0)}
    elif arch.endswith(("ForSequenceClassification", "ForImageClassification", "ForTokenClassification")):
        labels = config.get("id2label") or {}
        n = int(config.get("num_labels") or len(labels) or 2)
        pre["output"] = {"kind": "logits", "num_classes": n,
                         "labels": [str(labels.get(str(i), labels.get(i, i))) for i in range(n)] if labels else None}
    return pre


def _json_file(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
