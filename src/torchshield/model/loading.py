"""Bundles that carry the model, not only its tensors: ``protect_model`` writes one, and
``load_model`` returns the ready module from it with every recorded fix applied.

Trust. Rebuilding a ``factory`` architecture imports code the bundle names, so it happens only
when the bundle's signature was verified against a key the caller gave (``verify_with``) or the
caller allowed that factory by name (``allow_factories``). Hugging Face architectures are built
only from classes ``transformers`` ships (no remote code); registry names only from what this
process registered (or torchvision)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshield.errors import FormatError, InputError, UnsafeFileError
from torchshield.model.bundle import BundleContents, load_contents, save
from torchshield.model.sources.fixes import apply_fixes
from torchshield.model.sources.read import build_module, read_source
from torchshield.model.sources.records import architecture_of, preprocessing_of

__all__ = ["LoadedModel", "ProtectReport", "architecture_of", "export_hf", "load_model", "open_model",
           "preprocessing_of", "protect_model"]


# --- protect ---------------------------------------------------------------------------------

def _scan_source(path: Path) -> None:
    """Refuse a model source (file or model directory) the static scanner finds unsafe.

    A directory is scanned as the set of files ``protect`` will deserialise (every weight file
    and shard its index lists); JSON and tokenizer files are read as bytes, never unpickled.
    When the scanner takes directories itself, this becomes one ``scan(path)`` call."""
    from torchshield.model.scan import scan
    from torchshield.model.sources.hf import hf_weight_files, is_hf_dir

    if path.is_dir():
        files = hf_weight_files(path) if is_hf_dir(path) else []
    else:
        files = [path] if path.is_file() else []
    for f in files:
        if f.suffix in (".safetensors", ".json"):
            continue  # safetensors headers are parsed by the safetensors library; JSON is never unpickled
        report = scan(f)
        if not report.safe:
            raise UnsafeFileError(f"{f} can run code when loaded; refusing to protect it",
                                  hint=f"see: torchshield model scan {f}")


@dataclass(frozen=True)
class ProtectReport:
    out: Path
    read: list[str]
    tensors: int
    tied: dict[str, str]
    kept_training_state: bool
    dropped: dict[str, str]
    architecture: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.out), "read": self.read, "tensors": self.tensors, "tied": self.tied,
                "kept_training_state": self.kept_training_state, "dropped": self.dropped,
                "dropped_count": len(self.dropped), "architecture": self.architecture}


def protect_model(path: str | os.PathLike[str], out: str | os.PathLike[str], *, key: Any = None,
                  sign_with: Any = None, architecture: Mapping[str, Any] | None = None,
                  input_spec: Mapping[str, Any] | None = None, keep_training_state: bool = False,
                  metadata: Mapping[str, Any] | None = None, source_key: Any = None,
                  overwrite: bool = False) -> ProtectReport:
    """Read ``path`` (file or HF directory, scanned first) and write one bundle to ``out``."""
    from torchshield.model.bundle import shared_tensors

    _scan_source(Path(path))
    src = read_source(path, architecture=architecture, input_spec=input_spec,
                      keep_training_state=keep_training_state, key=source_key)
    name = Path(path).name
    save(src.tensors, out, key=key, sign_with=sign_with, metadata={"source": name, **dict(metadata or {})},
         provenance={"source_file": name, "command": "model protect", "read": src.read},
         architecture=src.architecture, preprocessing=src.preprocessing or None, files=src.files or None,
         training_state=src.training_state, overwrite=overwrite)
    arch = src.architecture
    label = None if arch is None else str(arch.get("class") or arch.get("name") or arch.get("target") or arch["kind"])
    return ProtectReport(Path(out), src.read, len(src.tensors), shared_tensors(src.tensors),
                         src.training_state is not None, src.dropped, label)


# --- load --------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A ready module and what the bundle says about it."""

    module: nn.Module
    manifest: dict[str, Any]
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    fixes: list[str] = field(default_factory=list)


def _retie(module: nn.Module, aliases: Mapping[str, str]) -> None:
    """Make each alias the very same Parameter as its canonical name (a real tie, not a copy)."""
    for alias, target in aliases.items():
        try:
            obj: torch.Tensor = module.get_parameter(target)
        except AttributeError:
            try:
                obj = module.get_buffer(target)
            except AttributeError:
                continue
        parent, _, attr = alias.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        if isinstance(obj, nn.Parameter):
            setattr(owner, attr, obj)
        elif attr in owner._buffers:
            owner._buffers[attr] = obj


def _fill(module: nn.Module, contents: BundleContents, path: Path) -> None:
    try:
        module.load_state_dict(contents.weights, strict=True, assign=True)
    except RuntimeError as exc:
        raise FormatError(f"{path}: the weights do not fit the recorded architecture "
                          f"({_first_problem(exc)})",
                          hint="the bundle records fixes it cannot re-apply, or was edited") from None
    _retie(module, contents.aliases)


