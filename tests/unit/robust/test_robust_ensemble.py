"""The standard ensemble (APGD-CE, APGD-T, FAB-T, APGD-CW, Square): known answers for its losses and
schedule, the cascade's bookkeeping, and an adversary who knows the method - a model that hides
its gradients behind input quantisation, which gradient attacks call robust and the ensemble
does not, with a warning."""

from __future__ import annotations

import pytest
import torch
from robust_models import Quantised, accuracy, digits, one_torch_thread, trained  # noqa: F401 (autouse fixture)

from torchshield.robust.attacks import APGD, StandardEnsemble, StandardEnsembleL2, build_attack
from torchshield.robust.attacks.apgd import (
    _checkpoints,
    cw_loss,
    dlr_loss,
    targeted_dlr_loss,
    targeted_margin,
)
from torchshield.robust.attacks.ensemble import STAGE_ACCESS
from torchshield.robust.evaluate import evaluate_robustness
from torchshield.robust.masking import MaskingInput, masking_warnings

N = 100
FAST = {"steps": 10, "targets": 3, "queries": 300}


@pytest.fixture(scope="module")
def data():
    _, _, xt, yt = digits()
    return xt[:N], yt[:N]


def test_losses_known_answers():
    z = torch.tensor([[3.0, 1.0, 0.5, -2.0], [0.0, 4.0, 1.0, 2.0]])
    y = torch.tensor([0, 0])
    # example 0 is classified correctly: -(z_y - z_pi2) / (z_pi1 - z_pi3) = -(3 - 1) / (3 - 0.5)
    # example 1 is not: -(z_y - z_pi1) / (z_pi1 - z_pi3) = -(0 - 4) / (4 - 1)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-0.8, 4.0 / 3.0]))
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    t = torch.tensor([2, 3])
    assert torch.allclose(targeted_dlr_loss(z, y, t), torch.tensor([-(3 - 0.5) / (3 + 0.75), -(0 - 2) / (4 - 0.5)]))
    assert torch.allclose(cw_loss(z, y), torch.tensor([-2.0, 4.0]))
    assert torch.allclose(targeted_margin(z, y, t), torch.tensor([0.5 - 3.0, 2.0 - 0.0]))  # z_t - z_y
    # DLR is invariant to shifting and positively scaling the logits (why it resists saturated softmax)
    assert torch.allclose(dlr_loss(z * 50 + 7, y), dlr_loss(z, y), atol=1e-5)


@pytest.mark.parametrize("steps", [100, 1000])
def test_step_size_checkpoints_match_the_reference_code(steps):
    # The authors' integer recurrence: first check after 0.22 n steps, gaps shrinking by 0.03 n to >= 0.06 n.
    k, decr, floor = int(0.22 * steps), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    expected, at = [], 0
    while at + k <= steps - 1:
        at += k
        expected.append(at)
        k = max(k - decr, floor)
    assert _checkpoints(steps) == expected


def test_cascade_bookkeeping_and_worst_case(data):
    model = trained("mlp")
    x, y = data
    ens = StandardEnsemble(model, eps=0.1, seed=0, **FAST)
    adv = ens(x, y)
    counts = ens.last_counts
    assert sum(counts.values()) == N and counts["apgd-ce"] > 0
    # AutoAttack's standard order, APGD-CW as the extra stage after FAB-T, and the bookkeeping keys.
    assert list(counts) == ["clean_wrong", "apgd-ce", "apgd-t", "fab-t", "apgd-cw", "square", "robust"]
    assert [name for name, _ in ens.stages(0)] == list(STAGE_ACCESS)
    assert [type(a).__name__ for _, a in StandardEnsembleL2(model, eps=1.0, **FAST).stages(0)] == [
        "APGDL2", "APGDTargetedL2", "FABTargetedL2", "APGDL2", "SquareAttackL2"]
    with torch.no_grad():
        robust = int((model(adv).argmax(1) == y).sum())
    assert robust == counts["robust"]  # counted robust = classified correctly at the returned point
    # Stage 1 is APGD-CE on the clean-correct examples with the ensemble's seed: it fools exactly those.
    ok = (model(x).argmax(1) == y)
    stage1 = APGD(model, eps=0.1, steps=10, seed=0)(x[ok], y[ok])
    fooled1 = int((model(stage1).argmax(1) != y[ok]).sum())
    assert fooled1 == counts["apgd-ce"]
    # ... and the ensemble is never weaker than its first stage alone, nor than PGD.
    assert robust <= ok.sum() - fooled1
    assert accuracy(model, adv, y) <= accuracy(model, build_attack("pgd", model, eps=0.1, steps=10, seed=0)(x, y), y)


def test_deterministic_under_a_seed_and_within_budget(data):
    model = trained("mlp")
    x, y = data[0][:40], data[1][:40]
    for cls, eps in ((StandardEnsemble, 0.1), (StandardEnsembleL2, 1.0)):
        a = cls(model, eps=eps, seed=5, **FAST)(x, y)
        assert torch.equal(a, cls(model, eps=eps, seed=5, **FAST)(x, y))
        delta = (a.double() - x.double()).flatten(1)
        norms = delta.abs().amax(1) if cls.norm == "linf" else delta.norm(dim=1)
        assert float(norms.max()) <= eps and float(a.min()) >= 0 and float(a.max()) <= 1


