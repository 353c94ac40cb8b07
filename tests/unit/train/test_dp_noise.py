"""DP noise: from a CSPRNG (the AES-256-CTR keystream, checked against cryptography's cipher), a defended
sampler in secure_mode, a seed only with an explicit, recorded opt-in, no silent eval() layers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from torch import nn

import torchshield
from torchshield.cli.app import run
from torchshield.errors import InputError
from torchshield.train import build_model, fit
from torchshield.train import noise as noise_mod
from torchshield.train.dp import PrivacyConfig, make_private
from torchshield.train.noise import SecureNoise, SeededNoise, discrete_laplace


class _FixedUrandom:
    """os.urandom made repeatable, so the secure stream can be checked against a reference."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.rng = np.random.default_rng(1234)
        self.drawn: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.drawn.append(self.rng.bytes(n))
        return self.drawn[-1]


@pytest.fixture
def fixed_urandom(monkeypatch):
    fake = _FixedUrandom()
    monkeypatch.setattr(noise_mod.os, "urandom", fake)
    return fake


def test_uniform_stream_is_the_aes_ctr_keystream_of_an_os_urandom_key(fixed_urandom):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    source = SecureNoise()
    key, nonce = fixed_urandom.drawn
    u = source.uniform(1000)
    stream = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor().update(bytes(8000))
    words = np.frombuffer(stream, dtype=np.uint64) >> np.uint64(11)
    assert np.array_equal(u, (words.astype(np.float64) + 1.0) * 2.0**-53)
    assert u.min() > 0 and u.max() <= 1


def test_secure_gaussian_is_normal_and_secure_mode_sums_four_draws(fixed_urandom):
    plain = SecureNoise().normal((20000,), 2.0, dtype=torch.float64).numpy()
    # Kolmogorov-Smirnov against N(0, 4): with the stream fixed by the fixture this is one fixed
    # sample; a correct sampler fails it with probability 1e-4 over the choice of that fixture seed
    assert stats.kstest(plain / 2.0, "norm").pvalue > 1e-4
    # secure_mode: (z1 + z2 + z3 + z4) / 2 from the same stream (Holohan & Braghin, n = 2)
    fixed_urandom.reset()
    secure = SecureNoise(secure_mode=True).normal((500,), 1.0, dtype=torch.float64).numpy()
    fixed_urandom.reset()
    four = SecureNoise().normal((2000,), 1.0, dtype=torch.float64).numpy().reshape(4, 500)
    assert np.allclose(secure, four.sum(0) / 2.0, rtol=0, atol=1e-12)
    big = SecureNoise(secure_mode=True).normal((20000,), 1.0, dtype=torch.float64).numpy()
    assert stats.kstest(big, "norm").pvalue > 1e-4


def _chunks(n: int) -> list[int]:
    """The chunk sizes the sampler draws: ``_CHUNK`` each, then the rest."""
    return [min(noise_mod._CHUNK, n - start) for start in range(0, n, noise_mod._CHUNK)]


