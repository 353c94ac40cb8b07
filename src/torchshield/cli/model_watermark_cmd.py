"""`torchshield model watermark embed|verify`, `model obfuscate`, `model deobfuscate`.

Plugged into the lead's `model` group by ``register_into(model_app)``. Exit codes: verify 0 when
the mark is present, 1 when it is absent, 2 for a bad record, key, bundle or endpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, check_bundle_output, emit, fail, progress
from torchshield.cli.trust import ALLOW_FACTORY_OPTION, PUBKEY_OPTION, Trust, trust
from torchshield.errors import CheckFailed, FormatError, InputError, about

__all__ = ["register_into"]

KEY_FILE = typer.Option(None, "--key-file", "-k", help="Master key file (or $TORCHSHIELD_KEY_FILE).")
FORCE = typer.Option(False, "--force", help="Overwrite OUT if it exists.")
SIGN = typer.Option(None, "--sign", help="Ed25519 signing key file: sign the bundle written (servers trust "
                                         "signed bundles only).")

watermark_app = typer.Typer(help="Ownership watermarks: embed a mark, verify a suspect model.", no_args_is_help=True)


def register_into(model_app: typer.Typer) -> None:
    model_app.add_typer(watermark_app, name="watermark")
    model_app.command("obfuscate")(obfuscate_cmd)
    model_app.command("deobfuscate")(deobfuscate_cmd)


def _key(key_file: Path | None) -> Any:
    from torchshield.crypto.keys import resolve_master_key

    return resolve_master_key(key_file=key_file, required=True)


def _save_like(source: Any, tensors_or_model: Any, out: Path, key: Any, *, metadata: dict[str, Any] | None = None,
               watermark: dict[str, Any] | None = None, command: str, trained_without_dp: bool = False,
               sign: Any = None, files: dict[str, bytes] | None = None) -> str | None:
    """Write ``out`` with ``source``'s manifest slots (architecture, preprocessing and carried files
    included), encrypted iff the source was.

    A DP claim survives only what is post-processing of the DP model (obfuscation permutes units
    with a key, using no data). ``trained_without_dp``: the weights were trained on data without
    DP, so the claim no longer holds and is dropped; returns the message saying so."""
    import torchshield
    from torchshield.model.sources.records import dp_claim

    m = source.manifest
    provenance = {**(m.get("provenance") or {}), "command": command}
    privacy, dropped = m.get("privacy"), None
    if trained_without_dp and dp_claim(m):  # then the privacy slot is a mapping that states an epsilon
        dropped = (f"the DP claim (epsilon {privacy.get('epsilon', float('nan')):.4g}, delta {privacy.get('delta')}) "
                   f"was dropped: '{command}' trained the weights on data without DP, so it no longer holds")
        provenance["dp_claim_dropped"] = {"by": command, "epsilon": privacy.get("epsilon"),
                                          "delta": privacy.get("delta")}
        # the architecture changes DP training made (BatchNorm -> GroupNorm) are not part of the claim:
        # without them the weights no longer fit the model the bundle rebuilds
        privacy = {"model_fixes": privacy["model_fixes"]} if privacy.get("model_fixes") else None
        meta = dict(metadata if metadata is not None else m.get("metadata") or {})
        config = meta.get("config")
        if isinstance(config, dict) and config.get("privacy"):  # the training config's DP section went with it
            meta["config"] = {k: v for k, v in config.items() if k != "privacy"}
            metadata = meta
    if sign is None and source.signed:
        from torchshield.cli.output import err_console

        err_console.print(f"warning: {out} is not signed, although its source was (signer {source.signer}); "
                          "pass --sign KEY to sign it: a server started with --trust refuses unsigned bundles",
                          highlight=False, markup=False)
    torchshield.save(tensors_or_model, out, key=key if source.encrypted else None, sign_with=sign,
                     metadata=metadata if metadata is not None else m.get("metadata"),
                     privacy=privacy, provenance=provenance,
                     watermark=watermark if watermark is not None else m.get("watermark"),
                     architecture=m.get("architecture"), preprocessing=m.get("preprocessing"), files=files or None)
    return dropped


def _source(path: Path, out: Path) -> Any:
    """``inspect(path)``, refused before any work when the bundle claims a signature that does not
    verify: re-signing (or passing on) such a bundle would launder it (``_save_like`` writes ``out``)."""
    from torchshield.model.bundle import inspect, verify

    source = inspect(path)
    if source.signed:
        checked = verify(path)
        if not checked.ok:
            from torchshield.errors import SignatureError

            raise SignatureError(f"{path} claims a signature that does not verify ({checked.problems[0]}); "
                                 f"{out} was not written",
                                 hint="start from the signer's original bundle ('torchshield model verify' says "
                                      "what changed)")
    return source


def _open(path: Path, key: Any, trusted: Trust) -> tuple[Any, dict[str, Any], dict[str, bytes]]:
    """(module, manifest, carried files) of a bundle: one written by 'torchshield train' (its zoo
    model, DP fixes applied) or any bundle that records its architecture ('model protect'); a
    factory the bundle names is imported only as ``trusted`` allows (``cli.trust``)."""
    from torchshield.model.bundle import inspect

    manifest = inspect(path).manifest
    model = (manifest.get("metadata") or {}).get("model")
    if isinstance(model, dict) and isinstance(model.get("spec"), dict):
        from torchshield.train.recipe import load_trained

        net, manifest = load_trained(path, key=key, verify_with=trusted.verify_with)
        return net, manifest, {}
    from torchshield.model.loading import open_model

    loaded = open_model(path, key=key, writable=True, **trusted.kwargs())  # embed trains it, obfuscate permutes it
    return loaded.module, loaded.manifest, dict(loaded.files)


def _embed_data(spec: str | None, manifest: dict[str, Any], model: Path, *, raw: bool,
                classes: list[Any] | None = None) -> Any:
    """The data set to fine-tune on. ``raw``: the model takes its inputs as a client sends them
    (token ids, or pixels in the range of a ``model protect`` input spec), so a table's values are
    read without normalisation, its label from a column named ``label`` unless the spec says
    otherwise; a bundle from ``torchshield train`` keeps its own data spec."""
    import json as _json

    from torchshield.nn.datasets import load_dataset

    spec = spec or _bundle_data(manifest)
    if not spec:
        raise InputError(f"{model}: the bundle does not name its training data", hint="pass --data")
    parsed: Any = spec
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            parsed = _json.loads(spec)
        except ValueError:
            raise InputError("--data: not valid JSON", hint='e.g. {"path": "tokens.csv", "label": "label"}') from None
    if raw and isinstance(parsed, str) and ":" not in parsed:
        parsed = {"path": parsed}
    if raw and isinstance(parsed, dict):  # ids and pixels are never rescaled
        parsed = {"label": "label", "normalize": "none", **parsed}
    if classes is not None and isinstance(parsed, dict) and "path" in parsed:  # labels coded as the model's
        parsed = {"classes": list(classes), **parsed}
    return load_dataset(parsed)


def _shaped(dataset: Any, inputs: Any) -> Any:
    """``dataset`` with its inputs cast and shaped as the model's input spec says (refused if they do not fit)."""
    from dataclasses import replace

    from torchshield.nn.datasets import Split

    def cast(split: Any, what: str) -> Any:
        x = split.x
        if x[0].numel() == math.prod(inputs.shape):
            x = x.reshape(len(x), *inputs.shape)
        inputs.check(x, f"--data ({what} split)")  # before the cast: 12.5 is no token id
        return Split(x.long() if inputs.tokens else x, split.y)

    return replace(dataset, train=cast(dataset.train, "train"), test=cast(dataset.test, "test"))


