"""The training run config (``torchshield train config.yaml``), validated before any work starts.

    model: {type: mlp, hidden: [256, 256]}      # or cnn, or package.module:factory
    data: sklearn:digits                        # or {path: t.parquet, label: outcome, ...}
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
    epochs: 10
    batch_size: 256
    seed: 0
    output: {bundle: model.tsb, key_file: master.key, signing_key: signer.key}
    privacy: {epsilon: 3, delta: 1e-5, max_grad_norm: 1.0, accountant: rdp}
    adversarial: {method: pgd, eps: 0.1}        # torchshield.robust.training
    augment: {gaussian_noise: 0.25}             # torchshield.robust.training
    watermark: {...}                            # torchshield.model.watermark.training

    task: sequence-classification               # or causal-lm: fine-tune a Hugging Face model on text
    model: {path: bert.tsb}                     #   (train.finetune; data: {path, text, label, ...})
    adapter: {type: lora, r: 8}                 #   LoRA adapters only (peft)

Relative paths (data, output) are relative to the config file's folder. Unknown keys are
errors naming the key: a typo like ``privacyy:`` must never silently train without privacy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchshield.errors import FormatError, InputError

__all__ = ["OPTIMIZERS", "TASKS", "TOP_LEVEL_KEYS", "OutputConfig", "TrainConfig", "build_optimizer", "load_config"]

TOP_LEVEL_KEYS = ("adapter", "adversarial", "augment", "batch_size", "data", "description", "device", "epochs",
                  "model", "name", "optimizer", "output", "privacy", "seed", "task", "watermark")
TASKS = ("tabular", "sequence-classification", "causal-lm")  # the last two: train.finetune
OPTIMIZERS = ("adam", "adamw", "sgd")
_OUTPUT_KEYS = ("bundle", "key_file", "overwrite", "signing_key")
_PRIVACY_KEYS = ("accountant", "dataset_size", "delta", "epsilon", "grad_sample_mode", "insecure_seed_for_tests", "max_grad_norm",
                 "max_physical_batch_size", "noise_multiplier", "secure_mode", "seed")


@dataclass(frozen=True)
class OutputConfig:
    bundle: Path
    key_file: Path | None = None  # encrypts the bundle's tensors
    signing_key: Path | None = None  # Ed25519 key that signs the bundle
    overwrite: bool = False


@dataclass(frozen=True)
class TrainConfig:
    model: dict[str, Any]
    data: str | dict[str, Any]
    optimizer: dict[str, Any]
    epochs: int
    batch_size: int
    seed: int
    output: OutputConfig
    privacy: dict[str, Any] | None = None
    adversarial: dict[str, Any] | None = None
    augment: dict[str, Any] | None = None
    watermark: dict[str, Any] | None = None
    device: str = "cpu"
    task: str = "tabular"
    adapter: dict[str, Any] | None = None
    name: str = ""
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, base: Path | None = None, source: Path | None = None) -> TrainConfig:
        if not isinstance(doc, dict):
            raise InputError(f"{source or 'config'}: expected a mapping at the top level")
        unknown = sorted(set(doc) - set(TOP_LEVEL_KEYS))
        if unknown:
            raise InputError(f"{source or 'config'}: unknown key {unknown[0]!r}",
                             hint=f"allowed keys: {', '.join(TOP_LEVEL_KEYS)}")
        for required in ("model", "data", "output"):
            if required not in doc:
                raise InputError(f"{source or 'config'}: missing required key {required!r}")
        base = base or Path.cwd()
        data = _resolve_data(doc["data"], base)
        task = _task(doc, base)
        for section in ("model", "optimizer", "privacy", "adversarial", "augment", "watermark", "adapter"):
            value = doc.get(section)
            if section == "model" and task != "tabular" and isinstance(value, str):
                continue  # model: bert.tsb
            if value is not None and not isinstance(value, dict):
                raise InputError(f"{section}: expected a mapping, got {type(value).__name__}")
        if doc.get("adversarial") and doc.get("augment"):
            raise InputError("give adversarial: or augment:, not both", hint="one training loss per run")
        privacy = doc.get("privacy")
        if privacy is not None:
            bad = sorted(set(privacy) - set(_PRIVACY_KEYS))
            if bad:
                raise InputError(f"privacy: unknown key {bad[0]!r}", hint=f"allowed: {', '.join(_PRIVACY_KEYS)}")
            if "epsilon" not in privacy:
                raise InputError("privacy.epsilon is required (the budget to train to)")
            privacy = {k: (_float(v, f"privacy.{k}") if k in _PRIVACY_FLOATS and v is not None else v)
                       for k, v in privacy.items()}
        return cls(
            model=_model(doc["model"], base) if task != "tabular" else dict(doc["model"]),
            data=data,
            optimizer=_optimizer(doc.get("optimizer") or {}),
            epochs=_positive_int(doc.get("epochs", 10), "epochs"),
            batch_size=_positive_int(doc.get("batch_size", 64), "batch_size"),
            seed=_int(doc.get("seed", 0), "seed"),
            output=_output(doc["output"], base),
            privacy=dict(privacy) if privacy is not None else None,
            adversarial=doc.get("adversarial"),
            augment=doc.get("augment"),
            watermark=doc.get("watermark"),
            device=str(doc.get("device", "cpu")),
            task=task,
            adapter=doc.get("adapter"),
            name=str(doc.get("name", source.stem if source else "")),
            source=source,
            raw={**doc, **({"privacy": dict(privacy)} if privacy is not None else {})},
        )


def _task(doc: dict[str, Any], base: Path) -> str:
    task = doc.get("task", "tabular")
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}",
                         hint="sequence-classification: a text column; causal-lm: a text file")
    if task == "tabular":
        if doc.get("adapter") is not None:
            raise InputError("adapter: needs a fine-tuning task (task: sequence-classification or causal-lm)",
                             hint="remove adapter:, or set task:")
        return task
    for section in ("adversarial", "augment", "watermark"):
        if doc.get(section):
            raise InputError(f"{section}: is not supported with task: {task}", hint=f"remove {section}:")
    return str(task)


_MODEL_KEYS = ("path", "key_file", "pubkey", "drop_privacy_claim")


def _model(model: Any, base: Path) -> dict[str, Any]:
    """``model:`` of a fine-tuning task: the input model (a .tsb or a Hugging Face directory)."""
    if isinstance(model, str):
        model = {"path": model}
    if not isinstance(model, dict) or not model.get("path"):
        raise InputError("model.path: name the model to fine-tune",
                         hint="a .tsb from 'torchshield model protect DIR', or a Hugging Face model directory")
    bad = sorted(set(model) - set(_MODEL_KEYS))
    if bad:
        raise InputError(f"model: unknown key {bad[0]!r} for a fine-tuning task", hint=f"allowed: {', '.join(_MODEL_KEYS)}")
    out = dict(model)
    for key in ("path", "key_file", "pubkey"):
        if out.get(key):
            out[key] = str(base / str(out[key]))
    return out


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML training config."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: config file not found")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise FormatError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return TrainConfig.from_dict(doc or {}, base=p.resolve().parent, source=p)


_PRIVACY_FLOATS = ("delta", "epsilon", "max_grad_norm", "noise_multiplier")


def _float(value: Any, name: str) -> float:
    """A number; YAML 1.1 reads ``1e-5`` as a string, so numeric strings are accepted."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return value


