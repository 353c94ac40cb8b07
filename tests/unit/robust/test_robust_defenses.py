"""Defences: squeezers against references, the detector meets its false-positive rate on held-out
clean data and catches PGD, distillation masks gradients, normalisation stays in raw units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robust_models import accuracy, digits, make_mlp, one_torch_thread, trained  # noqa: F401 (autouse fixture)

from torchshield.errors import FormatError, InputError
from torchshield.robust.attacks import PGD, build_attack
from torchshield.robust.defenses import (
    BitDepth,
    FeatureSqueezingDetector,
    MedianSmoothing,
    defensive_distillation,
    parse_squeezer,
)
from torchshield.robust.normalization import NormalizedModel


def test_bit_depth_known_values():
    x = torch.tensor([[0.0, 0.2, 0.49, 0.51, 1.0]])
    assert torch.allclose(BitDepth(1)(x, (0.0, 1.0)), torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]))
    assert torch.allclose(BitDepth(2)(x * 4 - 2, (-2.0, 2.0)), (torch.tensor([[0, 1, 1, 2, 3]]) / 3) * 4 - 2)


def test_median_matches_scipy():
    from scipy.ndimage import median_filter

    x = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = MedianSmoothing(3)(x, (0.0, 1.0)).numpy()
    ref = median_filter(x.numpy(), size=(1, 1, 3, 3), mode="mirror")
    np.testing.assert_allclose(ours, ref)
    with pytest.raises(InputError, match="images"):
        MedianSmoothing(3)(torch.rand(4, 5), (0.0, 1.0))


def test_detector_meets_fpr_and_flags_pgd():
    model = trained("mlp")
    _, _, xt, yt = digits()
    detector = FeatureSqueezingDetector(model, [parse_squeezer("bits:4")])
    detector.calibrate(xt[:250], fpr=0.05)
    held_out = float(detector.detect(xt[250:]).double().mean())
    assert held_out <= 0.05 + 0.03  # 250 held-out examples: sampling slack of ~2 standard errors
    assert detector.calibration["observed_fpr"] <= 0.05
    adv = PGD(model, eps=0.1, steps=10, seed=0)(xt[250:], yt[250:])
    fooled = model(adv).argmax(1) != yt[250:]
    assert float(detector.detect(adv[fooled]).double().mean()) > 0.5
    again = FeatureSqueezingDetector.from_dict(model, detector.to_dict())
    assert torch.equal(again.detect(adv), detector.detect(adv))


def test_detector_bad_input():
    model = trained("mlp")
    x = digits()[2]
    with pytest.raises(InputError, match="too few"):
        FeatureSqueezingDetector(model, [BitDepth(4)]).calibrate(x[:10], fpr=0.01)
    with pytest.raises(InputError, match="not calibrated"):
        FeatureSqueezingDetector(model, [BitDepth(4)]).detect(x)
    with pytest.raises(FormatError):
        FeatureSqueezingDetector.from_dict(model, {"kind": "other"})
    with pytest.raises(InputError, match="unknown squeezer"):
        parse_squeezer("blur:3")


def test_defensive_distillation_masks_gradients_but_keeps_accuracy():
    xtr, ytr, xt, yt = digits()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    student = defensive_distillation(make_mlp, loader, temperature=20.0, epochs=10, lr=2e-2)
    standard = trained("mlp")
    assert accuracy(student, xt, yt) > 0.85

    def zero_gradient_fraction(m):
        x = xt.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(m(x), yt, reduction="sum"), x)
        return float((g.flatten(1).abs().amax(1) == 0).double().mean())

    # Gradient masking: the softmax saturates at T = 1, so many inputs have exactly zero gradient
    # and FGSM fails more often; CW (margin loss on logits) still breaks the student.
    assert zero_gradient_fraction(student) > 0.1 > zero_gradient_fraction(standard)
    fgsm = {m: accuracy(m, build_attack("fgsm", m, eps=0.1)(xt, yt), yt) for m in (student, standard)}
    assert fgsm[student] > fgsm[standard] + 0.1
    cw = build_attack("cw-l2", student, eps=1.5, steps=30, lr=0.1, search_steps=2)(xt[:200], yt[:200])
    assert accuracy(student, cw, yt[:200]) < fgsm[student] - 0.3


def test_normalized_model_keeps_raw_units():
    torch.manual_seed(0)
    inner = make_mlp()
    mean, std = [0.3], [0.2]
    wrapped = NormalizedModel(inner, mean, std).eval()
    x, y = digits()[2][:32], digits()[3][:32]
    assert torch.allclose(wrapped(x), inner((x - 0.3) / 0.2))
    adv = PGD(wrapped, eps=0.05, steps=3, seed=0)(x, y)
    assert float((adv.double() - x.double()).abs().max()) <= 0.05 and float(adv.min()) >= 0
    with pytest.raises(InputError, match="std > 0"):
        NormalizedModel(inner, [0.0], [0.0])
