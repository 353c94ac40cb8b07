"""`torchshield robust ...`: robust-accuracy evaluation, randomized-smoothing certification and
the feature-squeezing detector, on bundled models: trained by `torchshield train` (tables, built-in
data sets) or brought by the user (`model protect` of a Hugging Face directory or a weights file with
its architecture; data in the model's natural shape)."""

from __future__ import annotations

import inspect as _inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, fail, progress
from torchshield.cli.trust import ALLOW_FACTORY_OPTION, PUBKEY_OPTION, Trust, trust
from torchshield.crypto.keys import resolve_master_key
from torchshield.errors import InputError, about

__all__ = ["register"]

app = typer.Typer(no_args_is_help=True, help="Attack, certify and guard models against adversarial inputs.")

DATA = typer.Option(None, "--data", "-d", help="For a bundle from `torchshield train`: sklearn:digits / "
                    "sklearn:breast_cancer (test split) or a .csv/.tsv/.parquet/.jsonl table with its training "
                    "columns; default: the bundle's own test split. For a `model protect` bundle (required): a "
                    ".safetensors or .pt file with 'inputs' in the model's natural shape and 'labels'.")
KEY_FILE = typer.Option(None, "--key-file", "-k", help="Master key file for an encrypted bundle.")
LIMIT = typer.Option(None, "--limit", "-n", min=1, help="Use only the first N examples.")
BOUNDS = typer.Option(None, "--bounds", help="Input range 'LOW,HIGH' with LOW < HIGH (default: the bundle's "
                      "recorded bounds).")
# the tables `read_rows` turns into the inputs of a `torchshield train` bundle
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq", ".jsonl", ".ndjson")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="robust", help="Adversarial robustness: eval, certify, detectors.")


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise InputError(f"{what}: give at least one number")
    return values


def _finite(low: float, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False) -> Callable[[float | None], float | None]:
    """Typer callback for a float option: a finite number within the range (exit 2 naming the option).
    Click's own range checks let NaN through (it compares false with every bound), and NaN or an
    infinity silently disables the gate, loop or budget it feeds."""
    where = [f"{'>' if open_low else '>='} {low:g}"]
    if high is not None:
        where.append(f"{'<' if open_high else '<='} {high:g}")

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        ok = math.isfinite(value) and (value > low if open_low else value >= low)
        if ok and high is not None:
            ok = value < high if open_high else value <= high
        if not ok:
            raise typer.BadParameter(f"must be a finite number {' and '.join(where)}, got {value:g}")
        return value

    return check


def _bounds(text: str | None) -> tuple[float, float] | None:
    """``--bounds LOW,HIGH``: two finite numbers with LOW < HIGH (InputError naming the option)."""
    if text is None:
        return None
    need = f"--bounds: needs two finite numbers LOW,HIGH with LOW < HIGH (e.g. 0,1 for pixels), got {text!r}"
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(need) from None
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[0] >= values[1]:
        raise InputError(need)
    return values[0], values[1]


def _non_negative(text: str, what: str, noun: str) -> list[float]:
    """Comma-separated finite numbers >= 0 (budgets, radii), refused naming ``what`` otherwise."""
    values = _floats(text, what)
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise InputError(f"{what}: {noun} must be a finite number >= 0, got {text!r}")
    return values


def _attack_names(attack: list[str]) -> list[str]:
    """Names from repeated and comma-separated ``--attack`` values. None left (``--attack ,``) would
    report no result and pass any gate, so it is refused, like an unknown name, before any work."""
    from torchshield.robust.attacks import available_attacks, get_attack

    names = [n.strip() for item in attack for n in item.split(",") if n.strip()]
    if not names:
        raise InputError(f"--attack: no attack named in {', '.join(map(repr, attack))}",
                         hint=f"give one or more of: {', '.join(available_attacks())}")
    with about("--attack"):
        for name in names:
            get_attack(name)
    return names


@dataclass
class _Subject:
    model: Any
    x: Any
    y: Any
    bounds: tuple[float, float]
    manifest: dict[str, Any]
    num_classes: int | None
    feature_names: list[str]


