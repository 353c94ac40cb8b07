"""Text data for fine-tuning: rows of a CSV/Parquet text column (sequence classification) or a
plain text file cut into token blocks (causal language modelling), tokenised with the tokenizer
the model carries (``tokenizer.json``, the ``tokenizers`` library; nothing is downloaded).

Every example becomes one row of an int64 tensor ``x: [N, 2, L]`` (token ids, attention mask)
so that the shared loop, Poisson sampling and the DP engine index it like any tensor data set;
``y`` is the class index ``[N]`` (classification) or the target ids ``[N, L]`` with ``-100``
where the mask is 0 (language modelling: padding never enters the loss).

The unit of privacy is one example: one row of the table, or one block of ``block_size`` tokens
(``unit: line`` makes every non-empty line its own example instead). A text that spans k blocks
is protected at k times the epsilon (group privacy); the privacy record states the unit.

Rows go to the held-out split by a keyed hash of their own content (as in ``nn.datasets``), so
adding or removing one example moves no other; the split is recorded beside the bundle
(``nn.split``). Under DP the description a bundle publishes carries no counts and no hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchshield.errors import InputError, MissingDependencyError
from torchshield.nn.datasets import Split, _label_codes, read_table

__all__ = ["TASKS", "TextData", "Tokenizer", "load_text_data", "position_limit", "tokenizer_from_files"]

TASKS = ("sequence-classification", "causal-lm")
IGNORE = -100  # target id the loss skips (padding)
_CLS_KEYS = ("path", "text", "label", "classes", "max_length", "test_fraction", "seed")
_LM_KEYS = ("path", "block_size", "unit", "test_fraction", "seed")
_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>", "</s>", "<eos>")


@dataclass(frozen=True)
class Tokenizer:
    """The model's own tokenizer (``tokenizer.json``) and the pad id its padding uses."""

    backend: Any  # tokenizers.Tokenizer
    pad_id: int
    files: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: list[str], max_length: int, *, special: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask ``[N, max_length]``: truncated, padded on the right."""
        ids = np.full((len(texts), max_length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), max_length), dtype=np.int64)
        for i, enc in enumerate(self.backend.encode_batch(texts, add_special_tokens=special)):
            row = enc.ids[:max_length]
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return ids, mask

    def stream(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)


def _json(files: dict[str, bytes], name: str) -> dict[str, Any]:
    try:
        doc = json.loads(files[name]) if name in files else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def tokenizer_from_files(files: dict[str, bytes], *, model: str, config: dict[str, Any]) -> Tokenizer:
    """The tokenizer a model directory or bundle carries; refused, naming the fix, when there is none."""
    if "tokenizer.json" not in files:
        raise InputError(f"model.path: {model} carries no tokenizer.json, so its text cannot be tokenised as the "
                         "model was trained", hint="save the tokenizer beside the model (tokenizer.save_pretrained(DIR)"
                                                   ") and protect that directory again")
    try:
        from tokenizers import Tokenizer as Backend
    except ImportError:  # pragma: no cover - the hf extra brings it
        raise MissingDependencyError("tokenizers", "hf") from None
    try:
        backend = Backend.from_str(files["tokenizer.json"].decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - the Rust library raises a plain Exception
        raise InputError(f"model.path: {model}'s tokenizer.json cannot be read ({str(exc)[:120]})",
                         hint="save it again with tokenizer.save_pretrained(DIR)") from None
    backend.no_padding()
    backend.no_truncation()
    return Tokenizer(backend, _pad_id(backend, files, config), tuple(sorted(files)))


def _pad_id(backend: Any, files: dict[str, bytes], config: dict[str, Any]) -> int:
    """Which id pads: the tokenizer's own pad token, then the config's, then a conventional name, else 0.

    Padding is masked out of attention and of the loss, so its id only has to be a valid one."""
    names = []
    for doc in (_json(files, "tokenizer_config.json"), _json(files, "special_tokens_map.json")):
        pad = doc.get("pad_token")
        names.append(pad.get("content") if isinstance(pad, dict) else pad)
    for name in [*names, *_PAD_NAMES]:
        if isinstance(name, str) and backend.token_to_id(name) is not None:
            return int(backend.token_to_id(name))
    for key in ("pad_token_id", "eos_token_id"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return 0


def position_limit(config: dict[str, Any]) -> int | None:
    """How many positions the model can take (RoBERTa-style models offset positions by padding_idx + 1)."""
    limit = config.get("max_position_embeddings") or config.get("n_positions") or config.get("n_ctx")
    if not isinstance(limit, int):
        return None
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= int(config.get("pad_token_id") or 1) + 1
    return limit


@dataclass(frozen=True)
class TextData:
    """Tokenised examples and what the bundle and the split record need (``TabularData``'s contract)."""

    name: str
    task: str
    train: Split
    test: Split
    num_classes: int
    length: int  # max_length (classification) or block_size (language modelling)
    unit: str  # what one example is: the neighbouring relation's unit
    text_column: str | None = None
    label_column: str | None = None
    classes: tuple[Any, ...] = ()
    tokenizer_files: tuple[str, ...] = ()
    public: bool = False
    split_rows: tuple[Any, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def describe(self, *, private: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "kind": "TextData", "task": self.task, "unit": self.unit,
                               "max_length" if self.task == "sequence-classification" else "block_size": self.length,
                               "tokenizer": list(self.tokenizer_files), "public": self.public,
                               "train_examples": len(self.train), "test_examples": len(self.test),
                               "fingerprint": self.fingerprint}
        if self.task == "sequence-classification":
            doc.update(text=self.text_column, label=self.label_column, num_classes=self.num_classes,
                       classes=[c.item() if hasattr(c, "item") else c for c in self.classes])
        if private:  # counts and a hash of private rows are not released (module docstring)
            for key in ("train_examples", "test_examples", "fingerprint"):
                doc.pop(key)
        return doc


def _options(spec: Any, allowed: tuple[str, ...], task: str) -> dict[str, Any]:
    if not isinstance(spec, dict) or "path" not in spec:
        raise InputError(f"data: task {task} needs {{path: FILE, ...}}", hint=f"allowed keys: {', '.join(allowed)}")
    bad = sorted(set(spec) - set(allowed))
    if bad:
        raise InputError(f"data: unknown option {bad[0]!r} for task {task}", hint=f"allowed: {', '.join(allowed)}")
    return dict(spec)


def _length(value: Any, name: str, limit: int | None, default: int) -> int:
    if value is None:
        return min(default, limit) if limit else default
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise InputError(f"data.{name} must be a whole number >= 2, got {value!r}")
    if limit is not None and value > limit:
        raise InputError(f"data.{name}: {value} is more than the model's {limit} positions",
                         hint=f"set data.{name} to at most {limit}")
    return value


def _keyed_split(keys: list[bytes], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held out iff a keyed hash of the example's own content is below ``test_fraction``."""
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    key = int(seed).to_bytes(8, "little", signed=True)
    cut = int(test_fraction * 2**64)
    to_test = np.fromiter((int.from_bytes(hashlib.blake2b(k, digest_size=8, key=key).digest(), "little") < cut
                           for k in keys), dtype=bool, count=len(keys))
    return np.nonzero(~to_test)[0], np.nonzero(to_test)[0]


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def _splits(x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
    return (Split(torch.from_numpy(x[tr]), torch.from_numpy(y[tr])),
            Split(torch.from_numpy(x[te]), torch.from_numpy(y[te])))


def _check_vocab(tok: Tokenizer, config: dict[str, Any], model: str) -> None:
    vocab = config.get("vocab_size")
    if isinstance(vocab, int) and tok.vocab_size > vocab:
        raise InputError(f"model.path: {model}'s tokenizer has {tok.vocab_size} tokens but the model embeds only "
                         f"{vocab}", hint="use the tokenizer the model was trained with")


def load_text_data(task: str, spec: Any, tok: Tokenizer, config: dict[str, Any], *, model: str,
                   private: bool) -> TextData:
    """The ``data:`` section of a fine-tuning config, tokenised (module docstring)."""
    from torchshield.nn.split import file_sha256

    _check_vocab(tok, config, model)
    limit = position_limit(config)
    if task == "sequence-classification":
        opts = _options(spec, _CLS_KEYS, task)
        data = _classification(opts, tok, limit, private)
    else:
        opts = _options(spec, _LM_KEYS, task)
        data = _language_model(opts, tok, limit)
    return replace(data, source={**data.source, "path": str(opts["path"]),
                                 "sha256": file_sha256(Path(opts["path"]))})


def _classification(opts: dict[str, Any], tok: Tokenizer, limit: int | None, private: bool) -> TextData:
    path, text, label = opts["path"], opts.get("text"), opts.get("label")
    if not text or not isinstance(text, str):
        raise InputError("data.text: name the text column", hint="e.g. text: review")
    if not label or not isinstance(label, str):
        raise InputError("data.label: name the label column", hint="e.g. label: sentiment")
    classes = opts.get("classes")
    if private and not isinstance(classes, list):
        raise InputError("data.classes: under privacy: declare the label values (the set seen in private rows "
                         "can reveal a record, e.g. a rare class)", hint="e.g. classes: [negative, positive]")
    if classes is not None and (not isinstance(classes, list) or not classes):
        raise InputError("data.classes must be a non-empty list of label values")
    max_length = _length(opts.get("max_length"), "max_length", limit, 128)
    df = read_table(path)
    for key, col in (("text", text), ("label", label)):
        if col not in df.columns:
            raise InputError(f"data.{key}: column {col!r} not in {path}", hint=f"columns: {list(df.columns)[:20]}")
    if len(df) == 0:
        raise InputError(f"data.path: {path} has no rows", hint="give a table with at least one row")
    if df[text].isna().any():
        raise InputError(f"data.text: column {text!r} of {path} has missing values", hint="drop or fill those rows")
    texts = [str(t) for t in df[text].tolist()]
    if classes is not None:
        unknown = next((v for v in df[label].tolist() if v not in classes), None)
        if unknown is not None:
            raise InputError(f"data.classes: column {label!r} of {path} holds {unknown!r}, which is not a declared "
                             "class", hint="add it to data.classes, or drop those rows")
    y, known = _label_codes(df[label], classes)
    ids, mask = tok.encode(texts, max_length)
    x = np.stack([ids, mask], axis=1)
    seed = int(opts.get("seed", 0))
    tr, te = _keyed_split([t.encode("utf-8") + b"\x00" + repr(v).encode() for t, v in zip(texts, df[label].tolist())],
                          float(opts.get("test_fraction", 0.2)), seed)
    train, test = _splits(x, y, tr, te)
    return TextData(Path(path).name, "sequence-classification", train, test, len(known), max_length,
                    f"one row of {Path(path).name}", text, label, known, tok.files, split_rows=(tr, te),
                    source={"rows": len(texts), "unit": "row"}, fingerprint=_fingerprint(x, y))


def _language_model(opts: dict[str, Any], tok: Tokenizer, limit: int | None) -> TextData:
    path = Path(opts["path"])
    if not path.is_file():
        raise InputError(f"data.path: {path} does not exist or is not a file")
    unit = str(opts.get("unit", "block"))
    if unit not in ("block", "line"):
        raise InputError(f"data.unit must be block or line, got {unit!r}",
                         hint="block: the file as one token stream cut into blocks; line: one example per line")
    block = _length(opts.get("block_size"), "block_size", limit, 128)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"data.path: {path} is not UTF-8 text", hint="convert it to UTF-8 first") from None
    if not text.strip():
        raise InputError(f"data.path: {path} holds no text", hint="give a non-empty UTF-8 text file")
    if unit == "line":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        ids, mask = tok.encode(lines, block, special=False)
        what = f"one non-empty line of {path.name} (up to {block} tokens)"
    else:
        stream = tok.stream(text)
        n = -(-len(stream) // block)
        ids = np.full((n, block), tok.pad_id, dtype=np.int64)
        mask = np.zeros((n, block), dtype=np.int64)
        flat = np.asarray(stream, dtype=np.int64)
        ids.reshape(-1)[:len(flat)] = flat
        mask.reshape(-1)[:len(flat)] = 1
        what = f"one block of {block} tokens of {path.name} (a text spanning k blocks: k times epsilon)"
    if not mask[:, 1:].any():
        raise InputError(f"data.path: {path} tokenises to fewer than 2 tokens per example",
                         hint="give more text, or a larger data.block_size")
    y = np.where(mask == 1, ids, IGNORE)
    x = np.stack([ids, mask], axis=1)
    tr, te = _keyed_split([r.tobytes() for r in x], float(opts.get("test_fraction", 0.1)), int(opts.get("seed", 0)))
    train, test = _splits(x, y, tr, te)
    return TextData(path.name, "causal-lm", train, test, 0, block, what, tokenizer_files=tok.files,
                    split_rows=(tr, te), source={"rows": len(x), "unit": unit}, fingerprint=_fingerprint(x, y))
