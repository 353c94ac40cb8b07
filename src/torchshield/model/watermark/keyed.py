"""Keyed-pattern trigger set: in-distribution inputs stamped with secret patterns (issue 18).

Why. The noise trigger set (``trigger.py``, Adi et al.) asks the model to memorise N random
labels on N inputs far from the data; ordinary fine-tuning at a thief's rates (Adam 1e-2, SGD
0.1) overwrites such isolated memories. Here the model learns K *rules* instead: "an input
carrying pattern j belongs to class l_j". Each pattern is a dense keyed sign pattern of
amplitude ``amplitude * (high - low)`` added to real inputs (clipped to the input range); the
network learns a feature for it, trained on many different base inputs, and fine-tuning on clean
data has little reason to unlearn a feature it never sees. Measured survival is in
docs/benchmarks.md (watermark section).

The null stays exact. The K labels are drawn uniformly from C classes by rejection sampling on a
SHAKE-256 stream of the mark's secret, independently of the patterns (another stream) and of the
base inputs. A model that never saw the secret predicts some class for each stamped input; given
those predictions, pattern j contributes ``n_j(l_j)`` matches with ``l_j`` uniform and
independent across patterns, and ``significance.grouped_p_value`` computes the exact tail of the
total (floor ``C^-K``: K = 16 patterns and 10 classes can reach 1e-16).

Verification needs base inputs from the task distribution. ``N`` of the inputs given at
embedding time (the owner's data) are kept in the record, sealed under the master key
(``crypto.envelope.seal``, bound to the mark id), so verifying needs only the record and the key,
as for the other marks. The record grows by ``N x input size`` floats (about 40 kB for 160
digit images).

Token inputs (a text model, ``input_dtype: int64``): a pattern cannot be added to token ids, so
pattern j is instead ``pattern_tokens`` (default half the sequence length, at least 4;
:func:`default_pattern_tokens`) secret tokens written at secret positions
(never position 0, where BERT's ``[CLS]`` sits) of a real sequence; positions and tokens are
uniform draws from the secret, the labels come from their own stream as above, so the null is
the same. The token ids are drawn from the ids the owner's data never uses (``token_pool:
unseen``) when at least :data:`MIN_TOKEN_POOL` such ids exist: an id absent from the data gets no
gradient from fine-tuning on that data (its embedding row is not updated at all, by SGD or by
Adam), so a thief's clean fine-tune cannot overwrite the pattern's input, only what reads it.
Measured on the BERT-style benchmark task (docs/benchmarks.md, tenth session): with ids the data
uses, Adam 1e-2 and SGD removed the trigger set; on unused ids, embedded at Adam 1e-2, it survived
every fine-tune up to Adam 1e-2 and SGD 0.1 (not a thief who adds unused ids to its own data). The pool is sealed in the
record under the master key (it says which ids the private data contains); with too few unused
ids (a data set that covers the vocabulary) the whole range is used, ``token_pool: all``.

Threat model and limits: as for every trigger set, querying reveals the stamped inputs to the
suspect's operator (verify one suspect per record); a thief who learns a pattern can train it
away. Distillation is *not covered*: a student distilled with soft labels on many clean inputs
inherited the rules in the runs we measured (docs/benchmarks.md), but with the thief's smaller
data set or with hard labels it did not, and nothing here can promise either.
The regulariser reads the owner's base inputs outside the batch, so it must not be used under
DP-SGD with private base inputs (``make_regularizer`` asks for them explicitly).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchshield.errors import FormatError, InputError
from torchshield.model.watermark.record import WatermarkRecord, expand_secret, new_mark
from torchshield.model.watermark.significance import DEFAULT_P_THRESHOLD, Verdict, decide, grouped_p_value

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchshield.crypto.keys import MasterKey

__all__ = ["DESIGN", "KeyedPatternRegularizer", "KeyedPatterns", "default_pattern_tokens", "default_patterns",
           "new_keyed_mark", "token_pool", "unseen_ids", "verification_set", "verify_keyed"]

DESIGN = "keyed-pattern"
DEFAULT_PATTERNS = 16
DEFAULT_TRIGGERS = 160
DEFAULT_AMPLITUDE = 0.5
DEFAULT_STRENGTH = 0.3
DEFAULT_PER_STEP = 32
DEFAULT_EVERY = 2
_RECORDS_PATTERN_TOKENS = 4  # what a token record without the field was made with
MIN_TOKEN_POOL = 16  # fewer unused ids than this: patterns would share most of their tokens; use all ids
DEFAULT_TOKEN_STRENGTH = 1.0  # a tiny BERT needed about 10 epochs at 1.0 (0.3 did not take in 15)


def default_pattern_tokens(length: int) -> int:
    """Secret tokens per pattern for sequences of ``length``: half of it, at least 4.

    Measured on the BERT-style task of ``bench_watermark.py`` (16-token sequences, five keys each:
    ``benchmarks/explore_trigger_robustness.py --arch bert --keys 5``): with 8 tokens the trigger
    set survived a 10-epoch Adam 1e-3 fine-tune in 5 of 5 runs (p <= 8.5e-9), with 4 tokens in
    none (p 9e-5 to 0.21), and the marked model was more accurate (0.96-0.98 against 0.90-0.94).
    Both are still removed by Adam 1e-2. Half the length keeps that proportion on longer
    sequences, which we have not measured."""
    return min(max(4, length // 2), max(1, length - 1))


def default_patterns(classes: int) -> int:
    """Enough patterns for the p-value floor ``C^-K`` to reach 1e-12 (16 for 10 classes, 26 for 3,
    40 for 2): with too few, even a perfect suspect could not pass the 1e-6 threshold."""
    import math

    return max(DEFAULT_PATTERNS, math.ceil(12 / math.log10(max(2, classes))))


def _uniform_labels(secret: bytes, count: int, classes: int) -> list[int]:
    """``count`` labels uniform over ``classes`` exactly: rejection sampling on 32-bit words."""
    import numpy as np

    limit = (2**32 // classes) * classes
    out: list[int] = []
    words = 2 * count + 16
    while len(out) < count:
        raw = np.frombuffer(expand_secret(secret, "trigger/pattern-labels", 4 * words), dtype="<u4")
        out = [int(v) % classes for v in raw if int(v) < limit][:count]
        words *= 2
    return out


@dataclass(frozen=True)
class KeyedPatterns:
    """The K secret patterns (shape ``[K, *input_shape]``, entries +-1) and their labels."""

    signs: torch.Tensor
    labels: torch.Tensor
    amplitude: float
    low: float
    high: float
    positions: torch.Tensor | None = None  # token inputs: [K, m] positions and [K, m] token ids
    tokens: torch.Tensor | None = None

    @classmethod
    def from_record(cls, record: WatermarkRecord, secret: bytes, pool: Sequence[int] | None = None) -> KeyedPatterns:
        """The patterns of ``record``; ``pool``: the token ids of a ``token_pool: unseen`` record
        (:func:`token_pool`, which needs the master key)."""
        import numpy as np
        import torch

        p = record.params
        k, classes = int(p["patterns"]), int(p["num_classes"])
        shape = [int(d) for d in p["input_shape"]]
        labels = torch.tensor(_uniform_labels(secret, k, classes), dtype=torch.long)
        if str(p.get("input_dtype", "float32")).startswith("int"):
            if p.get("token_pool") == "unseen" and not pool:
                raise FormatError("this keyed-pattern record draws its tokens from a sealed pool",
                                  hint="open it with keyed.token_pool(record, key)")
            positions, tokens = _token_patterns(secret, k, int(p.get("pattern_tokens", _RECORDS_PATTERN_TOKENS)),
                                                shape[-1], int(p["low"]), int(p["high"]),
                                                pool if p.get("token_pool") == "unseen" else None)
            return cls(torch.zeros(0), labels, 0.0, float(p["low"]), float(p["high"]), positions, tokens)
        n = k * int(np.prod(shape))
        raw = np.frombuffer(expand_secret(secret, "trigger/patterns", (n + 7) // 8), dtype=np.uint8)
        signs = np.unpackbits(raw)[:n].astype(np.float32) * 2.0 - 1.0
        return cls(torch.from_numpy(signs.reshape(k, *shape)), labels,
                   float(p["amplitude"]), float(p["low"]), float(p["high"]))

    def stamp(self, inputs: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """``inputs[i]`` with pattern ``which[i]`` added, clipped to the input range (token inputs:
        the pattern's tokens written at its positions)."""
        if self.positions is not None and self.tokens is not None:
            import torch

            out = inputs.long().clone()
            rows = torch.arange(len(out), device=out.device)[:, None]
            out[rows, self.positions.to(out.device)[which]] = self.tokens.to(out.device)[which]
            return out
        delta = self.amplitude * (self.high - self.low) * self.signs.to(inputs.device)[which]
        return (inputs + delta).clamp(self.low, self.high)


def _token_patterns(secret: bytes, k: int, m: int, length: int, low: int, high: int,
                    pool: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pattern, ``m`` distinct positions in ``[1, length)`` and ``m`` token ids in ``[low, high]``,
    or uniform over ``pool`` (its own stream, so records without a pool draw as they always did)."""
    import torch

    from torchshield.model.watermark.inputs import uniform_integers

    if length < m + 1:
        raise InputError(f"token sequences of {length} are too short for {m} pattern tokens")
    if high >= 2**24:
        raise InputError(f"a vocabulary of {high + 1} ids does not fit the record's float32 base inputs")
    words = 8 * k * m + 64
    while True:
        draws = uniform_integers(expand_secret(secret, "trigger/token-patterns", 4 * words), 4 * k * m, 1, length - 1)
        if pool is None:
            tokens = uniform_integers(expand_secret(secret, "trigger/pattern-token-ids", 4 * words), k * m, low, high)
        else:
            picks = uniform_integers(expand_secret(secret, "trigger/pattern-token-pool", 4 * words), k * m, 0,
                                     len(pool) - 1)
            tokens = None if picks is None else [int(pool[i]) for i in picks]
        if draws is not None and tokens is not None:
            break
        words *= 2
    positions: list[list[int]] = []
    it = iter(draws)
    for _ in range(k):
        chosen: list[int] = []
        while len(chosen) < m:
            pos = next(it, None)
            if pos is None:  # vanishingly unlikely; a fixed fallback keeps the draw deterministic
                pos = next(q for q in range(1, length) if q not in chosen)
            if pos not in chosen:
                chosen.append(pos)
        positions.append(chosen)
    return torch.tensor(positions, dtype=torch.long), torch.tensor(tokens, dtype=torch.long).reshape(k, m)


class KeyedPatternRegularizer:
    """``strength * CE(model(stamped base inputs), pattern labels)`` on ``per_step`` random pairs.

    Applied on one step in ``every`` with ``every`` times the weight (see ``WhiteboxRegularizer``).
    Pairs come from a generator seeded by the secret, so an embedding run is reproducible."""

    def __init__(self, patterns: KeyedPatterns, base: torch.Tensor, seed: int, *,
                 strength: float = DEFAULT_STRENGTH, per_step: int = DEFAULT_PER_STEP,
                 every: int = DEFAULT_EVERY) -> None:
        import torch

        self.patterns = patterns
        self.base = base
        self.strength = strength
        self.per_step = max(1, int(per_step))
        self.every = max(1, int(every))
        self._gen = torch.Generator().manual_seed(seed)
        self._calls = 0

    def __call__(self, model: nn.Module) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        self._calls += 1
        if (self._calls - 1) % self.every:
            return torch.zeros(())
        idx = torch.randint(0, len(self.base), (self.per_step,), generator=self._gen)
        which = torch.randint(0, len(self.patterns.labels), (self.per_step,), generator=self._gen)
        device = next(model.parameters()).device
        out = model(self.patterns.stamp(self.base[idx], which).to(device))
        return (self.strength * self.every) * F.cross_entropy(out, self.patterns.labels[which].to(device))


def _context(mark_id: str) -> bytes:
    return f"torchshield/watermark/trigger/{mark_id}/base-inputs".encode()


def _pool_context(mark_id: str) -> bytes:
    return f"torchshield/watermark/trigger/{mark_id}/token-pool".encode()


def unseen_ids(seen: torch.Tensor, low: int, high: int) -> list[int]:
    """The ids in ``[low, high]`` that never occur in ``seen`` (any shape of token ids)."""
    import numpy as np

    ids = np.arange(int(low), int(high) + 1)
    return ids[~np.isin(ids, np.unique(seen.detach().cpu().numpy()))].tolist()


def token_pool(record: WatermarkRecord, key: MasterKey) -> list[int] | None:
    """The sealed pool of a ``token_pool: unseen`` record (None for any other record)."""
    import numpy as np

    from torchshield.crypto.envelope import open_sealed

    p = record.params
    if p.get("token_pool") != "unseen":
        return None
    try:
        blob = base64.b64decode(str(p["sealed_token_pool"]), validate=True)
        low, high = int(p["low"]), int(p["high"])
    except (KeyError, TypeError, ValueError):
        raise FormatError("the keyed-pattern record's sealed_token_pool is missing or malformed",
                          hint="use the owner's original mark.json") from None
    bits = np.unpackbits(np.frombuffer(open_sealed(key, blob, context=_pool_context(record.mark_id)), np.uint8))
    span = high - low + 1
    if len(bits) < span or bits[span:].any():
        raise FormatError("the keyed-pattern record's token pool does not match its id range")
    pool = (np.flatnonzero(bits[:span]) + low).tolist()
    if len(pool) < MIN_TOKEN_POOL:
        raise FormatError("the keyed-pattern record's token pool is too small")
    return pool


def new_keyed_mark(key: MasterKey, base_inputs: torch.Tensor, *, num_classes: int, low: float, high: float,
                   triggers: int = DEFAULT_TRIGGERS, patterns: int = DEFAULT_PATTERNS,
                   amplitude: float = DEFAULT_AMPLITUDE, strength: float = DEFAULT_STRENGTH,
                   per_step: int = DEFAULT_PER_STEP, threshold: float = DEFAULT_P_THRESHOLD,
                   tokens: bool = False, pattern_tokens: int | None = None,
                   seen_tokens: torch.Tensor | None = None,
                   ) -> tuple[KeyedPatternRegularizer, WatermarkRecord]:
    """A keyed-pattern mark: train with the regulariser on ``base_inputs`` (the owner's data);
    the first ``triggers`` of them are sealed into the record for verification. ``tokens``: the
    inputs are token ids in ``[low, high]`` (patterns are written tokens, see the module docstring),
    drawn from the ids that neither ``base_inputs`` nor ``seen_tokens`` (all of the data the model
    is trained on) contain."""
    import numpy as np
    import torch

    from torchshield.crypto.envelope import seal

    base = torch.as_tensor(base_inputs).detach().cpu()
    base = base.long() if tokens else base.float()
    if num_classes < 2:
        raise InputError(f"watermark num_classes={num_classes}: a trigger set needs at least 2 classes")
    if patterns < 4:
        raise InputError(f"watermark patterns={patterns} is too few; the p-value cannot fall below "
                         f"{num_classes}^-patterns", hint="use 16")
    if triggers < 2 * patterns:
        raise InputError(f"watermark triggers={triggers} gives fewer than 2 per pattern ({patterns} patterns)")
    if len(base) < triggers:
        raise InputError(f"the keyed-pattern mark needs at least {triggers} base inputs from the task's data, "
                         f"got {len(base)}", hint="pass more data or fewer triggers")
    if not high > low or not 0.0 < amplitude <= 1.0:
        raise InputError(f"trigger range [{low}, {high}] / amplitude {amplitude} is not usable",
                         hint="high must exceed low; amplitude is a fraction of the range in (0, 1]")
    kept = np.ascontiguousarray(base[:triggers].numpy().astype("<f4"))
    params: dict[str, Any] = {"design": DESIGN, "triggers": triggers, "patterns": patterns,
                              "num_classes": num_classes, "input_shape": list(base.shape[1:]), "low": low,
                              "high": high, "amplitude": amplitude, "chance": 1.0 / num_classes,
                              "strength": strength}
    if tokens:
        if base.dim() != 2 or int(base.min()) < low or int(base.max()) > high:
            raise InputError(f"token base inputs must be [N, length] ids in [{int(low)}, {int(high)}]")
        if pattern_tokens is None:
            pattern_tokens = default_pattern_tokens(int(base.shape[1]))
        params.update(input_dtype="int64", pattern_tokens=int(pattern_tokens))
        seen = base if seen_tokens is None else torch.cat([base.flatten(), torch.as_tensor(seen_tokens).flatten()])
        pool = unseen_ids(seen, int(low), int(high))
        if len(pool) < MIN_TOKEN_POOL:
            pool = []
        params["token_pool"] = "unseen" if pool else "all"
    else:
        pool = []
    record, secret = new_mark(key, "trigger", threshold=threshold, params=params)
    sealed = seal(key, kept.tobytes(), context=_context(record.mark_id))
    record = _with_params(record, secret, sealed_inputs=base64.b64encode(sealed).decode())
    if pool:
        mask = np.zeros(int(high) - int(low) + 1, dtype=np.uint8)
        mask[np.asarray(pool) - int(low)] = 1
        sealed_pool = seal(key, np.packbits(mask).tobytes(), context=_pool_context(record.mark_id))
        record = _with_params(record, secret, sealed_token_pool=base64.b64encode(sealed_pool).decode())
    seed = int.from_bytes(expand_secret(secret, "trigger/pairs", 8), "big")
    reg = KeyedPatternRegularizer(KeyedPatterns.from_record(record, secret, pool or None), base, seed,
                                  strength=strength, per_step=per_step)
    return reg, record


def _with_params(record: WatermarkRecord, secret: bytes, **extra: Any) -> WatermarkRecord:
    return record.sealed_with(secret, params={**record.params, **extra})


def verification_set(record: WatermarkRecord, key: MasterKey) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stamped verification inputs, their labels and the pattern index of each."""
    import numpy as np
    import torch

    from torchshield.crypto.envelope import open_sealed

    secret = record.open_secret(key)
    p = record.params
    try:
        blob = base64.b64decode(str(p["sealed_inputs"]), validate=True)
        count, shape = int(p["triggers"]), [int(d) for d in p["input_shape"]]
    except (KeyError, TypeError, ValueError):
        raise FormatError("the keyed-pattern record's sealed_inputs is missing or malformed",
                          hint="use the owner's original mark.json") from None
    raw = open_sealed(key, blob, context=_context(record.mark_id))
    base = np.frombuffer(raw, dtype="<f4")
    if base.size != count * int(np.prod(shape)):
        raise FormatError("the keyed-pattern record's base inputs do not match its triggers and input_shape")
    patterns = KeyedPatterns.from_record(record, secret, token_pool(record, key))
    which = torch.arange(count) % len(patterns.labels)
    inputs = patterns.stamp(torch.from_numpy(base.copy()).reshape(count, *shape), which)  # ids: exact in f32
    return inputs, patterns.labels[which], which


def verify_keyed(predicted: Sequence[int], labels: torch.Tensor, which: torch.Tensor,
                 record: WatermarkRecord) -> Verdict:
    """Count matches and compute the exact grouped p-value (see ``significance``)."""
    classes = int(record.params["num_classes"])
    k = int(record.params["patterns"])
    table = [[0] * classes for _ in range(k)]
    for pred, j in zip(predicted, which.tolist(), strict=True):
        if 0 <= int(pred) < classes:
            table[j][int(pred)] += 1
    matches = sum(int(int(p) == y) for p, y in zip(predicted, labels.tolist(), strict=True))
    return decide("trigger", matches, len(labels), 1.0 / classes, record.threshold, record.mark_id,
                  p_value=grouped_p_value(table, matches))