def _load(model_path: Path, data: str | None, *, key_file: Path | None, trusted: Trust,
          limit: int | None, bounds: tuple[float, float] | None) -> _Subject:
    """Model, inputs, labels, bounds and manifest for a bundle and a data spec.

    Bundles written by ``torchshield train`` use their own test split or a table; any other
    bundle with an architecture (Hugging Face, registry, factory) takes ``--data`` as a tensor
    file holding ``inputs`` in the model's natural shape (N x C x H x W for images) and ``labels``."""
    from torchshield.model.header import inspect

    if not model_path.is_file():
        raise InputError(f"{model_path}: no such model bundle")
    manifest = inspect(model_path).manifest
    meta = manifest.get("metadata") or {}
    if not ("config" in meta and "data" in meta):
        return _load_any(model_path, manifest, data, key_file=key_file, trusted=trusted, limit=limit,
                         bounds=bounds)
    from torchshield.nn.datasets import BUILTINS, load_dataset
    from torchshield.train.recipe import load_trained, read_rows

    if data is not None and data not in BUILTINS and Path(data).suffix.lower() not in _TABLE_SUFFIXES:
        raise InputError(f"--data: {data} is not a table; a bundle from `torchshield train` takes a built-in data "
                         f"set ({', '.join(BUILTINS)}) or a .csv/.tsv/.parquet/.jsonl table with its training columns",
                         hint="tensor files (.safetensors, .pt) are for bundles from `model protect`")
    model, manifest = load_trained(model_path, key=resolve_master_key(key_file=key_file, required=False), verify_with=trusted.verify_with)
    meta = manifest["metadata"]
    if data is None or data in BUILTINS:
        spec = (meta.get("config") or {}).get("data")
        same = spec == data or (isinstance(spec, dict) and spec.get("name") == data)
        split = load_dataset(spec if data is None or same else data).test
        x, y = split.x, split.y
    else:
        x, y = read_rows(data, manifest)
    x, y = _limit(x, y, limit)
    lo_hi = bounds if bounds is not None else meta["data"]["input_bounds"]
    return _Subject(model, x, y, (float(lo_hi[0]), float(lo_hi[1])), manifest,
                    meta["model"].get("num_classes"), list(meta["data"].get("feature_names") or []))


def _limit(x: Any, y: Any, limit: int | None) -> tuple[Any, Any]:
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    return x, y


def _read_tensors(path: Path) -> dict[str, Any]:
    """``inputs`` and ``labels`` from a .safetensors or .pt file (weights-only: no code runs)."""
    import torch

    if not path.is_file():
        raise InputError(f"--data: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            doc = load_file(str(path))
        else:
            doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"--data: {path} is not a tensor file ({type(exc).__name__})",
                         hint="save {'inputs': x, 'labels': y} with safetensors.torch.save_file") from None
    if not isinstance(doc, dict):
        raise InputError(f"--data: {path} must hold named tensors 'inputs' and 'labels'")
    return doc


def _load_any(model_path: Path, manifest: dict[str, Any], data: str | None, *, key_file: Path | None,
              trusted: Trust, limit: int | None, bounds: tuple[float, float] | None) -> _Subject:
    from torchshield.model.loading import open_model, preprocessing_of
    from torchshield.robust.subject import attackable, input_bounds

    pre = preprocessing_of(manifest)
    if (pre.get("input") or {}).get("kind") == "tokens" or (pre.get("output") or {}).get("kind") == "causal-lm":
        attackable(_NoModel(), pre)  # raises NotApplicable with the reason, before any key or data is read
    if data is None:
        raise InputError(f"--data is required for {model_path.name}: a .safetensors file with 'inputs' "
                         "(N x C x H x W for images) and 'labels'")
    loaded = open_model(model_path, key=resolve_master_key(key_file=key_file, required=False), **trusted.kwargs())
    net, shape = attackable(loaded.module, loaded.preprocessing)
    doc = _read_tensors(Path(data))
    x = next((doc[k] for k in ("inputs", "pixel_values", "x") if k in doc), None)
    y = next((doc[k] for k in ("labels", "y") if k in doc), None)
    if x is None or y is None:
        raise InputError(f"--data: {data} needs tensors 'inputs' and 'labels', has {sorted(doc)[:5]}")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise InputError(f"--data: inputs have shape {tuple(x.shape[1:])} per example, the model takes {shape}",
                         hint="pass examples in the model's natural shape (N x C x H x W), not flattened")
    x, y = _limit(x.float(), y, limit)
    lo_hi = bounds if bounds is not None else input_bounds(pre)
    if lo_hi is None or len(lo_hi) != 2:
        raise InputError(f"{model_path.name} does not record its input range",
                         hint="pass --bounds lo,hi (e.g. 0,1 for pixels)")
    n = (pre.get("output") or {}).get("num_classes")
    return _Subject(net, x, y, (float(lo_hi[0]), float(lo_hi[1])), manifest, n, [])