def _bundle_data(manifest: dict[str, Any]) -> Any:
    """The data spec of the bundle's training config. ``train`` records the config as written, its
    paths relative to the config file; the data description keeps the resolved path, used when it
    ends with the relative one (so the command works from any folder)."""
    meta = manifest.get("metadata") or {}
    spec = (meta.get("config") or {}).get("data")
    rel = spec if isinstance(spec, str) and not spec.startswith("sklearn:") else (
        spec.get("path") if isinstance(spec, dict) else None)
    recorded = (meta.get("data") or {}).get("name")
    if not isinstance(rel, str) or Path(rel).is_absolute() or not isinstance(recorded, str):
        return spec
    full = Path(recorded)
    if not full.is_absolute() or full.parts[-len(Path(rel).parts):] != Path(rel).parts:
        return spec
    return {**spec, "path": recorded} if isinstance(spec, dict) else {"path": recorded}


@watermark_app.command("embed")
def embed_cmd(model: Path = typer.Argument(..., help="Bundle: from 'torchshield train' or 'model protect'."),
              out: Path = typer.Option(..., "--out", "-o", help="Marked bundle to write."),
              method: str = typer.Option("whitebox", "--method", help="whitebox (weights) or trigger (black-box)."),
              key_file: Path | None = KEY_FILE,
              record_out: Path | None = typer.Option(None, "--record", help="Also write the record (mark.json)."),
              data: str | None = typer.Option(None, "--data", help="Data to fine-tune on (default: the bundle's); a "
                                              "built-in, a CSV/Parquet path (token ids + 'label' for a text model) "
                                              "or a JSON data spec."),
              epochs: int = typer.Option(10, "--epochs", min=1, help="Fine-tuning epochs with the mark's regulariser."),
              bits: int | None = typer.Option(None, "--bits", help="whitebox: bits to embed (default 128)."),
              triggers: int | None = typer.Option(None, "--triggers", help="trigger: set size (default 100)."),
              strength: float | None = typer.Option(None, "--strength", help="Weight of the regulariser."),
              lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the fine-tuning."),
              optimizer: str = typer.Option("adam", "--optimizer", help="Fine-tuning optimiser: adam, or sgd "
                                            "(momentum 0.9)."),
              max_drop: float = typer.Option(0.02, "--max-accuracy-drop",
                                             help="Refuse to write the bundle if held-out accuracy falls by more "
                                                  "than this (absolute; 0.02 = 2 points)."),
              pubkey: Path | None = PUBKEY_OPTION, allow_factory: list[str] = ALLOW_FACTORY_OPTION,
              sign: Path | None = SIGN, force: bool = typer.Option(False, "--force",
                                                                help="Overwrite OUT (and --record) if they exist."),
              as_json: bool = JSON_OPTION) -> None:
    """Embed an ownership mark by fine-tuning MODEL on its data; the record goes in the manifest.

    Trigger inputs follow the bundle's input spec (shape, dtype, range): token ids for a text model."""
    from torchshield.model.sources.records import preprocessing_of
    from torchshield.model.watermark import embed, write_record
    from torchshield.model.watermark.inputs import TriggerInputs, logits_module
    from torchshield.model.watermark.training import OPTIMIZERS, shortfall
    from torchshield.nn.loop import evaluate

    if optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"--lr {lr}: must be a positive number")
    if strength is not None and not (math.isfinite(strength) and strength > 0):
        raise InputError(f"--strength {strength}: must be a positive number (the regulariser's weight)")
    if method not in ("whitebox", "trigger"):
        raise InputError(f"--method {method!r}: expected whitebox or trigger")
    if not 0.0 <= max_drop <= 1.0:  # nan too: a guard that compares against nan never fires
        raise InputError(f"--max-accuracy-drop {max_drop}: must be between 0 and 1 (0.02 = 2 points)",
                         hint="pass 1 to write the bundle whatever its accuracy")
    for flag, value, other in (("--bits", bits, "whitebox"), ("--triggers", triggers, "trigger")):
        if value is not None and method != other:
            raise InputError(f"{flag} applies to --method {other}, not {method}")
    sign = check_bundle_output(out, force, sign)
    trusted = trust(pubkey, allow_factory)
    if record_out is not None:  # written after the bundle: a failure then would leave a bundle without it
        from torchshield.atomic import check_target

        with about("--record"):  # the owner's only copy of an earlier mark's record must not vanish silently
            check_target(record_out, overwrite=force, hint="pass --force to replace it (keep the old record if "
                                                           "an earlier mark is still in use)")
    key = _key(key_file)
    source = _source(model, out)
    pre = preprocessing_of(source.manifest)
    spec = pre.get("input")
    tokens = isinstance(spec, dict) and (spec.get("kind") == "tokens"
                                         or str(spec.get("dtype") or "").startswith("int"))
    trained = isinstance(((source.manifest.get("metadata") or {}).get("model") or {}).get("spec"), dict)
    inputs = None
    # a trigger mark needs the spec; so does data for a model that takes raw inputs (token ids, or images
    # given as rows of pixels, which are shaped to C x H x W): a 'train' bundle reads its own table as it did
    if method == "trigger" or tokens or (not trained and isinstance(spec, dict)):
        inputs = TriggerInputs.from_spec(spec, where=str(model))
    net, manifest, files = _open(model, key, trusted)
    known = _model_classes(manifest, pre)
    with about("--data"):
        dataset = _embed_data(data, manifest, model, raw=tokens or not trained, classes=known)
    if inputs is not None and inputs.tokens:  # a token length from the data, not a guess
        length = int(dataset.train.x[0].numel())
        inputs = TriggerInputs.from_spec(spec, where=str(model), sequence_length=length)
    if inputs is not None:
        dataset = _shaped(dataset, inputs)
    runner = logits_module(net, normalization=pre.get("normalization"))  # the model as served: pixels in
    outputs = _class_outputs(runner, dataset, model)
    dataset = _as_class_indices(dataset, known, outputs, model)
    if max_drop < 1.0 and len(dataset.test) < MIN_HELD_OUT:
        raise InputError(f"--data leaves {len(dataset.test)} held-out rows, too few to check "
                         f"--max-accuracy-drop {max_drop} (at least {MIN_HELD_OUT})",
                         hint="pass more rows (the held-out split is data.test_fraction of them, 0.2 by default), "
                              "or --max-accuracy-drop 1 to write the bundle unchecked")
    section: dict[str, Any] = {"method": method}
    for name, value in (("bits", bits), ("triggers", triggers), ("strength", strength)):
        if value is not None:
            section[name] = value
    if method == "trigger":
        section["num_classes"] = outputs
        if inputs is not None and inputs.tokens:
            _warn_if_no_unused_ids(dataset.train.x, inputs)
    before = evaluate(runner, dataset.test.loader(256))
    with progress(f"embedding a {method} mark", epochs):
        record = embed(runner, dataset.train.loader(64, shuffle=True, seed=0), key, section, epochs=epochs, lr=lr,
                       optimizer=optimizer, inputs=inputs)
    weak = shortfall(runner, record, key)  # verifies, but short of embed's robustness target: said, not silent
    runner.eval()
    if runner is not net:  # the record names tensors as the bundle stores them, not as the wrapper sees them
        record = record.resealed(key, layers={name.removeprefix("inner."): shape
                                              for name, shape in record.layers.items()})
    after = evaluate(runner, dataset.test.loader(256))
    fell = before.get("accuracy", 0.0) - after.get("accuracy", 0.0)
    if fell > max_drop:
        raise CheckFailed(f"embedding the mark cut held-out accuracy from {before.get('accuracy', 0):.4f} to "
                          f"{after.get('accuracy', 0):.4f} ({fell:.4f} > --max-accuracy-drop {max_drop}); "
                          f"{out} was not written",
                          hint="lower --lr or --strength, or raise --max-accuracy-drop if the loss is acceptable")
    dropped = _save_like(source, net, out, key, watermark=record.to_dict(), command="model watermark embed",
                         trained_without_dp=True, sign=sign, files=files)
    if record_out is not None:
        write_record(record_out, record)
    split = None
    if data is None:  # the bundle's own data spec: the same rows trained, recorded for 'privacy audit'
        from torchshield.nn.split import write_split

        split = write_split(out, dataset, private=False)
    report = {"out": str(out), "record": str(record_out) if record_out else None, "method": method,
              "mark_id": record.mark_id, "optimizer": optimizer, "lr": lr, "epochs": epochs,
              "trigger_inputs": inputs.params() if inputs is not None and method == "trigger" else None,
              "accuracy_before": before.get("accuracy"), "accuracy_after": after.get("accuracy"),
              "privacy_dropped": dropped, "split": str(split) if split else None, "weak": weak}
    if dropped or weak:
        from torchshield.cli.output import err_console

        if dropped:
            err_console.print(f"note: {dropped}", highlight=False, markup=False)
        if weak:
            err_console.print(f"warning: the mark verifies but is weak: {weak}; raise --epochs, --strength or --lr "
                              "for one a fine-tune is less likely to remove", highlight=False, markup=False)
    emit(report, lambda c: c.print(
        f"wrote {out}: {method} mark {record.mark_id}; test accuracy {before.get('accuracy', 0):.4f} -> "
        f"{after.get('accuracy', 0):.4f}" + (f"; record in {record_out}" if record_out else ""),
        highlight=False), as_json=as_json)