def test_box_muller_matches_an_independent_numpy_reference():
    """The torch-vectorised float64 transform gives the textbook Box-Muller pairs of the stream's
    53-bit uniforms (numpy's log/sqrt/cos/sin as the reference), odd counts and chunk edges included."""
    n = noise_mod._CHUNK + 3
    got = SeededNoise(7).normal((n,), 1.0, dtype=torch.float64).numpy()
    rng = np.random.default_rng(7)  # SeededNoise's bytes are this generator's bytes
    ref = []
    for size in _chunks(n):
        pairs = (size + 1) // 2
        words = np.frombuffer(rng.bytes(16 * pairs), dtype=np.uint64)
        u = ((words >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
        r, theta = np.sqrt(-2.0 * np.log(u[:pairs])), 2.0 * np.pi * u[pairs:]
        ref.append(np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:size])
    assert np.allclose(got, np.concatenate(ref), rtol=1e-13, atol=1e-13)


def test_add_normal_in_place_draws_what_normal_draws():
    """The DP step adds noise chunk by chunk in place: the same values as one normal() call over
    the same stream (float32 rounding of the sum aside), across chunk edges; secure_mode too is
    N(0, std^2)."""
    n = noise_mod._CHUNK + 5
    base = torch.linspace(-1, 1, n)
    got = SeededNoise(3).add_normal_(base.clone(), 0.5)
    want = base + SeededNoise(3).normal((n,), 0.5)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    shaped = SeededNoise(3).add_normal_(torch.zeros(3, 4).t(), 1.0)  # non-contiguous: via normal()
    torch.testing.assert_close(shaped, SeededNoise(3).normal((4, 3), 1.0))
    secure = SeededNoise(4, secure_mode=True).add_normal_(torch.zeros(20000, dtype=torch.float64), 2.0)
    assert stats.kstest(secure.numpy() / 2.0, "norm").pvalue > 1e-4  # fixed seed: one fixed sample


def test_float32_draws_match_a_numpy_reference_of_the_same_bits():
    """The DP step's float32 path: the radius from 63 random bits (an odd integer rounded to
    float32, times 2^-63), the angle from a 23-bit uniform, each built from its own words of the
    stream. A float64 numpy reference of the same bits agrees to float32 rounding, tails included,
    odd counts and chunk edges too; and the draws are N(0, std^2)."""
    n, std = noise_mod._CHUNK + 7, 3.0
    got = SeededNoise(11).normal((n,), std, dtype=torch.float32)
    assert got.dtype == torch.float32
    rng = np.random.default_rng(11)
    ref = []
    for size in _chunks(n):
        pairs = (size + 1) // 2
        radius_words = np.frombuffer(rng.bytes(8 * pairs), dtype=np.uint64)
        angle_words = np.frombuffer(rng.bytes(4 * pairs), dtype=np.uint32)
        k = (radius_words & np.uint64(2**63 - 1)) | np.uint64(1)
        # numpy rounds to nearest as torch does; u is capped below 1 (the largest float32 below 1)
        u = np.minimum(k.astype(np.float32).astype(np.float64) * 2.0**-63, 1.0 - 2.0**-24)
        # the low 23 bits of each angle word, as the mantissa of a float in [1, 2)
        # the midpoints of a 2^23-point grid on [-pi, pi)
        theta = 2.0 * np.pi * ((angle_words & np.uint32(2**23 - 1)).astype(np.float64) * 2.0**-23 - 0.5 + 2.0**-24)
        r = std * np.sqrt(-2.0 * np.log(u))
        ref.append(np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:size])
    want = np.concatenate(ref)
    # float32 ln (1 ulp of |ln u| <= 44) and angle (|err| <= ~3e-7 rad) times a radius up to
    # ~9.3 std, plus float32 rounding
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=2e-5)
    assert np.abs(want).max() > 4 * std  # a sample this large exists, and it agrees too
    # one fixed sample (the seed is fixed): a correct sampler fails this with probability 1e-4
    assert stats.kstest(got.double().numpy() / std, "norm").pvalue > 1e-4


