"""How sure a verification is: the p-value of the observed agreement under "unrelated model".

Both methods reduce to counting agreements with a secret that the model could only match by
chance if it was not derived from ours:

* white-box: the extracted bit ``i`` is the sign of ``x_i . w`` for a secret random vector
  ``x_i`` with symmetric (Rademacher) entries. For any fixed weights ``w`` that were not
  trained towards the secret, ``x_i . w`` is as likely positive as negative and the rows are
  independent, so the number of matching bits is Binomial(T, 1/2) *exactly*, whatever the
  model: no calibration on null models is needed for the test to be valid.
* trigger set: the secret labels are drawn uniformly from C classes independently of the
  model, so an unrelated model's agreement on each trigger is 1/C whatever it predicts, and
  the count is Binomial(N, 1/C).

* keyed-pattern trigger set (issue 18): K secret patterns, each with a label drawn uniformly
  from C classes independently of everything else; trigger ``i`` is an in-distribution input
  stamped with pattern ``g(i)``, and its label is that pattern's. Labels are shared within a
  pattern, so the count is not binomial; but given the suspect's predictions (fixed, since the
  model does not know the labels), pattern ``j`` contributes ``n_j(l_j)`` matches, where
  ``n_j(c)`` is how many of its triggers the model put in class ``c`` and ``l_j`` is uniform and
  independent across patterns. The exact null of the total is the convolution of K uniform
  choices (:func:`grouped_p_value`), computed with integers: valid conditionally on the
  predictions, hence unconditionally.

The p-value is ``P[Binomial(n, p0) >= k]`` (scipy's survival function, exact in log space
for the tiny values a real mark gives). A mark counts as present when ``p < threshold``
(default 1e-6, the issue's goal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_P_THRESHOLD", "Verdict", "binomial_p_value", "grouped_p_value"]

DEFAULT_P_THRESHOLD = 1e-6


def binomial_p_value(matches: int, total: int, chance: float) -> float:
    """``P[Binomial(total, chance) >= matches]``: the chance an unrelated model agrees this often."""
    from scipy.stats import binom

    if total <= 0:
        return 1.0
    return float(binom.sf(matches - 1, total, chance))


def grouped_p_value(table: Sequence[Sequence[int]], matches: int) -> float:
    """``P[sum_j table[j][L_j] >= matches]`` for independent uniform ``L_j`` over the columns.

    ``table[j][c]`` is how many triggers of pattern ``j`` the model predicted as class ``c``. The
    distribution is the product of the polynomials ``sum_c x^table[j][c]``: integer counts of the
    C^K label assignments, so the result is exact up to the final division."""
    from fractions import Fraction

    if not table:
        return 1.0
    dist = {0: 1}
    for row in table:
        nxt: dict[int, int] = {}
        for total, ways in dist.items():
            for count in row:
                nxt[total + int(count)] = nxt.get(total + int(count), 0) + ways
        dist = nxt
    assignments = 1
    for row in table:
        assignments *= len(row)
    return float(Fraction(sum(w for total, w in dist.items() if total >= matches), assignments))


@dataclass(frozen=True)
class Verdict:
    """The answer of a verification: is the mark there, and how likely is that by chance."""

    method: str
    present: bool
    matches: int
    total: int
    chance: float
    p_value: float
    threshold: float
    mark_id: str

    @property
    def agreement(self) -> float:
        """Fraction of bits (white-box) or triggers (black-box) that agree with the secret."""
        return self.matches / self.total if self.total else 0.0

    @property
    def bit_error_rate(self) -> float | None:
        return 1.0 - self.agreement if self.method == "whitebox" else None

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["agreement"] = self.agreement
        if self.method == "whitebox":
            doc["bit_error_rate"] = self.bit_error_rate
        else:
            doc["trigger_accuracy"] = self.agreement
        return doc


def decide(method: str, matches: int, total: int, chance: float, threshold: float, mark_id: str, *,
           p_value: float | None = None) -> Verdict:
    """The verdict for ``matches`` of ``total``; ``p_value`` if the test is not binomial."""
    p = binomial_p_value(matches, total, chance) if p_value is None else p_value
    return Verdict(method=method, present=p < threshold, matches=matches, total=total, chance=chance,
                   p_value=p, threshold=threshold, mark_id=mark_id)
