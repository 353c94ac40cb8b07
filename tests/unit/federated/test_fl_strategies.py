"""Strategy wrappers against fake client results: shape guard and client-level DP noise."""

from __future__ import annotations

import numpy as np
import pytest

from torchshield.federated.simulate import prepare_flower_env

prepare_flower_env()  # before flwr is imported: keeps Flower's state out of $HOME

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402

from torchshield.errors import InputError  # noqa: E402
from torchshield.federated.strategies import ClientLevelDP, RoundRecorder, ShapeGuard  # noqa: E402

SHAPES = [(4, 3), (4,)]


def _res(arrays: list[np.ndarray], n: int = 10, pid: int = 0) -> tuple[None, FitRes]:
    return None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {"partition_id": pid, "loss": 1.0})


def _ok(value: float, n: int = 10, pid: int = 0) -> tuple[None, FitRes]:
    return _res([np.full(s, value, dtype=np.float32) for s in SHAPES], n, pid)


def test_shape_guard_rejects_and_names_the_client() -> None:
    rec = RoundRecorder()
    guard = ShapeGuard(FedAvg(), SHAPES, rec)
    bad = _res([np.zeros((3, 4), np.float32), np.zeros(4, np.float32)], pid=2)
    params, _ = guard.aggregate_fit(1, [_ok(1.0, pid=0), bad, _ok(3.0, pid=1)], [])
    agg = parameters_to_ndarrays(params)
    assert np.allclose(agg[0], 2.0)  # only the two good clients were averaged
    assert rec.rejected == [{"round": 1, "partition_id": 2, "reason": "array 0 has shape (3, 4), the model "
                                                                      "expects (4, 3)"}]
    with pytest.raises(InputError, match="every client update had the wrong shapes"):
        guard.aggregate_fit(2, [_res([np.zeros(3, np.float32)], pid=5)], [])


def test_client_level_dp_uniform_weights_and_noise_scale() -> None:
    z, clip = 2.0, 0.5
    dp = ClientLevelDP(FedAvg(), noise_multiplier=z, clipping_norm=clip, num_sampled_clients=3,
                       rng=0)
    big = [_res([np.zeros((200, 50), np.float32)], n=1000, pid=0), _res([np.ones((200, 50), np.float32)], n=1, pid=1)]
    params, _ = dp.aggregate_fit(1, big, [ConnectionError("client 2 dropped")])
    agg = parameters_to_ndarrays(params)[0]
    # uniform weights: mean of 0 and 1 is 0.5, whatever the claimed sizes (FedAvg alone gives ~0.001)
    assert abs(agg.mean() - 0.5) < 0.01
    # survivors m = 2: noise std z*C/m = 0.5
    assert agg.std() == pytest.approx(z * clip / 2, rel=0.05)
    assert dp.noise_stds == [pytest.approx(0.5)]


def test_client_level_dp_noise_is_unpredictable_by_default() -> None:
    draws = []
    for _ in range(2):
        dp = ClientLevelDP(FedAvg(), noise_multiplier=1.0, clipping_norm=1.0, num_sampled_clients=1)
        params, _ = dp.aggregate_fit(1, [_ok(0.0)], [])
        draws.append(parameters_to_ndarrays(params)[0])
    assert not np.allclose(draws[0], draws[1])


@pytest.mark.parametrize(("name", "cls"), [("fedavg", "FedAvg"), ("fedprox", "FedProx"), ("fedadam", "FedAdam")])
def test_build_strategy_wraps_the_configured_flower_strategy(name: str, cls: str) -> None:
    from torchshield.federated.config import parse_config
    from torchshield.federated.strategies import build_strategy

    init = [np.zeros(s, np.float32) for s in SHAPES]
    cfg = parse_config({"clients": 4, "fraction_fit": 0.5, "strategy": name,
                        "privacy": {"clip": 1.0, "noise_multiplier": 1.0}})
    s = build_strategy(cfg, initial=init, evaluate_fn=lambda *a: None, recorder=RoundRecorder(),
                       noise_multiplier=1.0)
    assert isinstance(s, ShapeGuard) and isinstance(s.inner, ClientLevelDP)
    assert type(s.inner.strategy).__name__ == cls and s.inner.num_sampled_clients == 2
    plain = build_strategy(parse_config({"clients": 4, "strategy": name}), initial=init,
                           evaluate_fn=lambda *a: None, recorder=RoundRecorder(), noise_multiplier=None)
    assert type(plain.inner).__name__ == cls


def test_inner_strategy_sees_only_the_noisy_mean() -> None:
    seen: list[list[np.ndarray]] = []

    class Recording(FedAvg):
        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            seen.extend(parameters_to_ndarrays(r.parameters) for _, r in results)
            return super().aggregate_fit(server_round, results, failures)

    dp = ClientLevelDP(Recording(), noise_multiplier=1.0, clipping_norm=1.0, num_sampled_clients=2,
                       rng=1)
    dp.aggregate_fit(1, [_ok(0.0, pid=0), _ok(2.0, pid=1)], [])
    assert len(seen) == 2 and all(np.array_equal(a, b) for a, b in zip(seen[0], seen[1], strict=True))
    assert not np.allclose(seen[0][0], 1.0) and abs(seen[0][0].mean() - 1.0) < 1.5  # noisy mean, never a raw update


def test_secure_client_manager_samples_k_distinct_clients_uniformly_with_the_os_csprng(monkeypatch) -> None:
    import random
    from collections import Counter

    from torchshield.federated.strategies import SecureClientManager

    class Proxy:
        def __init__(self, cid: str) -> None:
            self.cid = cid

    manager = SecureClientManager(population=10)
    for i in range(10):
        manager.register(Proxy(str(i)))

    def no_mersenne(*a, **k):
        raise AssertionError("random.sample (Mersenne Twister) must not pick the clients")

    monkeypatch.setattr(random, "sample", no_mersenne)
    counts: Counter[str] = Counter()
    for _ in range(2000):
        picked = [p.cid for p in manager.sample(3)]
        assert len(set(picked)) == 3
        counts.update(picked)
    # each client expected 600 times (sd ~20.5); 6 sd bounds: a correct sampler fails with p < 1e-8
    assert all(abs(c - 600) < 125 for c in counts.values()) and len(counts) == 10


def test_private_rounds_do_not_say_who_took_part_or_their_losses() -> None:
    rec = RoundRecorder(private=True)
    rec.fit_metrics(1, [(1, {"partition_id": 4}), (1, {"partition_id": 7})])
    rec.evaluated(1, [np.zeros(2)], 0.5, 0.9)
    row = rec.rounds[0]
    assert "clients" not in row and row["clients_aggregated"] == 2
    assert "partition_id" not in str(row) and "loss" not in {k for k in row if k != "test_loss"}
    plain = RoundRecorder()
    plain.fit_metrics(1, [(5, {"partition_id": 4, "loss": 0.3})])
    plain.evaluated(1, [np.zeros(2)], 0.5, 0.9)
    assert plain.rounds[0]["clients"][0]["loss"] == 0.3
