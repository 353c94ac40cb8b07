"""Privacy accounting for DP-SGD: Opacus' RDP and PRV accountants behind two functions.

We reuse Opacus' accountants rather than reimplementing them: they are the reference the
community checks against, and our reported epsilon must agree with them. What this module
adds is input checking with torchshield errors (epsilon <= 0, delta >= 1/N) and one place that
turns a target epsilon into a noise multiplier *from below*: the returned sigma always gives
``epsilon <= target`` (Opacus' search returns the upper end of its bisection interval).

Epsilon is an upper bound on the privacy loss of the whole training run under the stated
delta, for the add/remove-one-example neighbouring relation, assuming Poisson sampling with
the given rate and that only the final (or every) model is released.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torchshield.errors import InputError, MissingDependencyError

__all__ = ["ACCOUNTANTS", "check_budget", "epsilon_and_accountant", "epsilon_for", "noise_multiplier_for"]

ACCOUNTANTS = ("prv", "rdp")
# PRV discretises the privacy-loss distribution on a grid whose size grows with the steps and
# shrinks with sigma; past a few million points it runs for minutes and then returns inf
# (sigma 0.2, q 1, 100 steps: 21 s, 1e7 points, inf). Above this we use RDP, a valid (looser) bound.
PRV_MAX_POINTS = 3_000_000


def _opacus_accountant(name: str):  # noqa: ANN202 - opacus type imported lazily
    if name not in ACCOUNTANTS:
        raise InputError(f"privacy.accountant must be one of {ACCOUNTANTS}, got {name!r}")
    try:
        from opacus.accountants import create_accountant
    except ImportError:  # pragma: no cover
        raise MissingDependencyError("opacus", "privacy") from None
    return create_accountant(name)


def check_budget(epsilon: float, delta: float, n: int | None = None) -> None:
    """Refuse budgets that promise nothing: epsilon <= 0, delta outside (0, 1/N)."""
    if not epsilon > 0:
        raise InputError(f"privacy.epsilon must be > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise InputError(f"privacy.delta must be in (0, 1), got {delta}")
    if n is not None and delta >= 1.0 / n:
        raise InputError(f"privacy.delta={delta:g} is >= 1/N for N={n} examples: a mechanism could then "
                         "publish whole records", hint=f"use delta < {1.0 / n:.2g}, e.g. {_suggest(n):.0e}")


def _suggest(n: int) -> float:
    d = 1e-5
    while d >= 1.0 / (10 * n):
        d /= 10
    return d


def epsilon_for(history: Sequence[tuple[float, float, int]], *, delta: float, accountant: str = "rdp") -> float:
    """Epsilon spent by ``history`` = [(noise_multiplier, sample_rate, steps), ...] at ``delta``."""
    return epsilon_and_accountant(history, delta=delta, accountant=accountant)[0]


def _prv_grid_points(history: list[tuple[float, float, int]], delta: float) -> float:
    """Size of the grid Opacus' PRV accountant would build (its own formulas, eps_error 0.01)."""
    import math

    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size

    delta_error, eps_error = delta / 1000, 0.01
    prvs = [PoissonSubsampledGaussianPRV(q, s) for s, q, _ in history]
    steps = [k for _, _, k in history]
    size = compute_safe_domain_size(prvs, steps, eps_error=eps_error, delta_error=delta_error)
    mesh = eps_error / math.sqrt(sum(steps) * math.log(12 / delta_error) / 2)
    return 2 * size / mesh


def epsilon_and_accountant(history: Sequence[tuple[float, float, int]], *, delta: float,
                           accountant: str = "rdp") -> tuple[float, str]:
    """Epsilon and the accountant that gave it: ``prv`` falls back to ``rdp`` (and says so) where
    PRV's grid would be too large or its answer is not finite."""
    import math

    acc = _opacus_accountant(accountant)
    acc.history = [(float(s), float(q), int(k)) for s, q, k in history if k > 0]
    if not acc.history:
        return 0.0, accountant
    with warnings.catch_warnings():  # "optimal order is the largest alpha": we keep Opacus' grid on purpose,
        warnings.simplefilter("ignore")  # so that our numbers match the accountant users check against
        if accountant == "prv":
            if _prv_grid_points(acc.history, delta) > PRV_MAX_POINTS:
                return epsilon_for(acc.history, delta=delta, accountant="rdp"), "rdp (prv fallback: grid too large)"
            try:
                eps = float(acc.get_epsilon(delta=delta))
            except (ValueError, RuntimeError):  # PRV's own "floating point errors will dominate" and friends
                eps = math.inf
            if not math.isfinite(eps):
                return epsilon_for(acc.history, delta=delta, accountant="rdp"), "rdp (prv fallback: not finite)"
            return eps, accountant
        return float(acc.get_epsilon(delta=delta)), accountant


def noise_multiplier_for(*, epsilon: float, delta: float, sample_rate: float, steps: int,
                         accountant: str = "rdp", tolerance: float = 0.01) -> float:
    """Smallest noise multiplier (up to ``tolerance`` in epsilon) with ``epsilon_for(...) <= epsilon``."""
    check_budget(epsilon, delta)
    if not 0 < sample_rate <= 1:
        raise InputError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    _opacus_accountant(accountant)

    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sigma = float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                               steps=steps, accountant=accountant,
                                               epsilon_tolerance=tolerance))
    except ValueError as exc:
        raise InputError(f"privacy.epsilon={epsilon} cannot be reached with delta={delta}, sample rate "
                         f"{sample_rate:.4g} and {steps} steps ({exc})",
                         hint="raise epsilon, lower epochs, or lower the batch size") from None
    # Opacus returns the upper end of its bisection, so epsilon <= target holds; check rather than trust.
    while epsilon_for([(sigma, sample_rate, steps)], delta=delta, accountant=accountant) > epsilon:
        sigma *= 1.001  # pragma: no cover - defensive, never seen with Opacus 1.6
    return sigma