MIN_HELD_OUT = 50  # held-out rows below which an accuracy guard measures noise (5 rows: 0.0 -> 0.0, audit)


def _model_classes(manifest: dict[str, Any], pre: dict[str, Any]) -> list[Any] | None:
    """The model's classes in output order, where the bundle says: the label values ``train``
    recorded, else ``0 .. num_classes - 1`` from the output spec; None when it says nothing."""
    recorded = ((manifest.get("metadata") or {}).get("data") or {}).get("classes")
    if isinstance(recorded, list) and len(recorded) >= 2:
        return recorded
    count = (pre.get("output") or {}).get("num_classes")
    return list(range(count)) if isinstance(count, int) and count >= 2 else None


def _class_outputs(runner: Any, dataset: Any, model: Path) -> int:
    """How many class scores the model gives, read from a forward pass on two of the data's examples:
    data the model cannot read, or a model that is not a classifier (a language model's
    ``[batch, length, vocab]``), is refused before any work."""
    import torch

    x = dataset.train.x[:2]
    try:
        with torch.no_grad():
            out = runner.eval()(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"{model}: the model cannot read --data's examples of shape {list(x.shape[1:])} ({first})",
                         hint="record the model's input spec (model protect MODEL --out OUT.tsb --input-shape C,H,W "
                              "--input-range LO,HI), or pass data shaped as the model reads it") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{model}: the model answers {shape} for {len(x)} inputs, not one score per class: "
                         "'model watermark embed' marks classifiers",
                         hint="a language model's LM head cannot carry these marks yet; mark a classification "
                              "head of the same body instead")
    return int(out.shape[1])