def own_memory(module: nn.Module) -> nn.Module:
    """Give every parameter and buffer of ``module`` its own memory, keeping tied tensors tied.

    A loaded module's tensors are views of the bundle's one read-only buffer (no copy: serving
    needs none), and views share one autograd version counter. Replacing only ``p.data`` keeps that
    counter, so in training a BatchNorm's in-place update of its running statistics "modifies" every
    weight saved for backward (``RuntimeError: ... modified by an inplace operation``, measured on a
    user's ResNet in ``watermark embed``). Fresh tensors have counters of their own."""
    fresh: dict[int, Any] = {}
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None:
                if id(p) not in fresh:
                    fresh[id(p)] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                mod._parameters[name] = fresh[id(p)]
        for name, b in list(mod._buffers.items()):
            if b is not None:
                if id(b) not in fresh:
                    fresh[id(b)] = b.detach().clone()
                mod._buffers[name] = fresh[id(b)]
    return module


def open_model(bundle: str | os.PathLike[str], *, key: Any = None, verify_with: Any = None,
               allow_factories: Iterable[str] = (), device: str | torch.device = "cpu",
               writable: bool = False) -> LoadedModel:
    """Decrypt and check ``bundle``, rebuild its module, apply recorded fixes, load the weights.

    ``writable``: the module will be trained or changed, so its tensors get memory of their own
    (:func:`own_memory`); otherwise they are read-only views of the bundle."""
    from torchshield.model.sources.factory import factory_allowed
    from torchshield.model.sources.state import unflatten_state

    path = Path(bundle)
    contents = load_contents(path, key=key, verify_with=verify_with)
    manifest = contents.manifest
    arch = architecture_of(manifest)
    if arch is None:
        raise FormatError(f"{path} does not record its architecture, only tensors",
                          hint="protect it with --arch NAME or --factory package.module:function, or read the "
                               "tensors with torchshield.load")
    obfuscated = (manifest.get("metadata") or {}).get("obfuscation")
    if isinstance(obfuscated, dict) and not obfuscated.get("names_kept"):
        raise FormatError(f"{path} was obfuscated with scrambled names ('model obfuscate'): its tensors no longer "
                          "carry the architecture's names, so no module can be rebuilt from it",
                          hint="restore it with 'torchshield model deobfuscate' and the key it was obfuscated "
                               "with; a white-box mark verifies on it as it is")
    target = str(arch.get("target") or (arch.get("spec") or {}).get("type") or "")
    allow_code = verify_with is not None or factory_allowed(target, allow_factories)
    records = list((manifest.get("privacy") or {}).get("model_fixes") or []) + list(arch.get("fixes") or [])
    if arch.get("kind") == "hf":  # transformers builds, maps names and ties in one step
        from torchshield.model.sources.hf import hf_model_from_tensors

        canonical = {k: v for k, v in contents.weights.items() if k not in contents.aliases}
        module = hf_model_from_tensors(dict(arch.get("config") or {}), canonical, source=str(path))
        fixes = apply_fixes(module, records)
    else:
        module = build_module(arch, allow_code=allow_code)
        fixes = apply_fixes(module, records)
        _fill(module, contents, path)
    module.eval()
    if writable:
        own_memory(module)
    if torch.device(device).type != "cpu":
        module = module.to(device)
    state = unflatten_state(contents.training_state) if contents.training_state is not None else None
    return LoadedModel(module, manifest, arch, preprocessing_of(manifest), contents.files, state, fixes)


def load_model(bundle: str | os.PathLike[str], *, key: Any = None, verify_with: Any = None,
               allow_factories: Iterable[str] = (), device: str | torch.device = "cpu",
               writable: bool = False) -> nn.Module:
    """The ready module in ``bundle`` (eval mode), with every recorded fix applied.

    ``key`` decrypts an encrypted bundle; ``verify_with`` (a public key) requires its signature
    and also permits rebuilding a ``factory`` architecture; ``allow_factories`` names factories
    (``"pkg.models:*"``) to import for unsigned bundles. The module's tensors are read-only views
    of the bundle (no copy, for inference and serving); pass ``writable=True`` to train or edit it
    (a copy of the weights, see :func:`own_memory`)."""
    return open_model(bundle, key=key, verify_with=verify_with, allow_factories=allow_factories,
                      device=device, writable=writable).module


# --- export ------------------------------------------------------------------------------------

def export_hf(bundle: str | os.PathLike[str], out: str | os.PathLike[str], *, key: Any = None,
              verify_with: Any = None, overwrite: bool = False) -> list[str]:
    """Write a bundle holding a transformers model as a directory ``from_pretrained`` reads
    (plaintext on disk). The directory appears whole or not at all."""
    from torchshield.model.sources.hf import export_hf_dir

    dest = Path(out)
    if dest.exists() and not (overwrite and dest.is_dir()):
        raise InputError(f"{dest} already exists", hint="pass --force to replace it, or choose another directory")
    from torchshield.model.header import inspect

    kind = (architecture_of(inspect(bundle).manifest) or {}).get("kind")
    if kind != "hf":
        raise InputError(f"{bundle} holds a {kind or 'tensors-only'} model, not a Hugging Face one",
                         hint="export it with --format safetensors")
    loaded = open_model(bundle, key=key, verify_with=verify_with, writable=True)
    module = loaded.module
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        names = export_hf_dir(module, loaded.files, tmp)
        os.chmod(tmp, 0o700)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def _first_problem(exc: Exception) -> str:
    """torch's load_state_dict message without its header line: the first mismatch it names."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines[1:]), lines[0] if lines else type(exc).__name__)
    return detail[:300]