def test_float32_radius_reaches_the_far_tail_and_never_overflows():
    """The extreme words: the smallest (k = 1, u = 2^-63) gives the largest radius, sqrt(126 ln 2)
    = 9.35 sigma, finite; the largest would round to u = 1, a radius of 0 (no noise at all, the
    clipped sum released exactly): it is capped at the smallest float32 radius, 3.45e-4 sigma. And
    no angle makes cos or sin exactly 0."""
    class _Words(SeededNoise):
        def __init__(self, word: int) -> None:
            super().__init__(0)
            self.word = word

        def _fill(self, buf):
            if len(buf) % 8 == 0 and len(buf) >= 16:  # the radius words
                buf[:] = np.full(len(buf) // 8, self.word, dtype=np.uint64).tobytes()
            else:  # the angle words: mantissa 1/2 of [1, 2), which was theta = 0 (cos 1, sin exactly 0)
                buf[:] = np.full(len(buf) // 4, 0x3FC00000, dtype=np.uint32).tobytes()

    far = _Words(0).normal((4,), 1.0)  # k = 0 | 1 = 1
    assert torch.isfinite(far).all()
    assert (far != 0).all()  # the angle grid's midpoints: half a step from 0, where sin was exactly 0
    assert far[0].item() == pytest.approx(math.sqrt(126 * math.log(2)), rel=1e-6)
    smallest = _Words(2**64 - 1).normal((4,), 1.0)[0].item()
    assert smallest > 0 and smallest == pytest.approx(math.sqrt(-2 * math.log1p(-2.0**-24)), rel=1e-3)


def test_discrete_laplace_has_the_geometric_law():
    source = SeededNoise(5)
    eps = 0.7
    draws = np.array([discrete_laplace(100, eps, source) for _ in range(20000)]) - 100
    q = math.exp(-eps)
    # P(0) = (1-q)/(1+q); 20000 draws: standard error 0.0035, bound at 5 sigma
    assert abs(np.mean(draws == 0) - (1 - q) / (1 + q)) < 0.018
    assert abs(draws.mean()) < 0.1 and draws.dtype.kind == "i"


def test_seed_is_refused_without_the_explicit_insecure_opt_in():
    with pytest.raises(InputError, match="privacy.seed"):
        PrivacyConfig(epsilon=3.0, seed=7)
    with pytest.raises(InputError, match="true or false"):
        PrivacyConfig(epsilon=3.0, seed=7, insecure_seed_for_tests="yes")
    PrivacyConfig(epsilon=3.0, seed=7, insecure_seed_for_tests=True)


def _engine(**kw):
    torch.manual_seed(0)
    model = build_model({"type": "mlp", "hidden": [8]}, in_features=10, num_classes=3)
    return make_private(model, config=PrivacyConfig(epsilon=50.0, delta=1e-3, noise_multiplier=1.0, **kw),
                        dataset_size=60, batch_size=30, epochs=1)


def test_default_noise_is_the_csprng_and_the_record_says_so():
    record = _engine().record()
    assert "AES-256-CTR" in record["noise"]["generator"] and record["noise"]["secure_mode"] is False
    assert "insecure_seed_for_tests" not in record
    assert _engine(secure_mode=True).record()["noise"]["secure_mode"] is True
    seeded = _engine(seed=3, insecure_seed_for_tests=True).record()
    assert seeded["insecure_seed_for_tests"] is True and "does not hold" in seeded["warning"]


def test_noise_has_the_recorded_std_and_differs_between_runs(fixed_urandom):
    sums = []
    for _ in range(2):
        engine = _engine()
        p = next(engine.model.parameters())
        p.grad = None
        engine._sums.clear()
        before = p.detach().clone()
        engine.step(torch.optim.SGD([q for q in engine.model.parameters()], lr=1.0))
        sums.append((before - p.detach()) * engine.expected_batch_size)  # = noise of std sigma * C
    both = torch.cat([s.flatten() for s in sums])
    assert stats.kstest(both.numpy(), "norm").pvalue > 1e-4  # sigma = 1, C = 1
    assert not torch.allclose(sums[0], sums[1])


class _FrozenBatchNormStyle(nn.Module):
    """A fine-tuning idiom: train() keeps one trainable layer in eval()."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(10, 8), nn.Linear(8, 3)

    def train(self, mode=True):
        super().train(mode)
        self.a.eval()
        return self

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_a_trainable_layer_left_in_eval_is_refused_not_silently_noised():
    model = _FrozenBatchNormStyle()
    engine = make_private(model, config=PrivacyConfig(epsilon=50.0, delta=1e-3, noise_multiplier=1.0),
                          dataset_size=60, batch_size=30, epochs=1)
    x, y = torch.rand(60, 10), torch.randint(0, 3, (60,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=30)
    with pytest.raises(InputError, match=r"layer a \(Linear\).*eval\(\)"):
        fit(engine.model, loader, epochs=1, optimizer=torch.optim.SGD(engine.model.parameters(), 0.1),
            privacy=engine, progress=False)


BASE = {"model": {"type": "mlp", "hidden": [16]}, "data": "sklearn:digits",
        "optimizer": {"name": "sgd", "lr": 0.5}, "epochs": 1, "batch_size": 256, "seed": 0,
        "output": {"bundle": "out.tsb"}}


def test_cli_refuses_a_seed_and_records_the_opt_in_where_inspect_shows_it(tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "privacy": {"epsilon": 3, "delta": 1e-5, "seed": 7}}))
    assert run(["train", str(cfg)]) == 2
    assert "privacy.seed" in capsys.readouterr().err
    assert not (tmp_path / "out.tsb").exists()
    cfg.write_text(yaml.safe_dump({**BASE, "privacy": {"epsilon": 3, "delta": 1e-5, "seed": 7,
                                                       "insecure_seed_for_tests": True}}))
    assert run(["train", str(cfg), "--json"]) == 0
    capsys.readouterr()
    assert torchshield.inspect(tmp_path / "out.tsb").manifest["privacy"]["insecure_seed_for_tests"] is True
    assert run(["model", "inspect", str(tmp_path / "out.tsb")]) == 0
    assert "insecure_seed_for_tests" in capsys.readouterr().out
    assert run(["model", "inspect", str(tmp_path / "out.tsb"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["privacy"]["insecure_seed_for_tests"] is True


def test_the_report_fails_a_record_whose_noise_was_seeded():
    from torchshield.assess.checks.privacy import _claimed
    from torchshield.assess.findings import FAIL, Section

    record = _engine(seed=3, insecure_seed_for_tests=True).record()
    s = Section("privacy", "Privacy")
    _claimed(s, record)
    assert s.findings[0].verdict == FAIL and "insecure_seed_for_tests" in s.findings[0].reason


def test_the_float32_path_keeps_every_step_on_the_gradients_device():
    """On a GPU only the random bits come from the CPU; every later op runs on the gradient's
    device. The meta device stands in for one here (no values, but any op that mixes the CPU
    scratch buffers with device tensors fails), odd sizes and chunk edges included."""
    out = torch.zeros(noise_mod._CHUNK + 3, device="meta")
    assert SecureNoise().add_normal_(out, 1.0) is out
    assert SeededNoise(1).add_normal_(torch.zeros(7, device="meta"), 2.0).device.type == "meta"
