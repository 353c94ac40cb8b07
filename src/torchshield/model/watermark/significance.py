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

The p-value is ``P[Binomial(n, p0) >= k]`` (scipy's survival function, exact in log space
for the tiny values a real mark gives). A mark counts as present when ``p < threshold``
(default 1e-6, the issue's goal).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_P_THRESHOLD", "Verdict", "binomial_p_value"]

DEFAULT_P_THRESHOLD = 1e-6


def binomial_p_value(matches: int, total: int, chance: float) -> float:
    """``P[Binomial(total, chance) >= matches]``: the chance an unrelated model agrees this often."""
    from scipy.stats import binom

    if total <= 0:
        return 1.0
    return float(binom.sf(matches - 1, total, chance))


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


def decide(method: str, matches: int, total: int, chance: float, threshold: float, mark_id: str) -> Verdict:
    p = binomial_p_value(matches, total, chance)
    return Verdict(method=method, present=p < threshold, matches=matches, total=total, chance=chance,
                   p_value=p, threshold=threshold, mark_id=mark_id)
