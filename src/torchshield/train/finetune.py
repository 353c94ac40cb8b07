"""Fine-tuning a Hugging Face model on text, with or without DP: ``task: sequence-classification``
or ``task: causal-lm`` in a ``torchshield train`` config, optionally ``adapter: {type: lora}``.

The model is a ``.tsb`` that ``torchshield model protect`` wrote from a Hugging Face directory, or
such a directory itself; its own ``tokenizer.json`` tokenises the data (``train.text``). Under
``privacy:`` the run is the same DP-SGD as ``train`` on tables: the same noise calibration to the
(epsilon, delta) target, the same accountant, the same privacy slot, the same private-size release,
with the unit of privacy (one row, one block of tokens, one line) written into the claim.

Adapters. ``adapter: {type: lora, r, alpha, dropout, target_modules, modules_to_save}`` wraps the
model with ``peft``: only the low-rank matrices (and, for classification, the new head, peft's
``modules_to_save``) require gradients, so the DP engine clips and noises only those and counts
only them in each example's norm (frozen parameters are neither clipped nor counted,
``train.per_example``). On save the adapters are merged into the base weights (``W + B A *
alpha / r``, post-processing of the DP release): the bundle holds an ordinary model of the base
architecture that ``load_model`` rebuilds with no peft installed, and its manifest records that
the training was adapter-only (``metadata.adapter`` and ``privacy.trainable``).

A base bundle that carries a DP claim of its own keeps it under DP fine-tuning (the new release is
post-processing of the old model plus a DP release on the new data; the record lists both). A
fine-tune *without* DP of such a model is refused unless ``model.drop_privacy_claim: true``: the
claim about the base's data still holds for the base, but a bundle trained without DP must not
look private; the output records the dropped claim under ``provenance.dp_claim_dropped``."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from torchshield._version import __version__
from torchshield.errors import InputError, MissingDependencyError
from torchshield.nn.loop import EpochEnd, ProgressFactory, fit
from torchshield.nn.split import write_split
from torchshield.train.config import TrainConfig, build_optimizer
from torchshield.train.result import RunResult, bundle_key, public_size, refuse_existing_outputs
from torchshield.train.text import IGNORE, TextData, Tokenizer, load_text_data, tokenizer_from_files

__all__ = ["MODEL_KEYS", "ADAPTER_KEYS", "BaseModel", "causal_lm_loss", "classification_loss", "finetune",
           "load_base_model"]

MODEL_KEYS = ("path", "key_file", "pubkey", "drop_privacy_claim")
ADAPTER_KEYS = ("type", "r", "alpha", "dropout", "target_modules", "modules_to_save")
_HEADS = {"sequence-classification": ("ForSequenceClassification",), "causal-lm": ("ForCausalLM", "LMHeadModel")}


@dataclass
class BaseModel:
    """The model to fine-tune, as the input carried it."""

    module: nn.Module
    architecture: dict[str, Any]
    files: dict[str, bytes]
    privacy: dict[str, Any] | None  # the input bundle's own DP claim, if any
    name: str
    sha256: str | None  # of the input bundle file (a directory: None)


def load_base_model(spec: dict[str, Any]) -> BaseModel:
    """``model: {path, key_file, pubkey}``: a ``.tsb`` of a Hugging Face model, or the directory."""
    path = Path(spec["path"])
    if not path.exists():
        raise InputError(f"model.path: {path} does not exist", hint="give a .tsb from 'torchshield model protect' or "
                                                                 "a Hugging Face model directory")
    if path.is_dir():
        from torchshield.model.loading import _scan_source
        from torchshield.model.sources.read import read_source

        _scan_source(path)  # pickled weight files are scanned before they are read
        src = read_source(path)
        assert src.module is not None and src.architecture is not None
        return BaseModel(src.module, src.architecture, dict(src.files), None, path.name, None)
    from torchshield.model.loading import open_model
    from torchshield.model.sources.records import dp_claim
    from torchshield.nn.split import file_sha256

    key = None
    if spec.get("key_file"):
        from torchshield.crypto.keys import read_key_file

        key = read_key_file(spec["key_file"])
    loaded = open_model(path, key=key, verify_with=spec.get("pubkey"), writable=True)
    if loaded.architecture.get("kind") != "hf":
        raise InputError(f"model.path: {path} holds a {loaded.architecture.get('kind')} model, not a Hugging Face one",
                         hint="fine-tuning on text needs a transformers model: protect its directory with "
                              "'torchshield model protect DIR -o model.tsb'")
    return BaseModel(loaded.module, loaded.architecture, dict(loaded.files), dp_claim(loaded.manifest),
                     path.name, file_sha256(path))


def _check_head(task: str, base: BaseModel, data_classes: int | None) -> None:
    arch = str(base.architecture.get("class") or (base.architecture.get("config") or {}).get("architectures",
                                                                                             ["?"])[0])
    if not arch.endswith(_HEADS[task]):
        want = " or ".join(f"*{h}" for h in _HEADS[task])
        raise InputError(f"model.path: {base.name} is a {arch}, task {task} needs a {want} model",
                         hint="save the model with the head for this task (e.g. AutoModelForSequenceClassification"
                              ".from_config) and protect it")
    if data_classes is not None:
        n = int(getattr(getattr(base.module, "config", None), "num_labels", 0))
        if n != data_classes:
            raise InputError(f"data.classes: {data_classes} classes, but {base.name} has {n} outputs (num_labels)",
                             hint=f"declare {n} classes, or give a model built with num_labels={data_classes}")


# -- losses: per-example, as DP-SGD requires -------------------------------------------------------

def classification_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example; ``x`` is ``[B, 2, L]`` (ids, attention mask)."""
    logits = model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
    return nn.functional.cross_entropy(logits, y, reduction="none")


