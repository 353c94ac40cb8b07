"""Model steps: train a non-private and a DP model, audit both for membership leakage,
measure and harden robustness, watermark, then encrypt and sign the bundle that ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchshield.demo.data_steps import FEATURES, LABEL
from torchshield.demo.state import DemoState, StepSkipped

__all__ = ["harden", "membership_audit", "protect", "train", "watermark"]

MODEL_NAME = "readmission"


def _config(state: DemoState, bundle: Path, **extra: Any) -> Any:
    from torchshield.train.config import TrainConfig

    (train_path,) = state.need("train")
    doc = {"model": {"type": "mlp", "hidden": [128, 128]},
           "data": {"path": str(train_path), "label": LABEL, "features": FEATURES, "test_fraction": 0.0},
           "optimizer": {"name": "adam", "lr": 0.003}, "epochs": 25 if state.quick else 60, "batch_size": 32,
           "seed": state.seed, "output": {"bundle": str(bundle), "overwrite": True}, **extra}
    return TrainConfig.from_dict(doc, base=state.out)


def _assess(state: DemoState, model: Path, sections: tuple[str, ...], **inputs: Any) -> Any:
    from torchshield.assess import AssessInputs, assess

    train, test = state.need("train", "test")
    return assess(AssessInputs(model=model, data=test, train_data=train, quick=state.quick, **inputs),
                  only=sections)


def _test_accuracy(state: DemoState, model: Path) -> float:
    """Accuracy on the held-out table, preprocessed as training did (the assessor's loader)."""
    from torchshield.assess.context import AssessContext, AssessInputs
    from torchshield.train import evaluate

    ctx = AssessContext(AssessInputs(model=model, data=state.files["test"]))
    x, y = ctx.test_split
    return round(evaluate(ctx.subject.module, [(x, y)])["accuracy"], 4)


def train(state: DemoState) -> str:
    from torchshield.train.run import train_from_config

    base = train_from_config(_config(state, state.path("baseline", "models/baseline.tsb")), progress=False)
    dp = train_from_config(_config(state, state.path("dp", "models/dp.tsb"),
                                   privacy={"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0}), progress=False)
    acc = {name: _test_accuracy(state, state.files[name]) for name in ("baseline", "dp")}
    state.facts["accuracy"] = acc
    state.facts["epsilon"] = round(float(dp.privacy["epsilon"]), 3)
    return (f"non-private: train acc {base.metrics['train']['accuracy']:.2f}, test acc {acc['baseline']}; "
            f"DP-SGD (epsilon {state.facts['epsilon']}): train acc {dp.metrics['train']['accuracy']:.2f}, "
            f"test acc {acc['dp']}")


def membership_audit(state: DemoState) -> str:
    parts = []
    for name in ("baseline", "dp"):
        (model,) = state.need(name)
        section = _assess(state, model, ("privacy",)).section("privacy")
        audit = next(f for f in section.findings if f.check == "membership-audit")
        if audit.verdict == "skipped":
            raise StepSkipped(audit.reason)
        state.facts[f"auc_{name}"] = section.metrics.get("attack_auc")
        parts.append(f"{name}: AUC {section.metrics.get('attack_auc')} ({audit.verdict})")
    return "; ".join(parts)


def _retained(state: DemoState, model: Path) -> tuple[float, dict[str, Any]]:
    section = _assess(state, model, ("robustness",)).section("robustness")
    if section.verdict == "skipped":
        raise StepSkipped(section.findings[0].reason)
    return float(section.metrics["retained_at_reference"]), section.metrics


def harden(state: DemoState) -> str:
    """Adversarial training (PGD) under DP-SGD: the model that ships is private and hardened."""
    from torchshield.assess.checks.robustness import REFERENCE_FRACTION
    from torchshield.model.bundle import inspect
    from torchshield.train.run import train_from_config

    (dp,) = state.need("dp")
    before, _ = _retained(state, dp)
    lo, hi = inspect(dp).manifest["metadata"]["data"]["input_bounds"]
    eps = round(REFERENCE_FRACTION * (hi - lo), 4)
    cfg = _config(state, state.path("hardened", "models/hardened.tsb"),
                  privacy={"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0},
                  adversarial={"method": "fast", "eps": eps} if state.quick else
                  {"method": "pgd", "eps": eps, "steps": 5})
    train_from_config(cfg, progress=False)
    after, metrics = _retained(state, state.files["hardened"])
    state.facts["robust_retained"] = {"before": before, "after": after}
    method = "fast FGSM" if state.quick else "PGD"
    return (f"accuracy kept under the strongest attack at eps {eps:g}: {before:.0%} before hardening, "
            f"{after:.0%} after ({method} adversarial training under DP-SGD, epsilon 3)")


def watermark(state: DemoState) -> str:
    raise StepSkipped("watermark embedding is not available in this build (torchshield.model.watermark "
                      "has no embedding API yet)")


def protect(state: DemoState) -> str:
    """Re-save the shipping model encrypted under a fresh master key and signed, with the
    metadata the server needs (name, input spec, output hardening) beside training's."""
    import torchshield
    from torchshield.crypto.keys import generate_master_key, write_key_file
    from torchshield.crypto.signing import generate_signing_key
    from torchshield.model.bundle import inspect, verify

    source = state.files.get("watermarked") or state.files.get("hardened") or state.files.get("dp")
    if source is None or not source.exists():
        raise StepSkipped("no trained model to protect")
    key_path = state.path("master_key", "keys/master.key")
    write_key_file(key_path, generate_master_key())  # the demo folder starts empty: a fresh key each run
    signer, pub = generate_signing_key(state.out / "keys" / "signer")
    state.files.update(signing_key=Path(signer), pubkey=Path(pub))
    manifest = inspect(source).manifest
    meta = dict(manifest["metadata"])
    spec, shape = meta["model"]["spec"], meta["model"]["input_shape"]
    lo, hi = meta["data"]["input_bounds"]
    meta.update({"name": MODEL_NAME, "model": spec, "num_classes": meta["model"]["num_classes"],
                 "input": {"shape": shape, "dtype": "float32", "min": lo - 1, "max": hi + 1},
                 "serve": {"output": "top_k", "top_k": 1, "decimals": 2, "max_batch": 64}})
    tensors = torchshield.load(source)
    out = state.path("model", "models/readmission.tsb")
    torchshield.save(tensors, out, key=key_path, sign_with=signer, metadata=meta, privacy=manifest.get("privacy"),
                     watermark=manifest.get("watermark"),
                     provenance={**(manifest.get("provenance") or {}), "protected_from": source.name})
    res = verify(out, pubkey=pub, key=key_path)
    if not res.ok:
        raise RuntimeError(f"the protected bundle does not verify: {res.problems[0]}")
    return f"{out.name}: encrypted (key id {inspect(out).key_id[:12]}…), signed by {res.signer}, verified"
