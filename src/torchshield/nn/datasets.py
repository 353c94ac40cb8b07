"""Training data: built-in sets that ship with scikit-learn, or CSV/Parquet with a label column.

Every data set comes back with what later stages need besides the tensors: the input shape,
the number of classes, the input bounds (attacks clip to them, DP queries need them) and the
normalisation applied (so an audit or a server can preprocess new rows the same way).

Spec forms (the config's ``data:`` section)::

    data: sklearn:digits                      # 8x8 images in [0, 1], shape (1, 8, 8)
    data: {name: sklearn:breast_cancer}       # 30 standardised features
    data: {path: patients.parquet, label: outcome, features: [age, bmi], normalize: standard,
           test_fraction: 0.2, seed: 0}
    data: {path: patients.parquet, label: outcome, normalize: minmax,     # what DP training needs:
           bounds: {age: [0, 120], bmi: [10, 60]}, classes: [0, 1]}      # public, declared values

Rows of a file are split by a keyed hash of each row's own content (BLAKE2b keyed with the
seed): a row's side does not depend on the other rows, so adding or removing one row moves no
other row between train and test (a permutation of row indices would re-split everything, and
DP for the rows of the file would not follow from DP for the training split). Which rows
trained is returned as ``split_rows`` (``torchshield train`` writes it beside the bundle).

Private data (``private=True``, a DP run) takes nothing from the rows that the bundle would
publish: bounds, normalisation and classes must be declared (``bounds`` for every feature,
``normalize: minmax`` maps the declared bounds to [0, 1], or ``none``), and :meth:`describe`
leaves out row counts and the data fingerprint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from torchshield.errors import InputError, MissingDependencyError

__all__ = ["BUILTINS", "ImageData", "Split", "TabularData", "load_dataset", "read_table", "table_to_tensors"]

BUILTINS = ("sklearn:breast_cancer", "sklearn:digits")
_NORMALIZERS = ("standard", "minmax", "none")


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels of one split."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def loader(self, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
               drop_last: bool = False) -> torch.utils.data.DataLoader:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=batch_size,
                                           shuffle=shuffle, generator=gen, drop_last=drop_last)


@dataclass(frozen=True)
class TabularData:
    """A labelled table as float32 features."""

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    input_bounds: tuple[float, float]
    feature_names: tuple[str, ...] = ()
    classes: tuple[Any, ...] = ()
    normalization: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    public: bool = False  # a published data set (the built-ins): its size and statistics are public
    split_rows: tuple[Any, Any] | None = None  # row numbers of the source in (train, test)
    source: dict[str, Any] = field(default_factory=dict)  # what split_rows index: path, rows, sha256

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    def describe(self, *, private: bool = False) -> dict[str, Any]:
        """JSON-able facts for the bundle manifest (no data values beyond bounds/normalisation).

        ``private``: for a DP bundle, nothing computed from the rows beyond the accounted
        release: no counts (the size of the training set is private under add/remove), no
        fingerprint (a hash of the data decides membership), only declared bounds and classes."""
        doc = {
            "name": self.name,
            "kind": type(self).__name__,
            "train_examples": len(self.train),
            "test_examples": len(self.test),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "input_bounds": list(self.input_bounds),
            "feature_names": list(self.feature_names),
            "classes": [c.item() if hasattr(c, "item") else c for c in self.classes],
            "normalization": self.normalization,
            "fingerprint": self.fingerprint,
            "public": self.public,
        }
        if private:
            for key in ("fingerprint", *(() if self.public else ("train_examples", "test_examples"))):
                doc.pop(key)
        return doc


@dataclass(frozen=True)
class ImageData(TabularData):
    """Images as float32 ``[N, C, H, W]`` in ``input_bounds``."""


def load_dataset(spec: str | dict[str, Any], *, private: bool = False) -> TabularData:
    """Load the data set a config's ``data:`` section names (see module docstring).

    ``private``: the data is trained on with DP; refuse anything the bundle would otherwise
    take from the rows (undeclared bounds, classes or data-derived normalisation)."""
    if isinstance(spec, str):
        spec = {"name": spec} if spec in BUILTINS or spec.startswith("sklearn:") else {"path": spec}
    spec = dict(spec)
    test_fraction = float(spec.pop("test_fraction", 0.2))
    seed = int(spec.pop("seed", 0))
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    name = spec.pop("name", None)
    if name is not None:
        if spec:
            raise InputError(f"data: unknown option {sorted(spec)[0]!r} for built-in {name}")
        return _builtin(str(name), test_fraction, seed)
    if "path" not in spec:
        raise InputError("data: give a built-in 'name' or a 'path' to a CSV/Parquet file",
                         hint=f"built-ins: {', '.join(BUILTINS)}")
    return _from_file(spec, test_fraction, seed, private)


def _split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def _builtin(name: str, test_fraction: float, seed: int) -> TabularData:
    try:
        from sklearn import datasets
    except ImportError:  # pragma: no cover - the privacy extra brings it
        raise MissingDependencyError("scikit-learn", "privacy") from None
    if name == "sklearn:digits":
        raw = datasets.load_digits()
        x = (raw.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        y = raw.target.astype(np.int64)
        tr, te = _split_indices(len(y), test_fraction, seed)
        return ImageData(name, Split(torch.from_numpy(x[tr]), torch.from_numpy(y[tr])),
                         Split(torch.from_numpy(x[te]), torch.from_numpy(y[te])), 10, (1, 8, 8), (0.0, 1.0),
                         feature_names=tuple(str(f) for f in raw.feature_names), classes=tuple(range(10)),
                         normalization={"method": "scale", "shift": 0.0, "scale": 16.0, "label": "label"},
                         fingerprint=_fingerprint(x, y), public=True, split_rows=(tr, te),
                         source={"name": name, "rows": len(y)})
    if name == "sklearn:breast_cancer":
        raw = datasets.load_breast_cancer()
        tr, te = _split_indices(len(raw.target), test_fraction, seed)
        data = _tabular(name, raw.data, raw.target.astype(np.int64), tr, te, "standard",
                        tuple(str(f) for f in raw.feature_names), tuple(raw.target_names.tolist()))
        return replace(data, public=True, split_rows=(tr, te), source={"name": name, "rows": len(tr) + len(te)})
    raise InputError(f"data.name: unknown built-in data set {name!r}", hint=f"use one of {', '.join(BUILTINS)}")


def _tabular(name: str, x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, normalize: str,
             feature_names: tuple[str, ...], classes: tuple[Any, ...],
             bounds: dict[str, Sequence[float]] | None = None) -> TabularData:
    """Normalise with statistics of the training split only (the test split must not leak into them)."""
    x = np.asarray(x, dtype=np.float64)
    if bounds:  # declared bounds are public: clip to them, so they really bound every value
        lo = np.array([bounds.get(f, (-np.inf, np.inf))[0] for f in feature_names], dtype=np.float64)
        hi = np.array([bounds.get(f, (-np.inf, np.inf))[1] for f in feature_names], dtype=np.float64)
        x = np.clip(x, lo, hi)
    declared = bounds is not None and bool(bounds) and all(f in bounds for f in feature_names)
    fit_on = x[tr] if len(tr) else x
    if normalize == "standard":
        shift, scale = fit_on.mean(0), fit_on.std(0)
    elif normalize == "minmax" and declared:  # public: from the declared bounds, not the rows
        shift, scale = lo, hi - lo
    elif normalize == "minmax":
        shift, scale = fit_on.min(0), fit_on.max(0) - fit_on.min(0)
    else:
        shift, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    scale = np.where(scale > 0, scale, 1.0)
    z = ((x - shift) / scale).astype(np.float32)
    norm = {"method": normalize, "shift": shift.tolist(), "scale": scale.tolist()}
    if declared:  # the bounds of the model's inputs follow from the declared ones
        zlo, zhi = (lo - shift) / scale, (hi - shift) / scale
        input_bounds = (float(np.min(zlo)), float(np.max(zhi)))
    else:
        input_bounds = (float(z.min()), float(z.max()))
    return TabularData(name, Split(torch.from_numpy(z[tr]), torch.from_numpy(y[tr])),
                       Split(torch.from_numpy(z[te]), torch.from_numpy(y[te])), int(len(classes) or y.max() + 1),
                       (x.shape[1],), input_bounds, feature_names, classes, norm,
                       _fingerprint(z, y))


def read_table(path: str | Path) -> Any:
    """Read a CSV or Parquet file into a pandas DataFrame with inferred column types, through the
    one table reader of the package (``torchshield.data.tabular.io``: format and encoding
    detection, GB18030 included, errors naming the file and line)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"data.path: {p} does not exist or is not a file")
    try:
        from torchshield.data.tabular.io import read_table as read_any_table
    except ImportError:  # pragma: no cover - pandas is part of the data extra
        raise MissingDependencyError("pandas", "data") from None
    return read_any_table(p, typed=True)


