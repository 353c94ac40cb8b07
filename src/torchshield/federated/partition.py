"""Split one dataset into per-client shards: IID, or Dirichlet non-IID over labels.

Dirichlet(alpha) label skew is the usual model of hospitals whose case mix differs: for each
class, the share each client holds is drawn from Dir(alpha); alpha -> 0 gives each client a few
classes, alpha -> inf approaches IID. Every client must get data (an empty client cannot
train and would stall SecAgg+ rounds), so draws are repeated and, as a last resort, samples
move from the largest shard. Seeded: the same config gives the same shards everywhere, which
is how separate SuperNode processes agree on their partitions without exchanging data.
"""

from __future__ import annotations

import numpy as np

from torchshield.errors import InputError

__all__ = ["dirichlet_partition", "iid_partition", "partition_indices"]

_MAX_DRAWS = 100


def iid_partition(num_samples: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
    """Shuffle and cut into ``num_clients`` shards whose sizes differ by at most one."""
    _check(num_samples, num_clients)
    order = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(labels: np.ndarray, num_clients: int, *, alpha: float, seed: int,
                        min_size: int = 1) -> list[np.ndarray]:
    """Label-skewed shards: class ``c``'s samples are spread by proportions ~ Dir(alpha)."""
    if not alpha > 0:
        raise InputError(f"partition.alpha must be > 0, got {alpha}")
    labels = np.asarray(labels)
    _check(len(labels), num_clients * min_size)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(_MAX_DRAWS):
        shards: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].extend(part.tolist())
        if min(len(s) for s in shards) >= min_size:
            break
    else:  # very small alpha with many clients: top up the small shards from the largest
        for shard in shards:
            while len(shard) < min_size:
                donor = max(shards, key=len)
                shard.append(donor.pop())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


def partition_indices(labels: np.ndarray, num_clients: int, *, kind: str, alpha: float,
                      seed: int) -> list[np.ndarray]:
    """Dispatch on the config's ``partition.kind``."""
    if kind == "iid":
        return iid_partition(len(labels), num_clients, seed=seed)
    if kind == "dirichlet":
        return dirichlet_partition(labels, num_clients, alpha=alpha, seed=seed)
    raise InputError(f"partition.kind {kind!r} is not known", hint="use 'iid' or 'dirichlet'")


def _check(num_samples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise InputError(f"clients must be >= 1, got {num_clients}")
    if num_samples < num_clients:
        raise InputError(f"clients ({num_clients}) is larger than the training samples ({num_samples})",
                         hint="use fewer clients or a larger dataset")