class _NoModel:
    """Stands in for a module when only the preprocessing decides (token models)."""


def _attack_params(name: str, steps: int | None, restarts: int | None, queries: int | None,
                   targets: int | None = None) -> dict[str, Any]:
    from torchshield.robust.attacks import get_attack

    accepted = _inspect.signature(get_attack(name).__init__).parameters
    given = {"steps": steps, "restarts": restarts, "queries": queries, "targets": targets}
    return {k: v for k, v in given.items() if v is not None and k in accepted}


def _check_output(path: Path, option: str, suffixes: tuple[str, ...], *, overwrite: bool) -> None:
    """Before any work: ``path`` is a file of a known kind in a folder that exists, and no existing
    file unless ``overwrite`` (InputError naming ``option`` otherwise); found at the write, it cost
    the whole attack or calibration."""
    from torchshield.atomic import check_target

    if path.suffix.lower() not in suffixes:
        raise InputError(f"{option}: {path} must end in {' or '.join(suffixes)}")
    with about(option):
        check_target(path, overwrite=overwrite, hint="pass --force to overwrite it")


def _save_adversarial(path: Path, report: Any, y: Any, names: list[str], *, overwrite: bool) -> None:
    """Adversarial examples as safetensors (one tensor per attack/eps + labels) or Parquet rows."""
    from torchshield.atomic import atomic_output

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import save as st_save

        tensors = {f"{a}@{e:g}": t.contiguous() for (a, e), t in report.adversarial.items()}
        tensors["labels"] = y.contiguous()
        with atomic_output(path, overwrite=overwrite) as fh:
            fh.write(st_save(tensors, metadata={"kind": "torchshield-adversarial-examples"}))
        return
    import pandas as pd  # .parquet / .pq (_check_output refused anything else)

    frames = []
    for (attack, eps), adv in report.adversarial.items():
        flat = adv.reshape(adv.shape[0], -1).numpy()
        cols = list(names) if len(names) == flat.shape[1] else [f"x{i}" for i in range(flat.shape[1])]
        df = pd.DataFrame(flat, columns=cols)
        df.insert(0, "label", y.numpy())
        df.insert(0, "eps", eps)
        df.insert(0, "attack", attack)
        frames.append(df)
    with atomic_output(path, overwrite=overwrite) as fh:
        pd.concat(frames, ignore_index=True).to_parquet(fh, index=False)


@app.command("attacks")
def attacks_cmd(as_json: bool = JSON_OPTION) -> None:
    """List the registered attacks and their norms."""
    from torchshield.robust.attacks import available_attacks, get_attack

    rows = [{"name": n, "norm": get_attack(n).norm, "budgeted": get_attack(n).requires_eps,
             "doc": ((get_attack(n).__doc__ or "").strip().splitlines() or [""])[0]} for n in available_attacks()]
    emit(rows, lambda c: [c.print(f"{r['name']:12} {r['norm']:5} {r['doc']}", highlight=False) for r in rows],
         as_json=as_json)