def _is_numeric(series: Any) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return bool(is_numeric_dtype(series.dtype)) and not is_bool_dtype(series.dtype)


def _label_codes(series: Any, classes: Sequence[Any] | None) -> tuple[np.ndarray, tuple[Any, ...]]:
    values = series.to_numpy()
    known = tuple(classes) if classes is not None else tuple(sorted(set(values.tolist())))
    index = {c: i for i, c in enumerate(known)}
    try:
        codes = np.array([index[v] for v in values.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise InputError(f"label value {exc.args[0]!r} was not among the training classes") from None
    return codes, known


def table_to_tensors(df: Any, *, label: str, features: Sequence[str], normalization: dict[str, Any],
                     classes: Sequence[Any] | None = None, bounds: dict[str, Sequence[float]] | None = None,
                     source: str = "data") -> tuple[Tensor, Tensor]:
    """Preprocess new rows exactly as training did (used by the audit and by serving)."""
    missing = [c for c in [label, *features] if c not in df.columns]
    if missing:
        raise InputError(f"{source}: column {missing[0]!r} not found", hint=f"columns: {list(df.columns)[:20]}")
    x = df[list(features)].to_numpy(dtype=np.float64)
    if bounds:
        lo = np.array([bounds.get(f, (-np.inf, np.inf))[0] for f in features])
        hi = np.array([bounds.get(f, (-np.inf, np.inf))[1] for f in features])
        x = np.clip(x, lo, hi)
    shift = np.asarray(normalization.get("shift", 0.0))
    scale = np.asarray(normalization.get("scale", 1.0))
    y, _ = _label_codes(df[label], classes)
    return torch.from_numpy(((x - shift) / scale).astype(np.float32)), torch.from_numpy(y)


def _row_split(x: np.ndarray, labels: Any, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test iff a keyed hash of the row's own values falls below ``test_fraction`` (module docstring)."""
    import hashlib

    key = seed.to_bytes(8, "little", signed=True)
    rows = np.ascontiguousarray(x, dtype=np.float64)
    cut = int(test_fraction * 2**64)
    to_test = np.fromiter(
        (int.from_bytes(hashlib.blake2b(r.tobytes() + repr(lab).encode(), digest_size=8, key=key).digest(), "little")
         < cut for r, lab in zip(rows, labels)), dtype=bool, count=len(rows))
    return np.nonzero(~to_test)[0], np.nonzero(to_test)[0]


def _declared_bounds(bounds: Any, features: Sequence[str], private: bool) -> dict[str, Sequence[float]]:
    """``bounds: {col: [lo, hi]}``, or ``[lo, hi]`` for every feature; under DP, every feature needs one."""
    if isinstance(bounds, (list, tuple)):
        bounds = {f: bounds for f in features}
    if not isinstance(bounds, dict):
        raise InputError("data.bounds must map columns to [lo, hi], or be one [lo, hi] for all features")
    for f, b in bounds.items():
        if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(v, (int, float)) for v in b)
                and b[0] < b[1]):
            raise InputError(f"data.bounds.{f} must be [lo, hi] with lo < hi, got {b!r}")
    missing = [f for f in features if f not in bounds]
    if private and missing:
        raise InputError(f"data.bounds: no declared bounds for feature {missing[0]!r}: under privacy: the bounds "
                         "of private rows would leak them (the observed min/max is a record)",
                         hint="declare public bounds, e.g. bounds: {" + f"{missing[0]}: [0, 100]" + "} or "
                              "bounds: [lo, hi] for every feature")
    return bounds


def _from_file(spec: dict[str, Any], test_fraction: float, seed: int, private: bool = False) -> TabularData:
    from torchshield.nn.split import file_sha256

    path = spec.pop("path")
    if not isinstance(path, str) or not path:
        raise InputError(f"data.path must be a file path (a string), got {path!r}", hint='e.g. "path": "rows.csv"')
    label = spec.pop("label", None)
    features = spec.pop("features", None)
    normalize = str(spec.pop("normalize", "minmax" if private else "standard"))
    bounds = spec.pop("bounds", None) or {}
    declared_classes = spec.pop("classes", None)
    if spec:
        raise InputError(f"data: unknown option {sorted(spec)[0]!r}",
                         hint="allowed: path, label, features, normalize, bounds, classes, test_fraction, seed")
    if private and normalize == "standard":
        raise InputError("data.normalize: standard computes the mean and std of the private rows, which the "
                         "bundle would publish", hint="use normalize: minmax (from your declared bounds) or none")
    if private and not isinstance(declared_classes, list):
        raise InputError("data.classes: under privacy: declare the label values (the set seen in private rows "
                         "can reveal a record, e.g. a rare class)", hint="e.g. classes: [0, 1]")
    if declared_classes is not None and (not isinstance(declared_classes, list) or not declared_classes):
        raise InputError("data.classes must be a non-empty list of label values")
    if not label:
        raise InputError("data.label: name the label column", hint="e.g. label: outcome")
    if normalize not in _NORMALIZERS:
        raise InputError(f"data.normalize must be one of {_NORMALIZERS}, got {normalize!r}")
    df = read_table(path)
    if label not in df.columns:
        raise InputError(f"data.label: column {label!r} not in {path}", hint=f"columns: {list(df.columns)[:20]}")
    if features is None:
        features = [c for c in df.columns if c != label and _is_numeric(df[c])]
    if not features:
        raise InputError(f"data: {path} has no numeric feature columns besides {label!r}",
                         hint="de-identify/encode text columns first, or list data.features")
    non_numeric = [c for c in features if c in df.columns and not _is_numeric(df[c])]
    if non_numeric:
        raise InputError(f"data.features: column {non_numeric[0]!r} is not numeric", hint="encode it first")
    if df[list(features)].isna().any().any():
        raise InputError(f"data: {path} has missing values in feature columns", hint="impute or drop them first")
    bounds = _declared_bounds(bounds, features, private)
    y, classes = _label_codes(df[label], declared_classes)
    x = df[list(features)].to_numpy(dtype=np.float64)
    tr, te = _row_split(x, df[label].tolist(), test_fraction, seed)
    data = _tabular(str(path), x, y, tr, te, normalize, tuple(features), classes, bounds)
    data.normalization["label"] = label
    if bounds:
        data.normalization["bounds"] = {k: list(v) for k, v in bounds.items()}
    return replace(data, split_rows=(tr, te),
                   source={"path": str(path), "rows": len(y), "sha256": file_sha256(Path(path))})