def _as_class_indices(dataset: Any, known: list[Any] | None, outputs: int, model: Path) -> Any:
    """``dataset`` with labels that are the model's class indices. Where the bundle names its
    classes the loader has already coded the labels by them; otherwise the label values must be
    the indices themselves. (Coding them by their rank among the values present, as a new
    training set does, silently trained digit 1 as class 0 when the data lacked class 0.)"""
    from dataclasses import replace

    import torch

    from torchshield.nn.datasets import Split

    if known is not None:
        if len(known) > outputs:
            raise InputError(f"{model}: the bundle records {len(known)} classes but the model gives {outputs} scores")
        return dataset
    values = list(dataset.classes) or list(range(dataset.num_classes))
    for v in values:
        if isinstance(v, str) or float(v) != int(v) or not 0 <= int(v) < outputs:
            raise InputError(f"--data: label value {v!r} is not a class index of {model} ({outputs} classes: "
                             f"0-{outputs - 1})", hint="give labels as the model's class indices")
    lookup = torch.tensor([int(v) for v in values], dtype=torch.long)
    return replace(dataset, train=Split(dataset.train.x, lookup[dataset.train.y]),
                   test=Split(dataset.test.x, lookup[dataset.test.y]), num_classes=outputs,
                   classes=tuple(range(outputs)))


