"""Model steps: train a non-private and a DP model, audit both for membership leakage,
measure and harden robustness, watermark, then encrypt and sign the bundle that ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchshield.demo.data_steps import FEATURES, LABEL
from torchshield.demo.state import DemoState, StepSkipped

__all__ = ["harden", "membership_audit", "owner_keys", "protect", "train", "watermark"]

MODEL_NAME = "readmission"
PRIVACY = {"epsilon": 3.0, "delta": 1e-5, "max_grad_norm": 1.0}
# DP training takes nothing from the private rows for the manifest: public, declared input bounds
# (clinically plausible ranges; values outside are clipped) and the label values
PUBLIC_BOUNDS = {"age_mid": [0, 110], "female": [0, 1], "bmi": [10, 60], "systolic_bp": [60, 240],
                 "glucose": [1, 30], "cholesterol": [1, 15], "smoker": [0, 1]}


def _config(state: DemoState, bundle: Path, **extra: Any) -> Any:
    from torchshield.train.config import TrainConfig

    (train_path,) = state.need("train")
    output = {"bundle": str(bundle), "overwrite": True, **extra.pop("output", {})}
    doc = {
        "model": {"type": "mlp", "hidden": [128, 128]},
        "data": {"path": str(train_path), "label": LABEL, "features": FEATURES, "test_fraction": 0.0,
                 **({"bounds": PUBLIC_BOUNDS, "classes": [0, 1], "normalize": "minmax"} if "privacy" in extra else {})},
        "optimizer": {"name": "adam", "lr": 0.003},
        "epochs": 25 if state.quick else 40,
        "batch_size": 32,
        "seed": state.seed,
        "output": output,
        **extra,
    }
    return TrainConfig.from_dict(doc, base=state.out)


def _assess(state: DemoState, model: Path, sections: tuple[str, ...], **inputs: Any) -> Any:
    from torchshield.assess import AssessInputs, assess

    train, test = state.need("train", "test")
    if "master_key" in state.files and "key" not in inputs:  # bundles trained with the owner's key
        from torchshield.crypto.keys import read_key_file

        inputs["key"] = read_key_file(state.files["master_key"])
    return assess(
        AssessInputs(model=model, data=test, train_data=train, quick=state.quick, **inputs), only=sections
    )


def _test_accuracy(state: DemoState, model: Path) -> float:
    """Accuracy on the held-out table, preprocessed as training did (the assessor's loader)."""
    from torchshield.assess.context import AssessContext, AssessInputs
    from torchshield.train import evaluate

    ctx = AssessContext(AssessInputs(model=model, data=state.files["test"]))
    x, y = ctx.test_split
    return round(evaluate(ctx.subject.module, [(x, y)])["accuracy"], 4)


def train(state: DemoState) -> str:
    from torchshield.train.run import train_from_config

    base = train_from_config(
        _config(state, state.path("baseline", "models/baseline.tsb")), progress=state.progress
    )
    dp = train_from_config(
        _config(state, state.path("dp", "models/dp.tsb"), privacy=dict(PRIVACY)), progress=state.progress
    )
    acc = {name: _test_accuracy(state, state.files[name]) for name in ("baseline", "dp")}
    state.facts["accuracy"] = acc
    state.facts["epsilon"] = round(float(dp.privacy["epsilon"]), 3)
    return (
        f"non-private: train acc {base.metrics['train']['accuracy']:.2f}, test acc {acc['baseline']}; "
        f"DP-SGD (epsilon {state.facts['epsilon']}): train acc {dp.metrics['train']['accuracy']:.2f}, "
        f"test acc {acc['dp']}"
    )


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


def owner_keys(state: DemoState) -> tuple[Path, Path, Path]:
    """The owner's master key and Ed25519 signing key pair, made on first use (fresh per run)."""
    from torchshield.crypto.keys import generate_master_key, write_key_file
    from torchshield.crypto.signing import generate_signing_key

    if "master_key" not in state.files:
        write_key_file(state.path("master_key", "keys/master.key"), generate_master_key())
        signer, pub = generate_signing_key(state.out / "keys" / "signer")
        state.files.update(signing_key=Path(signer), pubkey=Path(pub))
    return state.files["master_key"], state.files["signing_key"], state.files["pubkey"]


WATERMARK = {"method": "whitebox", "bits": 64, "strength": 5.0}


def harden(state: DemoState) -> str:
    """Adversarial training under DP-SGD: the model that ships is private and hardened."""
    from torchshield.assess.checks.robustness import REFERENCE_FRACTION
    from torchshield.model.bundle import inspect
    from torchshield.train.run import train_from_config

    (dp,) = state.need("dp")
    before, _ = _retained(state, dp)
    lo, hi = inspect(dp).manifest["metadata"]["data"]["input_bounds"]
    eps = round(REFERENCE_FRACTION * (hi - lo), 4)
    # Training at half the evaluated budget keeps clean accuracy on this noisy-label task; at the
    # full budget DP-SGD plus adversarial loss collapses to the majority class.
    adversarial = {"method": "pgd", "eps": round(eps / 2, 4), "steps": 3}
    bundle = state.path("hardened", "models/hardened.tsb")
    epochs = 25 if state.quick else 30  # each step costs 4 passes (3 attack steps + the update)
    cfg = _config(state, bundle, adversarial=adversarial, privacy=dict(PRIVACY), epochs=epochs)
    train_from_config(cfg, progress=state.progress)
    after, _ = _retained(state, bundle)
    state.facts["robust_retained"] = {"before": before, "after": after}
    return (
        f"accuracy kept under the strongest attack at eps {eps:g}: {before:.0%} before hardening, "
        f"{after:.0%} after (PGD adversarial training at eps {eps / 2:g} under DP-SGD, epsilon 3)"
    )


def _public_inputs(bounds: tuple[float, float], n_features: int, n: int, seed: int) -> Any:
    """Inputs that carry no private record: standard normal draws in the model's (standardised)
    feature space, clipped to its input range."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_features, generator=g).clamp_(*bounds)


def watermark(state: DemoState) -> str:
    """Embed the owner's white-box mark by a short fine-tune on public inputs labelled by the
    model itself (never the private training rows: tuning on them without DP noise would spend
    privacy the record does not account for), then verify it is present in the marked model and
    absent from a model never marked."""
    import torch

    import torchshield
    from torchshield.assess.checks.capability import require
    from torchshield.assess.context import AssessContext, AssessInputs
    from torchshield.assess.subject import NotAssessable
    from torchshield.crypto.keys import read_key_file

    try:
        wm = require("torchshield.model.watermark", "watermarking")
    except NotAssessable as exc:
        raise StepSkipped(exc.reason) from None
    hardened, baseline = state.need("hardened", "baseline")
    key_path, _, _ = owner_keys(state)
    key = read_key_file(key_path)
    subject = AssessContext(AssessInputs(model=hardened, key=key)).subject
    manifest = torchshield.inspect(hardened).manifest
    x = _public_inputs(subject.bounds or (-3.0, 3.0), subject.input_shape[0], 2000, state.seed)
    with torch.no_grad():
        y = subject.module(x).argmax(1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=64,
        shuffle=True,
        generator=torch.Generator().manual_seed(state.seed),
    )
    record = wm.embed(subject.module, loader, key, WATERMARK, epochs=3 if state.quick else 5, lr=1e-3)
    out = state.out / "models" / "watermarked.tsb"
    torchshield.save(
        subject.module,
        out,
        key=key,
        metadata=manifest["metadata"],
        privacy=manifest.get("privacy"),
        watermark=record.to_dict(),
        provenance={**(manifest.get("provenance") or {}), "watermarked_from": hardened.name},
    )
    own = wm.verify_whitebox(torchshield.load(out, key=key), record, key)
    other = wm.verify_whitebox(torchshield.load(baseline), record, key)
    state.facts["watermark"] = {
        "present": own.present,
        "p_value": own.p_value,
        "unmarked_present": other.present,
    }
    if not own.present or other.present:
        raise RuntimeError(
            f"watermark check wrong: marked model present={own.present}, "
            f"unmarked model present={other.present}"
        )
    state.files["watermarked"] = out  # only a verified mark goes on to be shipped
    return (
        f"white-box mark {record.mark_id[:8]}…: {own.matches}/{own.total} bits in the marked model "
        f"(p = {own.p_value:.1e}); unmarked baseline {other.matches}/{other.total} (p = {other.p_value:.2f}, "
        "absent)"
    )


def protect(state: DemoState) -> str:
    """Re-save the shipping model encrypted under a fresh master key and signed, with the
    metadata the server needs (name, input spec, output hardening) beside training's."""
    import torchshield
    from torchshield.crypto.keys import read_key_file
    from torchshield.model.bundle import inspect, verify

    source = next(
        (
            state.files[n]
            for n in ("watermarked", "hardened", "dp")
            if n in state.files and state.files[n].exists()
        ),
        None,
    )
    if source is None:
        raise StepSkipped("no trained model to protect")
    key_path, signer, pub = owner_keys(state)
    manifest = inspect(source).manifest
    meta = dict(manifest["metadata"])
    spec, shape = meta["model"]["spec"], meta["model"]["input_shape"]
    lo, hi = meta["data"]["input_bounds"]
    meta.update(
        {
            "name": MODEL_NAME,
            "model": spec,
            "num_classes": meta["model"]["num_classes"],
            "input": {"shape": shape, "dtype": "float32", "min": lo - 1, "max": hi + 1},
            "serve": {"output": "top_k", "top_k": 1, "decimals": 2, "max_batch": 64},
        }
    )
    key = read_key_file(key_path)  # read once, used for the load, the save and the verify below
    tensors = torchshield.load(source, key=key if inspect(source).encrypted else None)
    out = state.path("model", "models/readmission.tsb")
    torchshield.save(
        tensors,
        out,
        key=key,
        sign_with=signer,
        metadata=meta,
        privacy=manifest.get("privacy"),
        watermark=manifest.get("watermark"),
        provenance={**(manifest.get("provenance") or {}), "protected_from": source.name},
    )
    res = verify(out, pubkey=pub, key=key)
    if not res.ok:
        raise RuntimeError(f"the protected bundle does not verify: {res.problems[0]}")
    return f"{out.name}: encrypted (key id {inspect(out).key_id[:12]}…), signed by {res.signer}, verified"
