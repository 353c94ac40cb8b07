"""De-identification on a distributed engine (``data scan/mask --engine spark``).

One contract, ``map_chunks(task, shared, chunks) -> results in order``: the single-process path
calls the task itself; ``SparkEngine`` runs it on Spark executors. The per-row code (detection,
operators) is the same in both, so the output is the same; the key model is in ``keys``."""

from __future__ import annotations

from typing import Any

from torchshield.data.cluster.keys import OPERATOR_SUBKEYS, SubkeySet, policy_subkeys
from torchshield.data.cluster.spark import SparkEngine, local_conf
from torchshield.errors import InputError

__all__ = ["ENGINES", "OPERATOR_SUBKEYS", "SparkEngine", "SubkeySet", "local_conf", "make_engine", "policy_subkeys"]

ENGINES = ("local", "spark")


def make_engine(name: str, *, workers: int = 1, master: str | None = None) -> Any:
    """None for ``local`` (the embedded single-process default), else the named engine (not yet started)."""
    if name not in ENGINES:
        raise InputError(f"--engine: unknown engine {name!r}", hint=f"use one of: {', '.join(ENGINES)}")
    if name == "local":
        if master is not None:
            raise InputError("--spark-master needs --engine spark")
        return None
    return SparkEngine(workers=workers, master=master)