def _warn_if_no_unused_ids(ids: Any, inputs: Any) -> None:
    """Say so, before the work, when the data leaves too few unused ids for the pattern tokens:
    then they are ids the data contains, and a high-rate fine-tune removes such a set."""
    from torchshield.model.watermark.keyed import MIN_TOKEN_POOL, unseen_ids

    unused = len(unseen_ids(ids, int(inputs.low), int(inputs.high)))
    if unused < MIN_TOKEN_POOL:
        from torchshield.cli.output import err_console

        err_console.print(f"note: the data uses all but {unused} of the {int(inputs.high) + 1} token ids, so the "
                          "trigger patterns are written with ids it contains; a fine-tune above Adam 1e-3 removed "
                          "such sets in our measurements (docs/watermark.md): keep a white-box mark as well",
                          highlight=False, markup=False)


def _record_for(record_path: Path | None, suspect: Path | None) -> Any:
    from torchshield.model.bundle import inspect
    from torchshield.model.watermark import WatermarkRecord, read_record

    if record_path is not None:
        return read_record(record_path)
    if suspect is None:
        raise InputError("no watermark record given", hint="pass --record mark.json")
    doc = inspect(suspect).manifest.get("watermark")
    if not doc:
        raise InputError(f"{suspect} carries no watermark record",
                         hint="pass the owner's --record mark.json (a stolen copy may have it stripped)")
    record = WatermarkRecord.from_dict(doc, where=f"the watermark record in {suspect}")
    if not record.authenticated:  # whoever holds the suspect could have set its threshold or bit count
        raise InputError(f"the watermark record in {suspect} is version 1, whose threshold and parameters are not "
                         "authenticated, so a suspect's own copy cannot be trusted",
                         hint="pass the owner's --record mark.json")
    return record


