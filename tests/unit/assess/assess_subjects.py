"""Small real subjects for assessment tests: a labelled table with PII columns and a model
trained on it with `torchshield train`'s own run function (seconds on 2 cores)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FEATURES = ["f0", "f1", "f2", "f3"]


def make_tables(folder: Path, *, rows: int = 240, seed: int = 0, pii: bool = False) -> tuple[Path, Path]:
    """train.parquet and test.parquet with a learnable label; ``pii`` adds name/phone columns."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    y = ((x[:, 0] + 0.8 * x[:, 1] - 0.5 * x[:, 2] + rng.normal(0, 0.3, rows)) > 0).astype(int)
    df = pd.DataFrame(x, columns=FEATURES)
    df["label"] = y
    if pii:
        from faker import Faker

        fake = Faker("zh_CN")
        fake.seed_instance(seed)
        df["name"] = [fake.name() for _ in range(rows)]
        df["phone"] = [fake.phone_number() for _ in range(rows)]
    folder.mkdir(parents=True, exist_ok=True)
    train, test = folder / "train.parquet", folder / "test.parquet"
    df.iloc[: rows // 2].to_parquet(train)
    df.iloc[rows // 2 :].to_parquet(test)
    return train, test


def train_bundle(train: Path, out: Path, *, epochs: int = 15, **extra: Any) -> Path:
    """Train an MLP on ``train`` and write a .tsb (``extra``: privacy=..., output keys=...)."""
    import torch

    from torchshield.train.config import TrainConfig
    from torchshield.train.run import train_from_config

    output = {"bundle": str(out), "overwrite": True, **extra.pop("output", {})}
    doc = {
        "model": {"type": "mlp", "hidden": [32]},
        "data": {"path": str(train), "label": "label", "features": FEATURES, "test_fraction": 0.0,
                 # DP training needs public, declared bounds and classes (nothing taken from the rows)
                 **({"bounds": [-5, 5], "classes": [0, 1]} if "privacy" in extra else {})},
        "optimizer": {"name": "adam", "lr": 0.01},
        "epochs": epochs,
        "batch_size": 16,
        "seed": 0,
        "output": output,
        **extra,
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_from_config(TrainConfig.from_dict(doc, base=out.parent), progress=False).bundle
    finally:
        torch.set_num_threads(threads)
