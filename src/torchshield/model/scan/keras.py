"""Keras model configs: what in them runs code when the model is loaded.

A Keras model is rebuilt from a JSON config (``config.json`` in a ``.keras`` archive, the
``model_config`` attribute of a legacy ``.h5`` file). Three things in it reach code:

* ``Lambda`` layers (and Keras 3's ``__lambda__`` objects) carry marshalled Python bytecode
  that runs on load with ``safe_mode=False`` (the default for legacy ``.h5``): **critical**.
* ``"class_name": "function"`` entries name any callable by module and name: judged like a
  pickle global (``os.system`` is critical, an unknown name high).
* custom objects: a ``module`` outside the Keras packages, or a ``registered_name`` of the
  ``package>Name`` form, means the class comes from code outside the file (imported from that
  module, or from the loading program's registry): judged like a pickle global when the
  module is named, **high** otherwise. A legacy ``.h5`` config names custom classes by bare
  ``class_name`` only; those cannot be told from built-ins without Keras and are not flagged
  (Keras refuses them unless the loader passes ``custom_objects``).

HDF5 files are read with ``h5py`` (the ``keras`` extra) in a child process: libhdf5 is C code
with a history of memory-safety bugs on crafted files, so a crash or a hang there ends one
child (with a finding) instead of the scan; the child gets a memory and CPU cap. Only the root
attributes are read, never a dataset.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchshield.model.scan.allowlist import CRITICAL, HIGH, Allowlist

__all__ = ["H5Config", "config_findings", "h5py_available", "read_h5_config"]

_KERAS_PACKAGES = frozenset({"keras", "tf_keras", "keras_core", "keras_hub", "keras_nlp", "keras_cv"})
_LAMBDA_CLASSES = frozenset({"Lambda", "__lambda__"})
_H5_KEYS = ("model_config", "training_config")
H5_TIMEOUT_S = 60.0
_H5_MEMORY = 4 << 30

# Run in a fresh interpreter (-I: no user site, no PYTHONPATH, no cwd on sys.path). Reads the
# root attributes only; prints one JSON line.
_H5_CHILD = r"""
import io, json, resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[3]), int(sys.argv[3]) + 1))
import h5py
src = sys.argv[1]
out = {"attrs": {}}
try:
    handle = h5py.File(io.BytesIO(sys.stdin.buffer.read()) if src == "-" else src, "r")
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}))
    sys.exit(0)
with handle:
    for key in sys.argv[4:]:
        try:
            value = handle.attrs.get(key)
        except Exception as exc:
            out["attrs"][key] = None
            out.setdefault("attr_errors", {})[key] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif value is not None and not isinstance(value, str):
            value = str(value)
        out["attrs"][key] = value
print(json.dumps(out))
"""


@dataclass
class H5Config:
    """What the child read from an HDF5 file: the root attributes, or why it could not."""

    attrs: dict[str, str | None] = field(default_factory=dict)
    missing_h5py: bool = False
    malformed: str | None = None  # h5py refused the file: not HDF5, or damaged
    failed: str | None = None  # the reader crashed, hung or was killed: treat as hostile


def h5py_available() -> bool:
    return importlib.util.find_spec("h5py") is not None


def read_h5_config(source: Path | bytes, *, timeout: float | None = None) -> H5Config:
    """Read ``model_config``/``training_config`` from an HDF5 file (a path, or its bytes)."""
    timeout = H5_TIMEOUT_S if timeout is None else timeout
    if not h5py_available():
        return H5Config(missing_h5py=True)
    arg, payload = ("-", source) if isinstance(source, bytes) else (str(source), b"")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-I", "-c", _H5_CHILD, arg, str(_H5_MEMORY), str(int(timeout)), *_H5_KEYS]
    try:
        proc = subprocess.run(cmd, input=payload, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return H5Config(failed=f"the HDF5 reader did not finish within {timeout:.0f} s")
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        doc = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return H5Config(failed=f"the HDF5 reader (libhdf5) died on this file ({how}): malformed or crafted")
    if "error" in doc:
        return H5Config(malformed=str(doc["error"]))
    attrs = doc.get("attrs") or {}
    return H5Config(attrs={k: v if isinstance(v, str) else None for k, v in attrs.items()})


def config_findings(doc: Any, allow: Allowlist) -> list[tuple[str, str, str]]:
    """(severity, message, callable) for everything in a Keras config that reaches code."""
    out: list[tuple[str, str, str]] = []
    todo: list[Any] = [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        todo.extend(node.values())
        kind = node.get("class_name")
        if not isinstance(kind, str):
            continue
        module = node.get("module")
        if kind in _LAMBDA_CLASSES:
            out.append(
                (
                    CRITICAL,
                    (
                        "Keras Lambda layer: its marshalled Python code runs when the model is "
                        "loaded with safe_mode=False (the default for legacy .h5 files)"
                    ),
                    "keras.layers.Lambda",
                )
            )
        elif kind == "function" and isinstance(module, str) and isinstance(node.get("config"), str):
            verdict = allow.judge(module, node["config"])
            if verdict.severity is not None:
                out.append(
                    (
                        verdict.severity,
                        f"Keras function reference: {verdict.reason}",
                        f"{module}.{node['config']}",
                    )
                )
        else:
            custom = _custom_object(node, kind, module, allow)
            if custom is not None:
                out.append(custom)
    return out


def _custom_object(
    node: dict[str, Any], kind: str, module: Any, allow: Allowlist
) -> tuple[str, str, str] | None:
    registered = node.get("registered_name")
    foreign = isinstance(module, str) and module and module.split(".")[0] not in _KERAS_PACKAGES
    if foreign:
        verdict = allow.judge(module, kind)
        if verdict.severity is None:
            return None
        return (
            verdict.severity,
            f"Keras custom object: deserializing it imports {module} ({verdict.reason})",
            f"{module}.{kind}",
        )
    if isinstance(module, str) and module:
        return None  # a Keras package names its own built-ins
    name = registered if isinstance(registered, str) and ">" in registered else kind
    if ">" not in name or allow.allowed_by_user(name):
        return None
    return (
        HIGH,
        (
            f"Keras registered custom object {name!r}: its code comes from the loading program's "
            "registry, not from the file; review it or pass --allow with this exact name"
        ),
        name,
    )
