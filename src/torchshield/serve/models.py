"""The models a service answers for: loaded from ``.tsb`` bundles, validated inputs, hardened outputs.

A bundle's metadata describes how to serve it (``torchshield train`` writes these keys; any
bundle can carry them)::

    {"name": "digits",                                   # default: the file name's stem
     "model": {"type": "mlp", "hidden": [64]},           # torchshield.nn.zoo spec
     "input": {"shape": [64], "dtype": "float32", "min": 0, "max": 16},
     "num_classes": 10,                                  # or "classes": ["zero", ...]
     "serve": {"output": "top_k", "top_k": 3, "decimals": 2, "max_batch": 64}}

Only bundles signed by a trusted key are served (:class:`TrustPolicy`): each bundle is loaded
with ``verify_with=`` the trusted public key that signed it, so its signature is checked over the
manifest and the data before the model exists; an unsigned bundle, or one signed by any other
key, is refused at start-up and on reload, unless the operator named the opt-out
(``allow_unsigned``, ``serve --allow-unsigned``), which is logged loudly. Threat model: someone
who can replace a bundle file on the serving machine (or in the store it comes from) but does not
hold a trusted signing key.

Encrypted bundles are decrypted in memory by ``torchshield.load`` (no plaintext file ever
exists). Inputs are checked against the spec (type, shape, finiteness, bounds, batch size)
before the model runs. Output hardening limits what each answer reveals, which raises the
cost of model extraction and membership inference: ``label`` (class only), ``top_k`` (the k
best classes with rounded probabilities) or ``probabilities`` (all classes, rounded).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchshield.errors import FormatError, InputError, SignatureError
from torchshield.serve.access.keys import valid_model_name
from torchshield.serve.batching import ForwardQueue
from torchshield.serve.inputs import InvalidInput

__all__ = ["InputSpec", "InvalidInput", "ModelRegistry", "OutputPolicy", "ServedModel", "TrustPolicy",
           "load_bundle_model"]

log = logging.getLogger("torchshield.serve")

_DTYPES = {"float32", "float64", "float16", "int64", "int32", "uint8"}
OUTPUT_MODES = ("label", "top_k", "probabilities")
INLINE_BUDGET_S = 5e-4  # the longest a request may hold the event loop for its model (calibrate_inline)


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"
    min: float | None = None
    max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> InputSpec:
        try:
            shape = tuple(int(v) for v in d["shape"])
            dtype = str(d.get("dtype", "float32"))
            lo = None if d.get("min") is None else float(d["min"])
            hi = None if d.get("max") is None else float(d["max"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{where}: metadata 'input' needs a 'shape' list and numeric min/max",
                              hint='e.g. {"shape": [64], "dtype": "float32", "min": 0, "max": 16}') from None
        if dtype not in _DTYPES or not shape or min(shape) < 1:
            raise FormatError(f"{where}: metadata 'input' has an unsupported dtype or shape",
                              hint=f"dtype one of {sorted(_DTYPES)}, positive dimensions")
        return cls(shape, dtype, lo, hi)


@dataclass(frozen=True)
class OutputPolicy:
    mode: str = "top_k"
    top_k: int = 3
    decimals: int = 3

    def __post_init__(self) -> None:
        if self.mode not in OUTPUT_MODES:
            raise InputError(f"output mode {self.mode!r} is unknown", hint=f"use one of {', '.join(OUTPUT_MODES)}")
        if self.top_k < 1 or not 0 <= self.decimals <= 6:
            raise InputError("output: top_k must be >= 1 and decimals between 0 and 6")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "top_k": self.top_k, "decimals": self.decimals}


@dataclass
class ServedModel:
    """One model ready to answer: the module, its input spec and output policy."""

    name: str
    module: Any
    spec: InputSpec
    num_classes: int
    output: OutputPolicy = field(default_factory=OutputPolicy)
    max_batch: int = 64
    classes: list[str] | None = None
    source: str = ""
    encrypted: bool = False
    signer: str | None = None  # fingerprint of the signer whose signature was verified at load
    trusted: bool = False  # the signature was verified against a trusted key
    loop_bytes: int = 0  # request bodies up to this size may run on the event loop (calibrate_inline)
    io: Any = None  # ModelIO (serve/inputs.py) for bundles with an architecture: text, token ids, images, generate
    # one forward at a time; concurrent requests batched into it (serve/batching.py)
    forwards: ForwardQueue = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.forwards = ForwardQueue(self._logits, max_rows=self.max_batch,
                                     pad_id=self.io.pad_id if self.io is not None else 0)

    @property
    def kind(self) -> str:
        return self.io.kind if self.io is not None else "tensor"

    @property
    def causal(self) -> bool:
        return self.io is not None and self.io.causal

    def describe(self) -> dict[str, Any]:
        if self.io is not None:
            return {"name": self.name, "input": self.io.describe(), "num_classes": self.num_classes,
                    "classes": self.classes, "output": self.output.to_dict(), "max_batch": self.max_batch,
                    "generate": self.io.generate_limits() if self.causal else None, "encrypted": self.encrypted,
                    "signature": {"signer": self.signer, "trusted": self.trusted}}
        return {"name": self.name, "input": self.spec.to_dict(), "num_classes": self.num_classes,
                "classes": self.classes, "output": self.output.to_dict(), "max_batch": self.max_batch,
                "encrypted": self.encrypted, "signature": {"signer": self.signer, "trusted": self.trusted}}

    def validate(self, payload: Any, *, texts: Any = None) -> Any:
        """``payload`` (parsed JSON) -> a float32 tensor (or the model's batch type), or
        :class:`InvalidInput` naming the problem. ``texts``: a hook applied to a text batch
        before tokenisation (the privacy gateway's de-identification)."""
        import numpy as np
        import torch

        if self.io is not None:
            return self.io.validate(payload, max_batch=self.max_batch, texts=texts)

        if not isinstance(payload, dict) or set(payload) != {"inputs"}:
            raise InvalidInput('body must be a JSON object with exactly one field, "inputs"')
        inputs = payload["inputs"]
        if not isinstance(inputs, list) or not inputs:
            raise InvalidInput('"inputs" must be a non-empty list of inputs')
        if len(inputs) > self.max_batch:
            raise InvalidInput(f'"inputs" holds {len(inputs)} inputs; this model takes at most {self.max_batch}')
        try:
            arr = np.asarray(inputs)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInput(f'"inputs" must be a list of arrays of shape {list(self.spec.shape)}') from None
        if arr.dtype.kind not in "iuf":
            raise InvalidInput('"inputs" must hold numbers only, every input of shape '
                               f"{list(self.spec.shape)}")
        if arr.shape[1:] != self.spec.shape:
            raise InvalidInput(f"each input must have shape {list(self.spec.shape)}, got {list(arr.shape[1:])}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidInput('"inputs" contains NaN or infinite values')
        if self.spec.dtype.startswith(("int", "uint")) and arr.dtype.kind == "f" and (arr != np.round(arr)).any():
            raise InvalidInput(f"this model takes {self.spec.dtype} inputs; got fractional values")
        if self.spec.min is not None and arr.min() < self.spec.min:
            raise InvalidInput(f"input values must be >= {self.spec.min}")
        if self.spec.max is not None and arr.max() > self.spec.max:
            raise InvalidInput(f"input values must be <= {self.spec.max}")
        return torch.from_numpy(arr.astype(np.float32, copy=False))

    def _logits(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self.io.forward(self.module, x) if self.io is not None else self.module(x)

    def predict(self, x: Any, *, wait: bool = True) -> dict[str, Any] | None:
        """Run the model and harden its output per :class:`OutputPolicy`.

        ``predictions`` are always integer class indices (a stable contract: black-box watermark
        verification reads them); ``outputs`` follow the policy and use class names if known.
        The forward may be shared with concurrent requests (:class:`ForwardQueue`). With
        ``wait=False`` returns None instead of waiting for another thread's forward (the event
        loop must not block on it)."""
        import torch

        if wait:
            logits = self.forwards.run(x)
        else:
            logits = self.forwards.try_run(x)
            if logits is None:
                return None
        probs = torch.softmax(logits.float(), dim=-1)
        labels = probs.argmax(dim=-1).tolist()
        pol = self.output
        if self.causal:  # a causal LM's predict: the most likely next token after each input
            return {"outputs": labels, "predictions": labels, "labels": labels}
        if pol.mode == "label":  # class names when the bundle has them; "predictions" stays indices
            outputs: Any = [self.classes[i] for i in labels] if self.classes else labels
        elif pol.mode == "probabilities":
            outputs = [[round(float(p), pol.decimals) for p in row] for row in probs.tolist()]
        else:
            k = min(pol.top_k, probs.shape[-1])
            vals, idx = probs.topk(k, dim=-1)
            outputs = [[{"label": self.classes[i] if self.classes else i, "p": round(float(v), pol.decimals)}
                        for v, i in zip(vr, ir, strict=True)] for vr, ir in zip(vals.tolist(), idx.tolist(),
                                                                                 strict=True)]
        return {"outputs": outputs, "predictions": labels, "labels": labels}

    def generate(self, text: str, *, max_new_tokens: int) -> dict[str, Any]:
        """Greedy continuation of ``text`` within the bundle's limits (causal LMs only)."""
        if not self.causal:
            raise InvalidInput(f"model {self.name!r} is not a causal language model; use /predict")
        with self.forwards.exclusive():
            return self.io.generate(self.module, text, max_new_tokens=max_new_tokens)

    def calibrate_inline(self, budget_s: float = INLINE_BUDGET_S, repeats: int = 5) -> int:
        """Measure how large a request this model answers within ``budget_s`` (JSON parse,
        validation, model) and let bodies up to that size run on the server's event loop.

        That skips the hand-off to a worker thread: ~0.2 ms per request here, and under load the
        worker threads' contention for the interpreter cost a small model two thirds of its
        throughput. Larger bodies, and models slower than the budget for one input, run on a
        worker thread so that the loop is never blocked for long. The probe bodies use one-digit
        numbers, the most compact encoding, so that a real body of the same size holds no more
        values than the one measured. Returns (and sets) :attr:`loop_bytes`."""
        import json
        import time

        self.loop_bytes = 0
        if budget_s <= 0 or self.io is not None:  # text, images, generation: always a worker thread
            return 0
        lo = self.spec.min if self.spec.min is not None else 0
        value = int(lo) if float(lo).is_integer() else lo
        row: Any = value
        for dim in reversed(self.spec.shape):
            row = [row] * dim
        rows = 1
        while rows <= self.max_batch:
            body = json.dumps({"inputs": [row] * rows}, separators=(",", ":")).encode()
            times = []
            for _ in range(repeats + 1):
                t = time.perf_counter()
                self.predict(self.validate(json.loads(body)))
                times.append(time.perf_counter() - t)
            if min(times[1:]) > budget_s:  # the least noisy estimate of the work itself
                break
            self.loop_bytes = len(body)
            rows *= 2
        return self.loop_bytes


def _serve_options(meta: dict[str, Any], where: str, override: OutputPolicy | None) -> tuple[OutputPolicy, int]:
    serve = meta.get("serve") or {}
    try:
        pol = override or OutputPolicy(mode=str(serve.get("output", "top_k")), top_k=int(serve.get("top_k", 3)),
                                       decimals=int(serve.get("decimals", 3)))
        max_batch = int(serve.get("max_batch", 64))
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where}: metadata 'serve' is malformed ({exc})") from None
    return pol, max(1, max_batch)


@dataclass(frozen=True)
class TrustPolicy:
    """The signers whose bundles are served, by fingerprint; ``allow_unsigned`` is the named,
    logged opt-out that serves any bundle (a signature by a trusted key is still checked)."""

    signers: dict[str, Any] = field(default_factory=dict)  # fingerprint -> Ed25519PublicKey
    allow_unsigned: bool = False

    @classmethod
    def from_files(cls, paths: list[str] | tuple[str, ...], *, allow_unsigned: bool = False) -> TrustPolicy:
        from torchshield.crypto import signing

        keys = [signing.load_public_key(p) for p in paths]
        return cls({signing.fingerprint(k): k for k in keys}, allow_unsigned)

    def describe(self) -> str:
        return ", ".join(sorted(self.signers)) or "none"

    def verifier(self, path: Path, signed: bool, signer: str | None) -> Any:
        """The trusted public key to load ``path`` with (``verify_with``), or None to load it
        unverified (only with ``allow_unsigned``); SignatureError if it may not be served."""
        key = self.signers.get(signer) if signed and signer else None
        if key is not None:
            return key
        what = f"signed by {signer}, which is not a trusted signer" if signed else "not signed"
        if self.allow_unsigned:
            log.warning("SERVING AN UNVERIFIED BUNDLE (--allow-unsigned): %s is %s", path, what)
            return None
        raise SignatureError(f"{path} is {what} (trusted: {self.describe()})",
                             hint="sign it (torchshield model protect --sign) and pass the signer's .pub with "
                                  "--trust, or start with --allow-unsigned to serve it unverified")


def load_bundle_model(path: str | os.PathLike[str], *, master: Any = None,
                      output: OutputPolicy | None = None, trust: TrustPolicy | None = None) -> ServedModel:
    """Rebuild the model a bundle describes, loading (decrypting in memory) its weights, after
    checking its signature against ``trust`` (default: no trusted signer, nothing unsigned: every
    bundle is refused)."""
    import torchshield
    from torchshield.nn.zoo import build_model
    from torchshield.train.bundle_meta import flat_model_metadata

    p = Path(path)
    info = torchshield.inspect(p)
    verify_with = (trust or TrustPolicy()).verifier(p, info.signed, info.signer)
    manifest = info.manifest
    meta = flat_model_metadata(dict(manifest.get("metadata") or {}))
    name = str(meta.get("name") or p.name.split(".")[0])
    if not valid_model_name(name):
        raise FormatError(f"{p}: model name {name!r} is not servable",
                          hint="names use letters, digits, '.', '_' and '-'; set metadata name=")
    if isinstance(manifest.get("architecture"), dict) or (manifest.get("privacy") or {}).get("model_fixes"):
        return _load_described(p, info, name, meta, master=master, output=output, verify_with=verify_with)
    if "input" not in meta or "model" not in meta:
        raise FormatError(f"{p}: metadata lacks 'model' and 'input', so the service cannot rebuild it",
                          hint="bundles from `torchshield train` carry them; see docs/serving.md")
    spec = InputSpec.from_dict(meta["input"], str(p))
    classes = [str(c) for c in meta["classes"]] if isinstance(meta.get("classes"), list) else None
    num_classes = int(meta.get("num_classes") or (len(classes) if classes else 0))
    if num_classes < 1:
        raise FormatError(f"{p}: metadata needs 'num_classes' (or a 'classes' list)")
    module = build_model(dict(meta["model"]), in_shape=spec.shape, num_classes=num_classes)
    encrypted = bool(info.encrypted)
    tensors = torchshield.load(p, key=master if encrypted else None, verify_with=verify_with)
    try:
        module.load_state_dict(tensors)
    except RuntimeError as exc:
        raise FormatError(f"{p}: weights do not fit the model described in metadata "
                          f"({str(exc).splitlines()[0][:160]})") from None
    module.eval()
    pol, max_batch = _serve_options(meta, str(p), output)
    return ServedModel(name=name, module=module, spec=spec, num_classes=num_classes, output=pol,
                       max_batch=max_batch, classes=classes, source=str(p), encrypted=encrypted,
                       signer=info.signer if verify_with is not None else None, trusted=verify_with is not None)


def _load_described(p: Path, info: Any, name: str, meta: dict[str, Any], *, master: Any,
                    output: OutputPolicy | None, verify_with: Any) -> ServedModel:
    """A bundle that records its architecture (manifest v2: Hugging Face, factory, zoo, or a
    ``train`` bundle): rebuilt by :func:`torchshield.model.loading.open_model`, recorded fixes
    (DP's BatchNorm -> GroupNorm) and tied tensors applied; inputs per its preprocessing."""
    from torchshield.model.loading import open_model
    from torchshield.serve.inputs import model_io  # noqa: I001 - the heavy part, loaded on use

    encrypted = bool(info.encrypted)
    try:
        loaded = open_model(p, key=master if encrypted else None, verify_with=verify_with)
    except FormatError as exc:
        raise FormatError(f"{p}: cannot be served: {exc}", hint=getattr(exc, "hint", None)) from None
    io = model_io(loaded.preprocessing, loaded.files, meta.get("serve") or {}, str(p))
    out = loaded.preprocessing.get("output") or {}
    labels = out.get("labels") or meta.get("classes")
    classes = [str(c) for c in labels] if isinstance(labels, list) else None
    num_classes = int(out.get("num_classes") or out.get("vocab_size") or meta.get("num_classes")
                      or (len(classes) if classes else 0))
    if num_classes < 1:
        raise FormatError(f"{p}: the bundle records no class count or vocabulary for its output",
                          hint="protect it with --input-shape so that protect records the class count")
    pol, max_batch = _serve_options(meta, str(p), output)
    spec = InputSpec(tuple(io.shape or (1,)), "int64" if io.kind == "tokens" else "float32", io.min, io.max)
    return ServedModel(name=name, module=loaded.module, spec=spec, num_classes=num_classes, output=pol,
                       max_batch=max_batch, classes=classes, source=str(p), encrypted=encrypted,
                       signer=info.signer if verify_with is not None else None, trusted=verify_with is not None,
                       io=io)


class ModelRegistry:
    """Served models by name; names are validated and duplicates refused."""

    def __init__(self, models: list[ServedModel] | None = None) -> None:
        self._models: dict[str, ServedModel] = {}
        for m in models or []:
            self.add(m)

    def add(self, model: ServedModel) -> None:
        if model.name in self._models:
            raise InputError(f"two bundles are named {model.name!r}", hint="set distinct metadata names")
        self._models[model.name] = model

    def get(self, name: str) -> ServedModel | None:
        return self._models.get(name) if valid_model_name(name) else None

    def names(self) -> list[str]:
        return sorted(self._models)

    def models(self) -> list[ServedModel]:
        return [self._models[n] for n in sorted(self._models)]

    @classmethod
    def from_bundles(cls, paths: list[str], *, master: Any = None, output: OutputPolicy | None = None,
                     trust: TrustPolicy | None = None) -> ModelRegistry:
        return cls([load_bundle_model(p, master=master, output=output, trust=trust) for p in paths])
