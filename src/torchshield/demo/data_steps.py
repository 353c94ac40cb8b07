"""Data steps: generate a synthetic patient table with Chinese and English PII, find and mask
the PII, release it k-anonymised, and derive the model's training and test tables."""

from __future__ import annotations

from typing import Any

from torchshield.demo.state import DemoState

__all__ = ["FEATURES", "LABEL", "MASK_POLICY", "generate", "kanon", "scan_and_mask"]

FEATURES = ["age_mid", "female", "bmi", "systolic_bp", "glucose", "cholesterol", "smoker"]
LABEL = "readmitted"
QUASI = ["age", "gender", "zip"]
# Direct identifiers are replaced whole; free-text notes are scanned and their PII replaced;
# clinical columns are kept as they are (they are what the model needs).
MASK_POLICY: dict[str, Any] = {
    "version": 1,
    "columns": {
        "name": {"operator": "replace", "type": "PERSON"},
        "id_number": {"operator": "replace", "type": "CN_RESIDENT_ID"},
        "phone": {"operator": "replace", "type": "CN_MOBILE"},
        "address": {"operator": "replace", "type": "ADDRESS"},
        "notes": "scan",
    },
    "unlisted_columns": "keep",
}


def _clinical(df: Any, seed: int) -> Any:
    """Add numeric vitals and a readmission label drawn from a known logistic model with noise,
    so that a model has something real to learn and, with few rows, something to memorise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(df)
    age = df["age"].to_numpy(dtype=float)
    df = df.copy()
    df["bmi"] = rng.normal(24.5, 4.0, n).round(1)
    df["systolic_bp"] = (rng.normal(122, 15, n) + 0.35 * (age - 50)).round(0)
    diabetic = df["diagnosis"].str.contains("糖尿病|diabetes").to_numpy()
    df["glucose"] = (rng.normal(5.6, 1.2, n) + np.where(diabetic, 2.5, 0)).round(2)
    df["cholesterol"] = rng.normal(5.0, 1.0, n).round(2)
    df["smoker"] = (rng.random(n) < 0.25).astype(int)
    logit = (
        -0.5
        + 0.08 * (age - 55)
        + 0.25 * (df["bmi"] - 24.5)
        + 0.06 * (df["systolic_bp"] - 125)
        + 1.2 * (df["glucose"] - 5.8)
        + 2.0 * df["smoker"]
        + rng.normal(0, 0.5, n)
    )
    df[LABEL] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return df


def generate(state: DemoState) -> str:
    from torchshield.data.synth import patient_table
    from torchshield.data.tabular import write_table

    df = _clinical(patient_table(state.rows, seed=state.seed), state.seed)
    write_table(df, state.path("raw", "data/patients_raw.parquet"))
    state.facts["rows"] = len(df)
    return f"{len(df)} patients with names, ID numbers, phones, addresses, e-mails (zh_CN + en_US)"


def scan_and_mask(state: DemoState) -> str:
    from torchshield.assess.checks.pii import pii_residue
    from torchshield.data.tabular import mask_file

    (raw,) = state.need("raw")
    before = pii_residue(raw, sample_rows=500)
    masked = state.path("masked", "data/patients_masked.parquet")
    report = mask_file(raw, masked, policy=MASK_POLICY)
    after = pii_residue(masked, sample_rows=500)
    found, left = sum(before["cells_per_type"].values()), sum(after["cells_per_type"].values())
    state.facts.update(
        pii_before=before["cells_per_type"],
        pii_after=after["cells_per_type"],
        masked_per_type=report["findings_per_type"],
    )
    return (
        f"found PII in {found} cells ({len(before['cells_per_type'])} types, "
        f"{len(before['identifier_columns'])} identifier columns); masked; {left} cells left after masking"
    )


def kanon(state: DemoState) -> str:
    import pandas as pd

    from torchshield.data.tabular import kanonymize, write_table

    (masked,) = state.need("masked")
    df = pd.read_parquet(masked)
    k = 5
    res = kanonymize(df, QUASI, k=k, sensitive="diagnosis", l=2)
    released, rep = res.table, res.report
    write_table(released, state.path("released", "data/patients_released.parquet"))
    state.facts["kanon"] = {
        "k": k,
        "min_class_size": rep["min_class_size"],
        "classes": rep["classes"],
        "max_risk_before": rep["risk_before"]["max"],
        "max_risk_after": rep["risk_after"]["max"],
    }
    # The model's table: generalised age as a band midpoint, the vitals, the label, and the
    # masked notes (kept so the report can check that no PII reached the training data).
    table = released.copy()
    table["age_mid"] = table["age"].astype(str).map(_band_mid)
    table["female"] = (
        table["gender"].astype(str).map(lambda g: 1.0 if g == "女" else 0.0 if g == "男" else 0.5)
    )
    cols = [*FEATURES, LABEL, "notes"]
    table = table[cols].sample(frac=1.0, random_state=state.seed).reset_index(drop=True)
    cut = int(len(table) * 0.5)
    write_table(table.iloc[:cut], state.path("train", "data/train.parquet"))
    write_table(table.iloc[cut:], state.path("test", "data/test.parquet"))
    state.facts["split"] = {"train": cut, "test": len(table) - cut}
    return (
        f"{k}-anonymous on age/gender/zip (l=2 diagnoses): {rep['classes']} classes, re-identification "
        f"risk {rep['risk_before']['max']:.2f} -> {rep['risk_after']['max']:.2f}; "
        f"{cut} training / {len(table) - cut} test rows"
    )


def _band_mid(label: str) -> float:
    """'30-39' -> 34.5, '[30, 40)' style or a plain number -> its value."""
    import re

    nums = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", label)]
    return sum(nums[:2]) / len(nums[:2]) if nums else float("nan")