def _endpoint_options(input_shape: str | None, timeout: float, max_wait: float | None) -> list[int] | None:
    """The endpoint options checked before any request; the parsed ``--input-shape``."""
    if not (math.isfinite(timeout) and timeout > 0):
        raise InputError(f"--timeout {timeout}: must be a positive number of seconds")
    if max_wait is not None and not math.isfinite(max_wait):  # nan passes click's range and never runs out
        raise InputError(f"--max-wait {max_wait}: must be a number of seconds between 0 and 86400")
    if input_shape is None:
        return None
    try:
        shape = [int(d) for d in input_shape.split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise InputError(f"--input-shape {input_shape!r}: expected positive integers separated by commas",
                         hint="e.g. 1,8,8 (channels, height, width)")
    return shape


@watermark_app.command("verify")
def verify_cmd(suspect: Path | None = typer.Argument(None, help="Suspect bundle (white-box, or trigger locally)."),
               record_path: Path | None = typer.Option(None, "--record", "-r", help="The owner's mark.json."),
               key_file: Path | None = KEY_FILE,
               bundle_key_file: Path | None = typer.Option(None, "--bundle-key-file",
                                                           help="Key of an encrypted suspect, if not the owner's."),
               endpoint: str | None = typer.Option(None, "--endpoint", help="Serving API URL (black-box)."),
               api_key: str | None = typer.Option(None, "--api-key", envvar="TORCHSHIELD_API_KEY",
                                                  help="API key for --endpoint (or $TORCHSHIELD_API_KEY)."),
               model_name: str = typer.Option("default", "--model", help="Model name at --endpoint."),
               input_shape: str | None = typer.Option(None, "--input-shape", help="Reshape triggers, e.g. 1,8,8."),
               timeout: float = typer.Option(30.0, "--timeout", help="Seconds per endpoint request."),
               batch_size: int = typer.Option(50, "--batch-size", min=1, max=1024,
                                              help="Most triggers per endpoint request; halved "
                                                   "automatically while the server answers 413 (body limit)."),
               max_wait: float | None = typer.Option(None, "--max-wait", min=0.0, max=86400.0,
                                                     help="Seconds in all to wait out the endpoint's rate limit "
                                                          "(HTTP 429, or 503 with Retry-After) per verification "
                                                          "[default: 60]."),
               pubkey: Path | None = PUBKEY_OPTION, allow_factory: list[str] = ALLOW_FACTORY_OPTION,
               as_json: bool = JSON_OPTION) -> None:
    """Is the owner's mark in SUSPECT (or behind --endpoint)? Exit 0 present, 1 absent, 2 bad input."""
    from torchshield.model.watermark import verify_trigger

    if (suspect is None) == (endpoint is None):
        raise InputError("give either a SUSPECT bundle or --endpoint URL", hint="not both, not neither")
    shape = _endpoint_options(input_shape, timeout, max_wait)
    record = _record_for(record_path, suspect)
    key = _key(key_file)
    try:
        record.open_secret(key)  # a wrong key, or a record altered after embedding, before any other work
        if endpoint is not None:
            from torchshield.model.watermark.remote import RATE_LIMIT_WAIT, endpoint_predictor

            if not api_key:
                raise InputError("--endpoint needs --api-key (or $TORCHSHIELD_API_KEY)")
            predict = endpoint_predictor(endpoint, model_name, api_key, timeout=timeout, input_shape=shape,
                                         rate_limit_wait=RATE_LIMIT_WAIT if max_wait is None else max_wait)
            verdict = verify_trigger(predict, record, key, batch_size=batch_size)
        else:
            verdict = _verify_bundle(suspect, record, key, _key(bundle_key_file) if bundle_key_file else key,
                                     trust(pubkey, allow_factory))
    except CheckFailed as exc:  # exit 1 means "absent": a check that stopped the verification is no verdict
        raise InputError(f"no verdict: {exc.message}", hint=exc.hint) from None
    except (KeyError, TypeError, ValueError, IndexError, ArithmeticError) as exc:
        if record.authenticated:  # fields the owner's key vouches for: a fault of ours, not of the input
            raise
        raise FormatError(f"the version-1 watermark record has a malformed field ({exc})",
                          hint="use the owner's original mark.json") from None
    _report(verdict, as_json)
    if not verdict.present:
        fail(1)


def _verify_bundle(suspect: Path, record: Any, key: Any, bundle_key: Any, trusted: Trust) -> Any:
    import torchshield
    from torchshield.model.watermark import model_predictor, verify_trigger, verify_whitebox

    if record.method == "whitebox":
        info = torchshield.inspect(suspect)
        return verify_whitebox(torchshield.load(suspect, key=bundle_key if info.encrypted else None,
                                                verify_with=trusted.verify_with), record, key)
    from torchshield.model.sources.records import preprocessing_of
    from torchshield.model.watermark.inputs import logits_module

    net, manifest, _ = _open(suspect, bundle_key, trusted)  # a trained or a described bundle, run as it is served
    runner = logits_module(net, normalization=preprocessing_of(manifest).get("normalization"))
    try:
        return verify_trigger(model_predictor(runner), record, key)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # the model cannot take the record's
        # trigger inputs (shapes, dtypes, sizes: a BERT given images fails to unpack their shape)
        shape = record.params.get("input_shape")
        raise InputError(f"{suspect} cannot take this record's trigger inputs (shape {shape}): a record for another "
                         f"model? ({str(exc).splitlines()[0][:160]})",
                         hint="pass the record made for this model's architecture") from None


ABSENT_MEANS = ("absent means no evidence of this mark, not evidence that the model is independent: a copy that "
                "was distilled, re-trained, or fine-tuned at a high rate may not carry it (docs/watermark.md, "
                "'What a verification proves')")


def _report(verdict: Any, as_json: bool) -> None:
    """The verdict on stdout; an absent one also says, on stderr and in the JSON, what absence does
    not show: every mark has copies it does not survive (docs/watermark.md), so exit 1 is no
    certificate of innocence."""
    doc = verdict.to_dict()
    if not verdict.present:
        doc["note"] = ABSENT_MEANS
    what = (f"bit error rate {doc['bit_error_rate']:.3f}" if verdict.method == "whitebox"
            else f"trigger accuracy {doc['trigger_accuracy']:.3f}")

    def human(c: Any) -> None:
        state = "[bold green]present[/]" if verdict.present else "[bold red]absent[/]"
        c.print(f"watermark {verdict.mark_id} ({verdict.method}): {state}; {verdict.matches}/{verdict.total} agree, "
                f"{what}, p-value {verdict.p_value:.3g} (threshold {verdict.threshold:g}, chance {verdict.chance:g})")

    emit(doc, human, as_json=as_json)
    if not verdict.present and not as_json:
        from torchshield.cli.output import err_console

        err_console.print(f"note: {ABSENT_MEANS}", highlight=False, markup=False)


def obfuscate_cmd(model: Path = typer.Argument(..., help="Bundle written by 'torchshield train'."),
                  out: Path = typer.Option(..., "--out", "-o", help="Obfuscated bundle to write."),
                  key_file: Path | None = KEY_FILE,
                  keep_names: bool = typer.Option(False, "--keep-names",
                                                  help="Permute units only; keep parameter names (loads as is). "
                                                       "The plan is sealed too: 'model deobfuscate' reverses it."),
                  pubkey: Path | None = PUBKEY_OPTION, allow_factory: list[str] = ALLOW_FACTORY_OPTION,
                  sign: Path | None = SIGN, force: bool = FORCE, as_json: bool = JSON_OPTION) -> None:
    """Permute and rescale hidden units (same outputs) and scramble parameter names; the plan is sealed.

    The permuted model is run against the original on a probe input (from the bundle's input spec)
    and refused (exit 2, nothing written) if its outputs differ."""
    from torchshield.model.obfuscate import obfuscate_model
    from torchshield.model.sources.records import preprocessing_of

    sign = check_bundle_output(out, force, sign)
    trusted = trust(pubkey, allow_factory)
    key = _key(key_file)
    source = _source(model, out)
    net, _, files = _open(model, key, trusted)
    meta = dict(source.manifest.get("metadata") or {})
    # refuses (exit 2, naming why) a model in which nothing can change: never a no-op reported as done
    result = obfuscate_model(net, key, scramble_names=not keep_names,
                             input_spec=preprocessing_of(source.manifest).get("input"))
    changed = result.counts()
    meta["obfuscation"] = {**result.entry, "changed": changed}  # sealed plan, names kept or not
    _save_like(source, result.tensors, out, key, metadata=meta, command="model obfuscate", sign=sign, files=files)
    by_kind = ", ".join(f"{n} {kind}" for kind, n in result.units_by_kind.items())
    emit({"out": str(out), "names_scrambled": not keep_names, "changed": changed,
          "units_by_kind": result.units_by_kind, "note": result.note or None},
         lambda c: c.print(f"wrote {out}: {changed['units_moved']} hidden units moved ({by_kind}), "
                           f"{changed['tensors_changed']} tensors changed, "
                           f"{changed['names_scrambled']} names scrambled"
                           + (f"; {result.note}" if result.note else ""), highlight=False),
         as_json=as_json)


def deobfuscate_cmd(model: Path = typer.Argument(..., help="Bundle written by 'model obfuscate'."),
                    out: Path = typer.Option(..., "--out", "-o", help="Restored bundle to write."),
                    key_file: Path | None = KEY_FILE, sign: Path | None = SIGN, force: bool = FORCE,
                    as_json: bool = JSON_OPTION) -> None:
    """Restore the original weights and names, bit for bit, with the key used to obfuscate (tied
    weights stay one tensor)."""
    from torchshield.model.obfuscate import deobfuscate

    sign = check_bundle_output(out, force, sign)
    key = _key(key_file)
    source = _source(model, out)
    meta = dict(source.manifest.get("metadata") or {})
    entry = meta.pop("obfuscation", None)
    if not isinstance(entry, dict) or "sealed" not in entry:
        raise InputError(f"{model} holds no sealed obfuscation plan",
                         hint="only bundles from 'model obfuscate' can be restored (with --keep-names, only those "
                              "written by a release that seals the plan with it)")
    from torchshield.model.bundle import load_contents

    contents = load_contents(model, key=key if source.encrypted else None)
    restored = deobfuscate(contents.weights, entry, key)
    _save_like(source, restored, out, key, metadata=meta, command="model deobfuscate", sign=sign,
               files=dict(contents.files))
    emit({"out": str(out), "tensors": len(restored)},
         lambda c: c.print(f"wrote {out}: {len(restored)} tensors restored"), as_json=as_json)