def test_gradient_masking_is_seen_through_and_flagged(data):
    """The adversary knows our method: it rounds inputs so every gradient is zero. PGD and APGD-CE
    then report the model nearly as robust as it is accurate; Square is not fooled, the ensemble
    reports Square's figure, and the evaluation warns."""
    x, y = data
    masked = Quantised(trained("mlp"), levels=4).eval()
    attacks = [("pgd", {"steps": 10}), ("apgd-ce", {"steps": 10}), ("square", {"queries": 300}), ("standard", FAST)]
    report = evaluate_robustness(masked, x, y, attacks=attacks, eps=[0.1], seed=0)
    acc = {r.attack: r.robust_accuracy for r in report.rows}
    assert acc["pgd"] >= report.clean_accuracy - 0.03 and acc["apgd-ce"] >= report.clean_accuracy - 0.03
    assert acc["standard"] <= acc["square"] + 0.05 and acc["standard"] <= acc["pgd"] - 0.10
    ens = next(r for r in report.rows if r.attack == "standard")
    assert ens.stages is not None and ens.stages["square"] >= 10  # Square found what APGD could not
    assert any("Square stage fooled" in w for w in report.warnings)
    assert any("gradient masking" in w and "square" in w for w in report.warnings)
    # No false alarm on the same network without the masking defence.
    plain = evaluate_robustness(trained("mlp"), x, y, attacks=attacks, eps=[0.1], seed=0)
    assert plain.warnings == []
    assert report.to_dict()["warnings"] == report.warnings


@pytest.mark.parametrize(("rows", "n", "expect"), [
    ([("pgd", "gradient", 0.90), ("square", "score", 0.50)], 100, 1),
    ([("pgd", "gradient", 0.52), ("square", "score", 0.50)], 100, 0),   # 2 points: within noise
    ([("pgd", "gradient", 0.40), ("square", "score", 0.50)], 100, 0),   # gradient stronger: normal
    ([("pgd", "gradient", 0.65), ("square", "score", 0.50)], 20, 1),    # 3 examples of 20
    ([("pgd", "gradient", 0.60), ("square", "score", 0.50)], 20, 0),    # 2 examples: never on so few
    ([("pgd", "gradient", 0.53), ("square", "score", 0.50)], 100, 1),   # exactly the 3-point gap
])
def test_masking_rule_table(rows, n, expect):
    inputs = [MaskingInput(a, acc_, "linf", 0.1, r) for a, acc_, r in rows]
    assert len(masking_warnings(inputs, n)) == expect
    # different budgets or norms are never compared
    shifted = [MaskingInput(a, acc_, "linf", 0.1 * (i + 1), r) for i, (a, acc_, r) in enumerate(rows)]
    assert masking_warnings(shifted, n) == []


def test_report_robustness_section_reads_the_ensemble_and_flags_masking(data):
    """The report's robustness check on the masked model: its verdict is the ensemble's figure, and a
    gradient-masking finding says why PGD's is not to be believed; no such finding without masking."""
    from types import SimpleNamespace

    from torchshield.assess.checks.robustness import check_robustness

    x, y = data[0][:60], data[1][:60]

    def section(model):
        subject = SimpleNamespace(module=model, bounds=(0.0, 1.0), num_classes=10)
        ctx = SimpleNamespace(subject=subject, test_split=(x, y), inputs=SimpleNamespace(quick=True, seed=0))
        return check_robustness(ctx)

    masked = section(Quantised(trained("mlp"), levels=4).eval())
    found = {f.check: f for f in masked.findings}
    assert "gradient-masking" in found and found["gradient-masking"].verdict == "warn"
    assert masked.metrics["masking_warnings"] and masked.metrics["reported_attack"] == "standard"
    curves = masked.metrics["robust_accuracy"]
    assert curves["standard"][-1] <= curves["pgd"][-1] - 0.1  # at 20% of the range the gap is plain
    assert "under standard" in found["robust-accuracy"].reason
    plain = section(trained("mlp"))
    assert "gradient-masking" not in {f.check for f in plain.findings}


@pytest.mark.parametrize("classes", [2, 3])
def test_few_classes_fall_back_to_margin_losses(data, classes):
    """DLR needs 3 logits and targeted DLR 4: with fewer, APGD-T and APGD-DLR use the equivalent
    margin, and the ensemble still runs and fools (no index error, no silent skip)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, classes)).eval()
    x, y = data[0][:40], data[1][:40] % classes
    for name, eps in (("standard", 0.1), ("standard-l2", 1.0)):
        ens = build_attack(name, model, eps=eps, seed=0, steps=5, targets=3, queries=20)
        adv = ens(x, y)
        assert sum(ens.last_counts.values()) == 40
        assert accuracy(model, adv, y) < accuracy(model, x, y)
    for loss in ("dlr", "cw"):
        assert accuracy(model, APGD(model, eps=0.1, steps=5, loss=loss, seed=0)(x, y), y) < accuracy(model, x, y)