def causal_lm_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy per example over its real tokens (padding: target -100, skipped)."""
    logits = model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits[:, :-1]
    targets = y[:, 1:]
    tokens = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                         ignore_index=IGNORE, reduction="none").view(targets.shape)
    return tokens.sum(1) / (targets != IGNORE).sum(1).clamp(min=1)


@torch.no_grad()
def _evaluate(model: nn.Module, task: str, split: Any, batch: int = 256) -> dict[str, float] | None:
    if not len(split):
        return None
    was = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(split), batch):
        x, y = split.x[start:start + batch], split.y[start:start + batch]
        logits = model(input_ids=x[:, 0], attention_mask=x[:, 1]).logits
        if task == "sequence-classification":
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += len(y)
        else:
            targets = y[:, 1:]
            flat = logits[:, :-1].reshape(-1, logits.shape[-1])
            loss_sum += float(nn.functional.cross_entropy(flat, targets.reshape(-1), ignore_index=IGNORE,
                                                          reduction="sum"))
            real = targets != IGNORE
            correct += int(((logits[:, :-1].argmax(-1) == targets) & real).sum())
            count += int(real.sum())
    model.train(was)
    out = {"accuracy": correct / max(count, 1), "loss": loss_sum / max(count, 1), "examples": len(split)}
    if task == "causal-lm":
        out["perplexity"] = float(torch.tensor(out["loss"]).exp())
        out["tokens"] = count
    return out


# -- adapters --------------------------------------------------------------------------------------

def _adapter(model: nn.Module, spec: dict[str, Any], task: str) -> tuple[nn.Module, dict[str, Any]]:
    bad = sorted(set(spec) - set(ADAPTER_KEYS))
    if bad:
        raise InputError(f"adapter: unknown key {bad[0]!r}", hint=f"allowed: {', '.join(ADAPTER_KEYS)}")
    if spec.get("type", "lora") != "lora":
        raise InputError(f"adapter.type must be lora, got {spec.get('type')!r}")
    try:
        import peft
    except ImportError:
        raise MissingDependencyError("peft", "hf") from None
    r, alpha = spec.get("r", 8), spec.get("alpha", 2 * spec.get("r", 8))
    for name, value in (("r", r), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise InputError(f"adapter.{name} must be a number > 0, got {value!r}")
    if not isinstance(r, int):
        raise InputError(f"adapter.r must be a whole number, got {r!r}")
    dropout = float(spec.get("dropout", 0.0))
    targets = spec.get("target_modules")
    if targets is not None and not (isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets)):
        raise InputError("adapter.target_modules must be a list of module names, e.g. [query, value]")
    keep = spec.get("modules_to_save")
    if keep is not None and not (isinstance(keep, list) and all(isinstance(k, str) for k in keep)):
        raise InputError("adapter.modules_to_save must be a list of module names ([] freezes the head too)")
    freeze_head = task == "sequence-classification" and keep == []  # peft adds the head for SEQ_CLS itself
    task_type = "SEQ_CLS" if task == "sequence-classification" else "CAUSAL_LM"
    config = peft.LoraConfig(task_type=task_type, r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=targets, modules_to_save=None if keep is None else list(keep))
    try:
        with warnings.catch_warnings():  # "fan_in_fan_out ... setting it to True" (GPT-2), deprecations
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = peft.get_peft_model(model, config)
    except ValueError as exc:
        raise InputError(f"adapter: {str(exc).splitlines()[0][:200]}",
                         hint="name existing Linear layers in adapter.target_modules (e.g. [query, value] for "
                              "BERT, [c_attn] for GPT-2)") from None
    if freeze_head:
        for name, p in wrapped.named_parameters():
            if "lora_" not in name:
                p.requires_grad_(False)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    head = sorted({n.split(".modules_to_save.")[0].replace("base_model.model.", "")
                   for n, p in wrapped.named_parameters() if p.requires_grad and ".modules_to_save." in n})
    record = {"type": "lora", "r": r, "alpha": alpha, "dropout": dropout,
              "target_modules": sorted(getattr(wrapped.peft_config["default"], "target_modules", None) or []),
              "also_trained": head, "trainable_parameters": trainable, "base_parameters": total,
              "saved_as": "merged into the base weights (W + B A * alpha / r); the bundle is an ordinary "
                          "model of the base architecture",
              "peft": peft.__version__}
    return wrapped, record


def _trainable(adapter: dict[str, Any] | None) -> str:
    """What the privacy slot says DP-SGD trained."""
    if adapter is None:
        return "all parameters"
    also = "".join(f" + {name}" for name in adapter["also_trained"])
    return f"adapters only (LoRA{also}); the frozen base weights took no gradient"


def _merge(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        merged: nn.Module = model.merge_and_unload()  # type: ignore[operator]
    return merged


# -- the run ---------------------------------------------------------------------------------------

def finetune(cfg: TrainConfig, *, progress: ProgressFactory | None = None,
             on_epoch: Callable[[EpochEnd], Any] | None = None) -> RunResult:
    """Run a ``task:`` config (module docstring)."""
    torch.manual_seed(cfg.seed)
    refuse_existing_outputs(cfg)
    private = cfg.privacy is not None
    base = load_base_model(cfg.model)
    messages: list[str] = []
    dropped = None
    if base.privacy and not private:
        if cfg.model.get("drop_privacy_claim") is not True:
            raise InputError(f"model.path: {base.name} carries a DP claim (epsilon {base.privacy.get('epsilon')}), "
                             "and this run has no privacy: section, so its output would not be private",
                             hint="add a privacy: section (DP fine-tuning), or set model.drop_privacy_claim: true "
                                  "to fine-tune without DP (the output then carries no claim)")
        dropped = {"by": "train", "epsilon": base.privacy.get("epsilon"), "delta": base.privacy.get("delta")}
        messages.append(f"the base model's DP claim (epsilon {base.privacy.get('epsilon')}) was dropped: this run "
                        "trains without DP, so the output carries no claim")
    config = dict(base.architecture.get("config") or {})
    tok: Tokenizer = tokenizer_from_files(base.files, model=base.name, config=config)
    data: TextData = load_text_data(cfg.task, cfg.data, tok, config, model=base.name, private=private)
    _check_head(cfg.task, base, data.num_classes if cfg.task == "sequence-classification" else None)
    hf_config: Any = getattr(base.module, "config")  # noqa: B009 - a transformers model
    if getattr(hf_config, "pad_token_id", None) is None:  # decoder classifiers find each text's end by it
        hf_config.pad_token_id = tok.pad_id
    model, adapter = base.module, None
    if cfg.adapter is not None:
        model, adapter = _adapter(model, dict(cfg.adapter), cfg.task)
    model.train()
    loss_fn = classification_loss if cfg.task == "sequence-classification" else causal_lm_loss
    engine = None
    releases: list[dict[str, Any]] = []
    if cfg.privacy is not None:
        from torchshield.train.dp import PrivacyConfig, make_private

        settings = dict(cfg.privacy)
        size, releases = public_size(settings, data, cfg.batch_size)
        settings["epsilon"] = settings["epsilon"] - sum(r["epsilon"] for r in releases)
        engine = make_private(model, config=PrivacyConfig(**settings), dataset_size=size,
                              batch_size=cfg.batch_size, epochs=cfg.epochs)
        model = engine.model
        messages += engine.messages
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optimizer)
    loader = data.train.loader(cfg.batch_size, shuffle=True, seed=cfg.seed)
    try:
        result = fit(model, loader, epochs=cfg.epochs, optimizer=optimizer, loss_fn=loss_fn,
                     callbacks=[on_epoch] if on_epoch else [], device=cfg.device, progress=progress, privacy=engine)
    finally:
        if engine is not None:
            engine.close()
    model.to("cpu")
    metrics = {"train": _evaluate(model, cfg.task, data.train), "test": _evaluate(model, cfg.task, data.test)}
    privacy = None
    if engine is not None:
        privacy = engine.record()
        privacy["epsilon"] += sum(r["epsilon"] for r in releases)
        privacy["target_epsilon"] = float(cfg.privacy["epsilon"])  # type: ignore[index]
        privacy["releases"] = releases
        privacy["neighbouring"] = f"add/remove {data.unit}"
        privacy["trainable"] = _trainable(adapter)
        if base.privacy:
            privacy["base_model"] = {k: base.privacy.get(k) for k in ("epsilon", "delta", "neighbouring",
                                                                        "mechanism")}
    if adapter is not None:
        model = _merge(model)
    bundle = _save(cfg, model, base, tok, data, metrics, result.to_dict(), privacy, adapter, dropped, bundle_key(cfg))
    split = write_split(bundle, data, private=private)
    if split is not None:
        messages.append(f"examples trained on: {split} (keep it private: it says who is in the training set)")
    return RunResult(bundle, metrics, result.to_dict(), privacy, messages)


def _save(cfg: TrainConfig, model: nn.Module, base: BaseModel, tok: Tokenizer, data: TextData,
          metrics: dict[str, Any], training: dict[str, Any], privacy: dict[str, Any] | None,
          adapter: dict[str, Any] | None, dropped: dict[str, Any] | None, key: Any) -> Path:
    from torchshield.model.bundle import save
    from torchshield.model.sources.hf import hf_preprocessing

    hf_config: Any = getattr(model, "config")  # noqa: B009 - a transformers model (finetune checked the head)
    if data.task == "sequence-classification":  # declared (public) class names become the model's labels
        hf_config.id2label = {i: str(c.item() if hasattr(c, "item") else c) for i, c in enumerate(data.classes)}
        hf_config.label2id = {v: k for k, v in hf_config.id2label.items()}
    config = hf_config.to_dict()
    arch = {**{k: v for k, v in base.architecture.items() if k != "config"}, "config": config}
    preprocessing = hf_preprocessing(config, base.files)
    preprocessing.setdefault("input", {})["train_length"] = data.length
    cfg.output.bundle.parent.mkdir(parents=True, exist_ok=True)
    private = privacy is not None
    raw = {k: v for k, v in cfg.raw.items() if k != "output"}
    raw["model"] = {k: (Path(str(v)).name if k == "path" else v) for k, v in (raw.get("model") or {}).items()
                    if k not in ("key_file", "pubkey")}  # paths to key files stay out of the manifest
    metadata: dict[str, Any] = {"config": raw, "task": data.task, "data": data.describe(private=private),
                                "metrics": metrics, "training": {k: v for k, v in training.items()
                                                                 if k != "loss_history"},
                                "loss_history": training.get("loss_history", [])}
    if adapter is not None:
        metadata["adapter"] = adapter
    provenance: dict[str, Any] = {
        "tool": f"torchshield {__version__}", "command": "train", "task": data.task,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "torch": torch.__version__,
        "python": platform.python_version(), "seed": cfg.seed, "data_fingerprint": data.fingerprint,
        "base_model": {"name": base.name, **({"sha256": base.sha256} if base.sha256 else {})},
        "tokenizer_sha256": hashlib.sha256(base.files["tokenizer.json"]).hexdigest()}
    if dropped is not None:
        provenance["dp_claim_dropped"] = dropped
    if private:  # only the accounted release leaves (train.run's docstring)
        metadata["metrics"] = {"withheld": "computed on private rows without DP; shown to the owner by "
                                           "'torchshield train' only"}
        metadata["training"] = {k: training[k] for k in ("epochs", "steps") if k in training}
        metadata.pop("loss_history")
        provenance.pop("data_fingerprint")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return save(state, cfg.output.bundle, key=key, sign_with=cfg.output.signing_key, metadata=metadata,
                privacy=privacy, provenance=provenance, architecture=arch, preprocessing=preprocessing,
                files=base.files)