@app.command("eval")
def eval_cmd(model: Path = typer.Argument(..., help="A .tsb bundle written by `torchshield train` or "
                                          "`torchshield model protect`."),
             data: str | None = DATA,
             attack: list[str] = typer.Option(["standard"], "--attack", "-a", help="Attack name(s), comma-separated "
                                              "or repeated (see `torchshield robust attacks`); default: the "
                                              "standard ensemble (APGD-CE, APGD-T, FAB-T, APGD-CW, Square), whose "
                                              "figure is the robust accuracy to report."),
             eps: str = typer.Option("0.1", "--eps", "-e", help="Budget(s), comma-separated, in input units."),
             steps: int | None = typer.Option(None, "--steps", min=1, help="Iterations of iterative attacks."),
             restarts: int | None = typer.Option(None, "--restarts", min=1, help="Random restarts (pgd, apgd, "
                                                 "fab-t)."),
             queries: int | None = typer.Option(None, "--queries", min=1, help="Query budget (square, standard)."),
             targets: int | None = typer.Option(None, "--targets", min=1, help="Target classes of APGD-T and "
                                                "FAB-T (apgd-t, fab-t, standard; default 9)."),
             batch_size: int = typer.Option(256, "--batch-size", min=1),
             seed: int = typer.Option(0, "--seed"),
             limit: int | None = LIMIT, bounds: str | None = BOUNDS,
             save_adv: Path | None = typer.Option(None, "--save-adv", help="Write the adversarial examples "
                                                  "(.parquet or .safetensors)."),
             force: bool = typer.Option(False, "--force", help="Overwrite the --save-adv file if it exists."),
             min_robust: float | None = typer.Option(None, "--min-robust-accuracy",
                                                     callback=_finite(0.0, 1.0), help="Exit 1 if any robust "
                                                     "accuracy falls below this, a number in [0, 1] (for CI gates)."),
             key_file: Path | None = KEY_FILE, pubkey: Path | None = PUBKEY_OPTION,
             allow_factory: list[str] = ALLOW_FACTORY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Clean and robust accuracy per attack and epsilon, on inputs in the model's natural shape.

    The default `standard` ensemble counts an example robust only if APGD-CE, APGD-T, FAB-T, APGD-CW
    and Square all fail on it. A warning is printed (and listed under "warnings" in --json) when
    attacks disagree the way gradient masking makes them: a score-based attack finding many
    adversarial examples that gradient attacks missed. Token-id models (text) are reported as not
    applicable (exit 0): no Lp-ball attack applies."""
    from torchshield.robust.evaluate import evaluate_robustness
    from torchshield.robust.subject import NotApplicable

    names = _attack_names(attack)
    eps_list = _non_negative(eps, "--eps", "epsilon")
    lo_hi_given = _bounds(bounds)
    if save_adv is not None:
        _check_output(save_adv, "--save-adv", (".parquet", ".pq", ".safetensors"), overwrite=force)
    try:
        sub = _load(model, data, key_file=key_file, trusted=trust(pubkey, allow_factory), limit=limit,
                    bounds=lo_hi_given)
    except NotApplicable as exc:
        doc = {"model": str(model), "status": "not_applicable", "reason": exc.message, "hint": exc.hint}
        line = f"{model.name}: not applicable: {exc.message} ({exc.hint})"
        emit(doc, lambda c: c.print(line, highlight=False), as_json=as_json)
        return
    net, x, y, lo_hi, num_classes = sub.model, sub.x, sub.y, sub.bounds, sub.num_classes
    specs = [(n, _attack_params(n, steps, restarts, queries, targets)) for n in names]
    with progress("attacking", len(y) * len(specs) * len(eps_list)) as advance:
        report = evaluate_robustness(net, x, y, attacks=specs, eps=eps_list, bounds=lo_hi, batch_size=batch_size,
                                     seed=seed, num_classes=num_classes, keep_adversarial=save_adv is not None,
                                     on_batch=advance)
    if save_adv is not None:
        _save_adversarial(save_adv, report, y, sub.feature_names, overwrite=force)
    doc = {"model": str(model), "status": "evaluated", "input_shape": list(x.shape[1:]), **report.to_dict(),
           "saved_adversarial": str(save_adv) if save_adv else None}

    def human(c: Any) -> None:
        from rich.table import Table

        table = Table(title=f"{model.name}: {report.examples} examples, clean accuracy {report.clean_accuracy:.2%}")
        for col in ("attack", "eps", "robust acc.", "success", "mean norm", "seconds"):
            table.add_column(col, justify="right" if col != "attack" else "left")
        for r in report.rows:
            table.add_row(r.attack, f"{r.eps:g}", f"{r.robust_accuracy:.2%}", f"{r.attack_success_rate:.2%}",
                          f"{r.mean_perturbation:.4f}", f"{r.seconds:.1f}")
        c.print(table)
        for r in report.rows:
            if r.stages:
                order = ("apgd-ce", "apgd-t", "fab-t", "apgd-cw", "square")
                parts = ", ".join(f"{k} {r.stages.get(k, 0)}" for k in order)
                c.print(f"  {r.attack} at eps {r.eps:g}: examples fooled first by {parts}; "
                        f"{r.stages.get('robust', 0)} robust against all", highlight=False)
        from rich.markup import escape

        for w in report.warnings:
            c.print(f"[bold yellow]warning:[/] {escape(w)}")
        if save_adv:
            c.print(f"adversarial examples written to {save_adv}", highlight=False)

    emit(doc, human, as_json=as_json)
    if min_robust is not None and any(r.robust_accuracy < min_robust for r in report.rows):
        fail(1)


@app.command("certify")
def certify_cmd(model: Path = typer.Argument(..., help="A .tsb bundle (ideally trained with "
                                             "augment: {gaussian_noise: SIGMA})."),
                data: str | None = DATA,
                sigma: float = typer.Option(0.25, "--sigma", callback=_finite(0.0, open_low=True),
                                            help="Noise level of the smoothed classifier (> 0)."),
                n0: int = typer.Option(100, "--n0", min=1, help="Noise draws to pick the top class."),
                n: int = typer.Option(1000, "--n", min=1, help="Noise draws to bound its probability."),
                alpha: float = typer.Option(0.001, "--alpha", callback=_finite(0.0, 1.0, open_low=True,
                                                                               open_high=True),
                                            help="Failure probability per certificate, in (0, 1)."),
                radii: str = typer.Option("0,0.25,0.5,0.75,1", "--radii", help="Radii to report certified "
                                          "accuracy at."),
                batch_size: int = typer.Option(1000, "--batch-size", min=1),
                seed: int | None = typer.Option(None, "--seed", help="Seed the noise (tests only; default "
                                                "draws from the OS CSPRNG)."),
                limit: int | None = LIMIT, key_file: Path | None = KEY_FILE, pubkey: Path | None = PUBKEY_OPTION,
                allow_factory: list[str] = ALLOW_FACTORY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Certified L2 accuracy at radii via randomized smoothing (Cohen et al. 2019).

    Refused (exit 2) for token-id models: Gaussian noise on token ids certifies nothing."""
    from torchshield.robust.smoothing import ABSTAIN, SmoothedClassifier

    radius_list = _non_negative(radii, "--radii", "a radius")
    sub = _load(model, data, key_file=key_file, trusted=trust(pubkey, allow_factory), limit=limit,
                bounds=None)  # NotApplicable is an InputError: exit 2 with the reason
    net, x, y = sub.model, sub.x, sub.y
    if sub.num_classes is None:
        raise InputError(f"{model.name} does not record its number of classes")
    smoothed = SmoothedClassifier(net, num_classes=int(sub.num_classes), sigma=sigma,
                                  batch_size=batch_size, seed=seed)
    certs = []
    with progress("certifying", len(y)) as advance:
        for xi in x:
            certs.append(smoothed.certify(xi, n0=n0, n=n, alpha=alpha))
            advance(1)
    correct = [c.prediction == int(t) for c, t in zip(certs, y, strict=True)]
    rows = [{"radius": r, "certified_accuracy": sum(ok and c.radius >= r for ok, c in zip(correct, certs,
                                                                                          strict=True)) / len(y)}
            for r in radius_list]
    doc = {"model": str(model), "examples": len(y), "sigma": sigma, "n0": n0, "n": n, "alpha": alpha,
           "abstain_rate": sum(c.prediction == ABSTAIN for c in certs) / len(y),
           "smoothed_accuracy": sum(correct) / len(y), "results": rows}

    def human(c: Any) -> None:
        c.print(f"{model.name}: {len(y)} examples, sigma {sigma}, n {n}, alpha {alpha}; smoothed accuracy "
                f"{doc['smoothed_accuracy']:.2%}, abstained {doc['abstain_rate']:.2%}", highlight=False)
        for r in rows:
            c.print(f"  radius {r['radius']:<6g} certified accuracy {r['certified_accuracy']:.2%}", highlight=False)

    emit(doc, human, as_json=as_json)


@app.command("calibrate-detector")
def calibrate_cmd(model: Path = typer.Argument(..., help="A .tsb bundle."), data: str | None = DATA,
                  out: Path = typer.Option(..., "--out", "-o", help="Detector file to write (.json)."),
                  fpr: float = typer.Option(0.05, "--fpr", callback=_finite(0.0, 1.0, open_low=True,
                                                                             open_high=True),
                                            help="Target false-positive rate on clean inputs, in (0, 1)."),
                  squeezer: list[str] = typer.Option(["bits:4"], "--squeezer",
                                                     help="bits:N or median:N, repeatable."),
                  limit: int | None = LIMIT, bounds: str | None = BOUNDS, key_file: Path | None = KEY_FILE,
                  pubkey: Path | None = PUBKEY_OPTION, allow_factory: list[str] = ALLOW_FACTORY_OPTION,
                  force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
                  as_json: bool = JSON_OPTION) -> None:
    """Calibrate a feature-squeezing detector on clean data to a false-positive rate."""
    from torchshield.atomic import atomic_write_bytes
    from torchshield.robust.defenses import FeatureSqueezingDetector, parse_squeezer

    lo_hi_given = _bounds(bounds)
    _check_output(out, "--out", (".json",), overwrite=force)
    sub = _load(model, data, key_file=key_file, trusted=trust(pubkey, allow_factory), limit=limit,
                bounds=lo_hi_given)
    net, x, lo_hi = sub.model, sub.x, sub.bounds
    detector = FeatureSqueezingDetector(net, [parse_squeezer(s) for s in squeezer], lo_hi)
    detector.calibrate(x, fpr=fpr)
    doc = detector.to_dict()
    atomic_write_bytes(out, json.dumps(doc, indent=2).encode())
    emit({"detector": str(out), **doc}, lambda c: c.print(
        f"wrote {out}: threshold {detector.threshold:.4f} for FPR {fpr} on {len(x)} clean examples",
        highlight=False), as_json=as_json)


@app.command("detect")
def detect_cmd(model: Path = typer.Argument(..., help="A .tsb bundle."), data: str | None = DATA,
               detector_file: Path = typer.Option(..., "--detector", help="File from calibrate-detector."),
               attack: str | None = typer.Option(None, "--attack", help="Also attack the data first and report "
                                                 "the detection rate on the adversarial examples."),
               eps: float = typer.Option(0.1, "--eps", callback=_finite(0.0),
                                         help="Budget of --attack, in input units."),
               limit: int | None = LIMIT,
               key_file: Path | None = KEY_FILE, pubkey: Path | None = PUBKEY_OPTION,
               allow_factory: list[str] = ALLOW_FACTORY_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Flag adversarial-looking inputs; report the flagged rate (clean, and attacked with --attack)."""
    from torchshield.robust.attacks import build_attack
    from torchshield.robust.defenses import FeatureSqueezingDetector

    if attack is not None:  # an empty name would skip the attack and report no adversarial rate
        if not attack.strip() or "," in attack:
            from torchshield.robust.attacks import available_attacks

            raise InputError(f"--attack: give one attack name, got {attack!r}",
                             hint=f"choose one of: {', '.join(available_attacks())}")
        attack = _attack_names([attack])[0]
    try:
        doc = json.loads(detector_file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--detector: cannot read {detector_file} ({type(exc).__name__})") from None
    sub = _load(model, data, key_file=key_file, trusted=trust(pubkey, allow_factory), limit=limit, bounds=None)
    net, x, y = sub.model, sub.x, sub.y
    with about("--detector"):
        detector = FeatureSqueezingDetector.from_dict(net, doc)
    result: dict[str, Any] = {"examples": len(y), "threshold": detector.threshold,
                              "clean_flagged_rate": float(detector.detect(x).double().mean())}
    if attack:
        adv = build_attack(attack, net, eps=eps, bounds=detector.bounds, seed=0)(x, y)
        result.update({"attack": attack, "eps": eps,
                       "adversarial_flagged_rate": float(detector.detect(adv).double().mean())})
    emit(result, lambda c: c.print(", ".join(f"{k} {v}" for k, v in result.items()), highlight=False),
         as_json=as_json)
