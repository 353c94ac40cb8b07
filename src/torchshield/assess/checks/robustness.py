"""Robust accuracy over a grid of perturbation budgets, one curve per attack.

Budgets are fractions of the model's input range (``metadata.data.input_bounds``), so one
grid means the same thing for pixels in [0, 1] and standardised table columns. The verdict
reads the strongest attack at the reference budget: how much of the clean accuracy survives.
The ``standard`` ensemble (APGD-CE, APGD-T, FAB-T, APGD-CW and Square, robust only if all fail) is
among the attacks, so a model that merely hides its gradients cannot pass on FGSM/PGD figures;
when a score-based attack finds what gradient attacks missed, a ``gradient-masking`` finding
says so."""

from __future__ import annotations

from typing import Any

from torchshield.assess.checks.capability import require
from torchshield.assess.context import AssessContext
from torchshield.assess.findings import FAIL, PASS, WARN, Section

__all__ = ["EPS_FRACTIONS", "REFERENCE_FRACTION", "check_robustness", "robust_accuracy_curves",
           "robust_accuracy_report"]

EPS_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.2)
REFERENCE_FRACTION = 0.05
RETAIN_PASS, RETAIN_WARN = 0.8, 0.5


def _attacks(quick: bool) -> dict[str, dict[str, Any]]:
    if quick:
        return {"fgsm": {}, "pgd": {"steps": 10}, "standard": {"steps": 10, "targets": 3, "queries": 200}}
    # The ensemble already holds APGD-CE and Square (and flags masking between its stages).
    return {"fgsm": {}, "pgd": {"steps": 20}, "standard": {"steps": 50, "targets": 3, "queries": 500}}


def robust_accuracy_curves(
    model: Any,
    x: Any,
    y: Any,
    *,
    bounds: tuple[float, float],
    num_classes: int,
    attacks: dict[str, dict[str, Any]],
    fractions: tuple[float, ...] = EPS_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Accuracy of ``model`` on ``(x, y)`` under each attack at each budget (fraction of the range)."""
    return robust_accuracy_report(model, x, y, bounds=bounds, num_classes=num_classes, attacks=attacks,
                                  fractions=fractions, seed=seed)[0]


def robust_accuracy_report(
    model: Any,
    x: Any,
    y: Any,
    *,
    bounds: tuple[float, float],
    num_classes: int,
    attacks: dict[str, dict[str, Any]],
    fractions: tuple[float, ...] = EPS_FRACTIONS,
    seed: int = 0,
) -> tuple[dict[str, list[float]], list[str]]:
    """The curves of :func:`robust_accuracy_curves` and the evaluation's gradient-masking warnings."""
    evaluate = require("torchshield.robust.evaluate", "robust-accuracy evaluation")
    lo, hi = bounds
    budgets = [f * (hi - lo) for f in fractions if f > 0]
    report = evaluate.evaluate_robustness(
        model,
        x,
        y,
        attacks=list(attacks.items()),
        eps=budgets,
        bounds=bounds,
        seed=seed,
        num_classes=num_classes,
    )
    curves: dict[str, list[float]] = {}
    for name in attacks:
        rows = {r.eps: r.robust_accuracy for r in report.rows if r.attack == name}
        curves[name] = [report.clean_accuracy if f == 0 else rows[f * (hi - lo)] for f in fractions]
    return curves, list(report.warnings)


def check_robustness(ctx: AssessContext) -> Section:
    s = Section("robustness", "Adversarial robustness")
    subject = ctx.subject
    x, y = ctx.test_split
    lo, hi = subject.bounds or (float(x.min()), float(x.max()))
    bounds = (min(lo, float(x.min())), max(hi, float(x.max())))  # every test row must lie inside the box
    attacks = _attacks(ctx.inputs.quick)
    curves, warnings = robust_accuracy_report(
        subject.module,
        x,
        y,
        bounds=bounds,
        num_classes=subject.num_classes,
        attacks=attacks,
        seed=ctx.inputs.seed,
    )
    eps = [round(f * (bounds[1] - bounds[0]), 6) for f in EPS_FRACTIONS]
    s.metrics.update(
        {
            "examples": len(y),
            "input_bounds": [round(b, 4) for b in bounds],
            "eps": eps,
            "eps_fractions": list(EPS_FRACTIONS),
            "clean_accuracy": round(curves[next(iter(curves))][0], 4),
            "robust_accuracy": {k: [round(a, 4) for a in v] for k, v in curves.items()},
            "norm": "linf",
            "reported_attack": "standard",
            "masking_warnings": warnings,
        }
    )
    from torchshield.assess.charts import line_chart

    s.charts.append(
        line_chart(
            "robustness-curves",
            "Robust accuracy (Linf)",
            {k: (EPS_FRACTIONS, v) for k, v in curves.items()},
            xlabel="epsilon (fraction of input range)",
            ylabel="accuracy",
        )
    )
    ref = EPS_FRACTIONS.index(REFERENCE_FRACTION)
    clean = curves[next(iter(curves))][0]
    strongest = min(curves, key=lambda k: curves[k][ref])
    robust = curves[strongest][ref]
    retained = robust / clean if clean > 0 else 0.0
    s.metrics["retained_at_reference"] = round(retained, 4)
    what = (
        f"under {strongest} at epsilon {eps[ref]:g} ({REFERENCE_FRACTION:.0%} of the input range) accuracy "
        f"falls from {clean:.2f} to {robust:.2f} ({retained:.0%} retained)"
    )
    if retained >= RETAIN_PASS:
        s.add("robust-accuracy", PASS, what)
    elif retained >= RETAIN_WARN:
        s.add("robust-accuracy", WARN, what, "harden it: train with adversarial: {method: pgd, eps: ...}")
    else:
        s.add(
            "robust-accuracy",
            FAIL,
            what,
            "harden it (adversarial training, e.g. adversarial: {method: pgd}) "
            "and put input validation in front of it",
        )
    if warnings:
        s.add(
            "gradient-masking",
            WARN,
            f"attacks disagree as gradient masking makes them: {warnings[0]}"
            + (f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""),
            "read the standard ensemble's figure, not FGSM/PGD's; remove non-differentiable or saturating "
            "pre-processing, or evaluate it with an adaptive attack (BPDA / expectation over transformations)",
        )
    if clean < 0.6:
        s.add(
            "clean-accuracy",
            WARN,
            f"clean accuracy on the given data is only {clean:.2f}",
            "check that --data is the model's test table with the same columns",
        )
    return s