def _positive_int(value: Any, name: str) -> int:
    if _int(value, name) < 1:
        raise InputError(f"{name} must be >= 1, got {value}")
    return value


def _optimizer(section: dict[str, Any]) -> dict[str, Any]:
    opt = {"name": "sgd", "lr": 0.05, **section}
    opt["name"] = str(opt["name"]).lower()
    if opt["name"] not in OPTIMIZERS:
        raise InputError(f"optimizer.name must be one of {OPTIMIZERS}, got {opt['name']!r}")
    for key in ("lr", "momentum", "weight_decay"):
        if key in opt:
            opt[key] = _float(opt[key], f"optimizer.{key}")
    if not opt["lr"] > 0:
        raise InputError(f"optimizer.lr must be a number > 0, got {opt['lr']!r}")
    return opt


def _resolve_data(data: Any, base: Path) -> str | dict[str, Any]:
    if isinstance(data, str):
        return data if data.startswith("sklearn:") else {"path": str(base / data)}
    if not isinstance(data, dict):
        raise InputError(f"data: expected a name or a mapping, got {type(data).__name__}")
    data = dict(data)
    if "path" in data:
        data["path"] = str(base / str(data["path"]))
    return data


def _output(section: Any, base: Path) -> OutputConfig:
    if isinstance(section, str):
        section = {"bundle": section}
    if not isinstance(section, dict) or "bundle" not in section:
        raise InputError("output.bundle: name the .tsb file to write")
    bad = sorted(set(section) - set(_OUTPUT_KEYS))
    if bad:
        raise InputError(f"output: unknown key {bad[0]!r}", hint=f"allowed: {', '.join(_OUTPUT_KEYS)}")

    def path(key: str) -> Path | None:
        return base / str(section[key]) if section.get(key) else None

    return OutputConfig(bundle=base / str(section["bundle"]), key_file=path("key_file"),
                        signing_key=path("signing_key"), overwrite=bool(section.get("overwrite", False)))


def build_optimizer(params: Any, spec: dict[str, Any]) -> Any:
    """The torch optimizer a validated ``optimizer:`` section names."""
    import torch

    spec = dict(spec)
    name = spec.pop("name")
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    try:
        return cls(params, **spec)
    except TypeError as exc:
        raise InputError(f"optimizer: {exc}", hint=f"check the options of torch.optim.{cls.__name__}") from None
