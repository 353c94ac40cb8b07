"""One keyed hash chain for every append-only record torchshield keeps (the serving audit log,
the privacy-budget ledger).

Record ``n`` (numbered 1, 2, ... with no gap) stores ``mac_n = HMAC-SHA256(K, mac_{n-1} ||
body_n)``, with ``mac_0`` the all-zero genesis value, ``body_n`` the record's canonical bytes
(its owner binds ``n`` into them) and ``K`` a key derived with HKDF from the master key for one
purpose (:meth:`MasterKey.derive`), so two chains never share a key. A *head* kept beside the
records (in the same transaction as each append) holds the last ``(n, mac_n)``.

:meth:`KeyedChain.verify` walks the records in order and names the first that does not check
out. What it detects, against someone who can write the database but does not hold the master
key: an edited record (its MAC), a deleted, inserted or reordered record (the next link, or a
gap in the numbers), a record outside ``1..head`` (numbers below 1, or past the head), a tail
cut off or a head edited or deleted (the head disagrees with the last record). What it cannot
detect: that person rewinding the head *and* cutting the tail to an earlier consistent state
(every prefix of a valid chain is valid); anchor the head elsewhere (export it) against that.
Without the key nothing can be forged; with it, everything can: the chain protects history
from the database's writers, not from the key's holders.

Why HMAC and not a plain hash: with SHA-256 alone, whoever can write the table can recompute
every hash after an edit, so the chain proves nothing. Only ``hmac`` and HKDF are used here
(no home-made primitive); MACs are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

__all__ = ["ChainHead", "ChainReport", "ChainRow", "GENESIS", "KeyedChain"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class ChainHead:
    """The last record's number and MAC, as stored beside the chain (0 and GENESIS when empty)."""

    seq: int
    mac: str


@dataclass(frozen=True)
class ChainRow:
    """One stored record: its number, the exact body that was MACed, and the two MACs."""

    seq: int
    body: str
    prev_mac: str
    mac: str


@dataclass(frozen=True)
class ChainReport:
    """Outcome of a walk; ``first_bad`` is the number of the first record that does not check out."""

    ok: bool
    records: int
    head: ChainHead | None
    first_bad: int | None = None
    reason: str = ""


class KeyedChain:
    """MACs and walk-verification for one chain purpose (e.g. ``"serve/audit-chain"``)."""

    def __init__(self, master: Any, purpose: str) -> None:
        self._key = master.derive(purpose)

    def mac(self, prev: str, body: str) -> str:
        return hmac.digest(self._key, bytes.fromhex(prev) + body.encode(), sha256).hex()

    def extend(self, head: ChainHead, bodies: Callable[[int], str], count: int) -> tuple[list[ChainRow], ChainHead]:
        """``count`` rows after ``head``: ``bodies(n)`` gives record ``n``'s body (with ``n`` bound
        into it). Returns the rows and the new head, to be stored in one transaction."""
        rows, seq, mac = [], head.seq, head.mac
        for _ in range(count):
            seq += 1
            body = bodies(seq)
            new = self.mac(mac, body)
            rows.append(ChainRow(seq, body, mac, new))
            mac = new
        return rows, ChainHead(seq, mac)

    def verify(self, rows: Iterable[ChainRow], head: ChainHead | None, *,
               check_body: Callable[[ChainRow], str | None] | None = None) -> ChainReport:
        """Walk ``rows`` (every stored row, ordered by number) against ``head`` (None: the head
        is missing). ``check_body`` may name a problem in a row's body (its bound number...)."""
        prev, expect, n = GENESIS, 1, 0

        def bad(seq: int, reason: str) -> ChainReport:
            return ChainReport(False, n, head, seq, reason)

        for row in rows:
            seq = row.seq
            if seq < 1:
                return bad(seq, f"record {seq} lies outside the chain (numbers start at 1): inserted")
            if seq != expect:
                return bad(expect, f"record {expect} is missing (next stored record is {seq})")
            problem = check_body(row) if check_body is not None else None
            if problem:
                return bad(seq, problem)
            if not hmac.compare_digest(row.prev_mac, prev):
                return bad(seq, f"record {seq} does not link to record {seq - 1} (deleted, inserted or reordered)")
            if not hmac.compare_digest(row.mac, self.mac(prev, row.body)):
                return bad(seq, f"record {seq} was edited (its MAC does not match)")
            prev, expect, n = row.mac, seq + 1, n + 1
        if head is None:
            return bad(n, f"the chain's head is missing (deleted); the records end at {n}")
        if n > head.seq:
            return bad(head.seq + 1, f"records {head.seq + 1}..{n} lie past the head ({head.seq}): "
                                     "inserted, or the head was rewound")
        if n < head.seq:
            return bad(n + 1, f"chain ends at record {n} but the head says {head.seq} (records cut or head edited)")
        if not hmac.compare_digest(prev, head.mac):
            return bad(n, f"the head's MAC does not match record {n} (head edited)")
        return ChainReport(True, n, head)
