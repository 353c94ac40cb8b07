"""DP-SGD data-parallel over torch.distributed (gloo on CPU, two processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    rank, init = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    from torchshield.train import build_model, evaluate, fit, load_dataset
    from torchshield.train.dp import PrivacyConfig, make_private
    data = load_dataset("sklearn:digits")
    torch.manual_seed(100 + rank)  # different local inits: make_private must sync them
    model = build_model({"type": "mlp", "hidden": [64]}, in_shape=data.input_shape, num_classes=10)
    shard = torch.utils.data.TensorDataset(data.train.x[rank::2], data.train.y[rank::2])
    engine = make_private(model, config=PrivacyConfig(epsilon=3.0, delta=1e-5, seed=7,
                                                      insecure_seed_for_tests=True),
                          dataset_size=len(data.train), batch_size=128, epochs=6)
    opt = torch.optim.SGD(engine.model.parameters(), lr=0.5, momentum=0.9)
    fit(engine.model, torch.utils.data.DataLoader(shard, batch_size=64), epochs=6, optimizer=opt,
        privacy=engine, progress=False)
    flat = torch.cat([p.detach().flatten() for p in engine.model.parameters()])
    print(json.dumps({"rank": rank, "checksum": float(flat.double().sum()), "norm": float(flat.norm()),
                      "record": engine.record(),
                      "accuracy": evaluate(engine.model, data.test.loader(512))["accuracy"]}))
    dist.destroy_process_group()
""")


@pytest.mark.timeout(300)
def test_two_rank_dp_training_stays_in_sync_and_learns(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(rank), init], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = [p.communicate(timeout=280) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    r0, r1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert r0["checksum"] == r1["checksum"] and r0["norm"] == r1["norm"]  # identical replicas
    rec = r0["record"]
    assert rec == r1["record"] and rec["epsilon"] <= 3.0 and rec["sample_rate"] == pytest.approx(128 / 1438)
    assert r0["accuracy"] >= 0.7
