"""A model opened to be trained or changed (``open_model(writable=True)``) owns its tensors.

The loaded tensors are views of the bundle's one read-only buffer and share one autograd version
counter; with only ``p.data`` replaced, a BatchNorm's running-statistics update during a training
forward bumped every weight's counter and backward failed (``watermark embed`` on a user's ResNet
exited 70)."""

from __future__ import annotations

import byom_models as bm
import pytest
import torch

from torchshield.model.loading import open_model, protect_model

FACTORY = {"kind": "factory", "target": "byom_models:resnet_mini", "kwargs": {"num_classes": 4}}
SPEC = {"kind": "image", "shape": [3, 16, 16], "dtype": "float32", "min": 0.0, "max": 1.0}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("writable")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    protect_model(root / "resnet.pt", root / "resnet.tsb", architecture=FACTORY, input_spec=SPEC)
    return root / "resnet.tsb"


def _train_steps(model, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x, y = torch.rand(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss = loss + torch.nn.functional.cross_entropy(model(x.flip(3)), y)  # a second forward, as a regulariser's
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_a_writable_batchnorm_model_trains_and_the_bundle_is_untouched(bundle):
    import torchshield

    before = {k: v.clone() for k, v in torchshield.load(bundle).items()}
    loaded = open_model(bundle, allow_factories=["byom_models:*"], writable=True)
    _train_steps(loaded.module)
    after = torchshield.load(bundle)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the file's tensors never moved
    state = loaded.module.state_dict()
    assert not torch.equal(state["conv1.weight"], before["conv1.weight"])  # the module's did
    assert not torch.equal(state["bn1.running_mean"], before["bn1.running_mean"])


def test_read_only_views_are_what_the_old_p_data_copy_left_behind(bundle):
    """The failure this guards against, reproduced: replacing only .data keeps the shared counter."""
    module = open_model(bundle, allow_factories=["byom_models:*"]).module
    for p in module.parameters():
        p.data = p.data.clone()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _train_steps(module)


def test_ties_stay_ties(tmp_path):
    """A tied weight (GPT-2's lm_head = wte) is one Parameter after own_memory, as before it."""
    pytest.importorskip("transformers")
    protect_model(bm.tiny_gpt2(tmp_path / "gpt2"), tmp_path / "g.tsb")
    loaded = open_model(tmp_path / "g.tsb", writable=True)
    m = loaded.module
    assert m.lm_head.weight is m.transformer.wte.weight
    with torch.no_grad():
        m.transformer.wte.weight[0, 0] += 1.0
    assert torch.equal(m.lm_head.weight, m.transformer.wte.weight)


@pytest.fixture(scope="module")
def pixels(tmp_path_factory):
    """A user's ResNet (BatchNorm statistics not the defaults) on 3 x 8 x 8 images, and a CSV of its
    data as a user writes it: one row of raw pixels in [0, 1] per image, a 'label' column."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("pixels")
    torch.save(bm.trained_resnet(num_classes=4).state_dict(), root / "resnet.pt")
    protect_model(root / "resnet.pt", root / "resnet.tsb", architecture=FACTORY,
                  input_spec={**SPEC, "shape": [3, 8, 8]})
    x, y = load_digits(return_X_y=True)
    keep = y < 4
    rows = np.repeat((x[keep] / 16.0).reshape(-1, 1, 64), 3, axis=1).reshape(-1, 192)[:300]
    table = pd.DataFrame(rows, columns=[f"p{i}" for i in range(192)])
    table["label"] = y[keep][:300]
    table.to_csv(root / "pixels.csv", index=False)
    from torchshield.crypto.keys import write_key_file

    write_key_file(root / "owner.key")
    return root


def test_watermark_embed_on_a_users_batchnorm_resnet(pixels, tmp_path, capsys):
    """Before: exit 70 (the shared version counter) for a trigger mark, and exit 70 for a white-box
    mark (rows of pixels fed flat to the first convolution). Now the rows are shaped by the bundle's
    input spec, read raw (no standardisation), and the mark verifies in the bundle written."""
    from torchshield.cli.app import run

    common = ["--key-file", str(pixels / "owner.key"), "--allow-factory", "byom_models:*"]
    code = run(["model", "watermark", "embed", str(pixels / "resnet.tsb"), "--out", str(tmp_path / "m.tsb"),
                "--method", "trigger", "--data", str(pixels / "pixels.csv"), "--epochs", "6", "--strength", "4",
                "--max-accuracy-drop", "1", "--record", str(tmp_path / "mark.json"), "--json", *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    for path, expected in ((tmp_path / "m.tsb", 0), (pixels / "resnet.tsb", 1)):  # marked: present; source: absent
        assert run(["model", "watermark", "verify", str(path), "--record", str(tmp_path / "mark.json"),
                    *common]) == expected
        capsys.readouterr()
    code = run(["model", "watermark", "embed", str(pixels / "resnet.tsb"), "--out", str(tmp_path / "w.tsb"),
                "--method", "whitebox", "--data", str(pixels / "pixels.csv"), "--epochs", "1",
                "--max-accuracy-drop", "1", *common])
    err = capsys.readouterr().err
    assert code in (0, 1) and "internal error" not in err and "conv2d" not in err, err  # trained; took or not


def test_public_load_model_takes_writable(bundle):
    import torchshield

    model = torchshield.load_model(bundle, allow_factories=["byom_models:*"], writable=True)
    _train_steps(model)  # a user's fine-tune in Python, the documented way
