"""The privacy a model claims (its DP-SGD record) beside the leakage measured on it.

A DP record is a promise computed by an accountant; a membership-inference audit is an
experiment. They answer different questions, so the report shows both: a small epsilon with a
high attack AUC means the accounting or the training was wrong; no DP and a high AUC means the
model memorises its training records."""

from __future__ import annotations

from typing import Any

from torchshield.assess.checks.capability import require
from torchshield.assess.context import AssessContext
from torchshield.assess.findings import FAIL, PASS, SKIPPED, WARN, Section
from torchshield.assess.subject import NotAssessable

__all__ = ["AUC_FAIL", "AUC_WARN", "EPSILON_PASS", "EPSILON_WARN", "check_privacy"]

EPSILON_PASS, EPSILON_WARN = 4.0, 10.0
AUC_WARN, AUC_FAIL = 0.55, 0.65


def check_privacy(ctx: AssessContext) -> Section:
    s = Section("privacy", "Privacy: claimed budget and measured leakage")
    record = ctx.manifest.get("privacy")
    _claimed(s, record)
    try:
        _measured(s, ctx, record)
    except NotAssessable as exc:
        s.add("membership-audit", SKIPPED, exc.reason, exc.action)
    return s


def _claimed(s: Section, record: Any) -> None:
    if not isinstance(record, dict) or record.get("epsilon") is None:
        s.add(
            "dp-record",
            WARN,
            "the model was trained without differential privacy: nothing bounds what it "
            "reveals about one training record",
            "retrain with a budget: privacy: {epsilon: 3, delta: 1e-5}",
        )
        return
    eps, delta = float(record["epsilon"]), record.get("delta")
    if record.get("insecure_seed_for_tests"):
        s.add(
            "dp-record",
            FAIL,
            f"the noise was seeded for tests (insecure_seed_for_tests): anyone who knows the seed can "
            f"subtract it, so the recorded epsilon = {eps:.2f} does not hold",
            "retrain without privacy.seed (noise then comes from a CSPRNG)",
        )
        return
    s.metrics.update(
        {
            "claimed_epsilon": round(eps, 4),
            "delta": delta,
            "accountant": record.get("accountant"),
            "noise_multiplier": record.get("noise_multiplier"),
            "steps": record.get("steps"),
        }
    )
    what = (
        f"trained with DP-SGD to epsilon = {eps:.2f} (delta = {delta}, {record.get('accountant')} accountant)"
    )
    if eps <= EPSILON_PASS:
        s.add("dp-record", PASS, what)
    elif eps <= EPSILON_WARN:
        s.add(
            "dp-record",
            WARN,
            what + f"; above {EPSILON_PASS:g} the guarantee is weak",
            "retrain with a smaller epsilon if accuracy allows",
        )
    else:
        s.add(
            "dp-record",
            FAIL,
            what + f"; above {EPSILON_WARN:g} it protects little",
            "retrain with epsilon <= 10 (ideally <= 4)",
        )


def _measured(s: Section, ctx: AssessContext, record: Any) -> None:
    require("torchshield.privacy.audit", "the membership-inference audit")
    from torchshield.privacy import audit_membership

    members, nonmembers, rows = ctx.membership
    claimed = (
        float(record["epsilon"]) if isinstance(record, dict) and record.get("epsilon") is not None else None
    )
    delta = float(record["delta"]) if isinstance(record, dict) and record.get("delta") is not None else None
    report = audit_membership(
        ctx.subject.module,
        members,
        nonmembers,
        claimed_epsilon=claimed,
        claimed_delta=delta,
        seed=ctx.inputs.seed,
    )
    best = report.strongest
    auc = max(a.auc for a in report.attacks)
    s.metrics.update(
        {
            "attack_auc": round(auc, 4),
            "strongest_attack": best.attack,
            "tpr_at_1pct_fpr": round(best.tpr_at_1pct_fpr, 4),
            "epsilon_lower_bound": round(best.epsilon_lower_bound, 4),
            "members": report.members,
            "nonmembers": report.non_members,
            **({"rows": rows} if rows else {}),
            "attacks": {a.attack: round(a.auc, 4) for a in report.attacks},
        }
    )
    from torchshield.assess.charts import roc_chart

    s.charts.append(
        roc_chart(
            "privacy-roc",
            "Membership inference ROC",
            {a.attack: (a.roc_fpr, a.roc_tpr, a.auc) for a in report.attacks if a.roc_fpr},
        )
    )
    if not report.consistent:
        s.add(
            "membership-audit",
            FAIL,
            f"measured leakage proves epsilon >= {best.epsilon_lower_bound:.2f}, above "
            f"the claimed {claimed:g}",
            "the DP training or its accounting is wrong; do not rely on the record",
        )
    elif auc >= AUC_FAIL:
        s.add(
            "membership-audit",
            FAIL,
            f"a membership attack ({best.attack}) tells training records from others with AUC {auc:.2f}",
            "train with DP-SGD or stronger regularisation; serve labels only",
        )
    elif auc >= AUC_WARN:
        s.add(
            "membership-audit",
            WARN,
            f"a membership attack does better than chance (AUC {auc:.2f})",
            "train with DP-SGD; restrict outputs to labels or top-k",
        )
    else:
        s.add(
            "membership-audit",
            PASS,
            f"membership attacks stay close to chance (best AUC {auc:.2f}, "
            f"epsilon lower bound {best.epsilon_lower_bound:.2f})",
        )
