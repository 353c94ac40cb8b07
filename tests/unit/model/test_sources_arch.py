"""Architecture name + state dict, ``module:factory`` and zoo sources; recorded DP fixes;
training state kept or dropped (and said so); NumPy scalars judged as the scanner judges them."""

from __future__ import annotations

import byom_models as bm
import numpy as np
import pytest
import torch
from torch import nn

from torchshield.errors import FormatError, InputError
from torchshield.model.bundle import inspect, load, save
from torchshield.model.loading import load_model, open_model, protect_model
from torchshield.model.sources import apply_fixes, register_architecture, unregister_architecture

X = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def resnet_registered():
    register_architecture("resnet-mini", bm.resnet_mini)
    yield
    unregister_architecture("resnet-mini")


def _same_outputs(a: nn.Module, b: nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(X), b.eval()(X))


def test_registry_name_plus_state_dict_round_trip(tmp_path, resnet_registered, master_key):
    ref = bm.trained_resnet(num_classes=5)
    assert not torch.equal(ref.bn1.running_mean, torch.zeros_like(ref.bn1.running_mean))  # BN stats are real
    torch.save(ref.state_dict(), tmp_path / "resnet.pt")
    arch = {"kind": "registry", "name": "resnet-mini", "kwargs": {"num_classes": 5}}
    report = protect_model(tmp_path / "resnet.pt", tmp_path / "r.tsb", key=master_key, architecture=arch,
                           input_spec={"kind": "image", "shape": [3, 16, 16], "min": 0.0, "max": 1.0})
    assert report.architecture == "resnet-mini"
    model = load_model(tmp_path / "r.tsb", key=master_key)
    assert isinstance(model, bm.ResNetMini) and not model.training
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    assert _same_outputs(model, ref)
    assert inspect(tmp_path / "r.tsb").manifest["preprocessing"]["input"]["shape"] == [3, 16, 16]


def test_wrong_architecture_options_are_refused_naming_the_mismatch(tmp_path, resnet_registered):
    torch.save(bm.trained_resnet(num_classes=5).state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(InputError, match="size mismatch for fc.weight"):
        protect_model(tmp_path / "resnet.pt", tmp_path / "r.tsb",
                      architecture={"kind": "registry", "name": "resnet-mini", "kwargs": {"num_classes": 7}})
    with pytest.raises(InputError, match="not registered|neither registered"):
        protect_model(tmp_path / "resnet.pt", tmp_path / "r.tsb",
                      architecture={"kind": "registry", "name": "no-such-net", "kwargs": {}})
    with pytest.raises(InputError, match="already registered"):
        register_architecture("resnet-mini", lambda **kw: nn.Linear(1, 1))


def test_factory_needs_proven_origin_or_explicit_allowance(tmp_path, signer):
    key_path, pub_path = signer
    ref = bm.trained_resnet()
    torch.save(ref.state_dict(), tmp_path / "resnet.pt")
    arch = {"kind": "factory", "target": "byom_models:resnet_mini", "kwargs": {"num_classes": 10}}
    protect_model(tmp_path / "resnet.pt", tmp_path / "r.tsb", architecture=arch, sign_with=key_path)
    with pytest.raises(InputError, match="origin is not proven"):
        load_model(tmp_path / "r.tsb")
    assert _same_outputs(load_model(tmp_path / "r.tsb", verify_with=pub_path), ref)
    assert _same_outputs(load_model(tmp_path / "r.tsb", allow_factories=["byom_models:*"]), ref)
    with pytest.raises(InputError, match="origin is not proven"):
        load_model(tmp_path / "r.tsb", allow_factories=["other_pkg:*"])


@pytest.fixture
def signer(tmp_path):
    from torchshield.crypto.signing import generate_signing_key

    generate_signing_key(tmp_path / "signer")
    return tmp_path / "signer.key", tmp_path / "signer.pub"


def test_zoo_bundle_from_train_layout_loads(tmp_path):
    from torchshield.model.sources.zoo import build_zoo_model

    torch.manual_seed(0)
    model = build_zoo_model({"type": "cnn", "channels": [4]}, in_shape=[1, 8, 8], num_classes=3)
    meta = {"model": {"spec": {"type": "cnn", "channels": [4]}, "input_shape": [1, 8, 8], "num_classes": 3},
            "data": {"input_bounds": [0.0, 1.0]}}
    save(model, tmp_path / "z.tsb", metadata=meta)
    loaded = open_model(tmp_path / "z.tsb")
    assert loaded.architecture == {"kind": "zoo", "spec": {"type": "cnn", "channels": [4]}, "in_shape": [1, 8, 8],
                                   "num_classes": 3}
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model.eval()(x))
    assert loaded.preprocessing["input"]["min"] == 0.0 and loaded.preprocessing["output"]["num_classes"] == 3


def test_tensors_only_bundle_says_what_is_missing(tmp_path):
    save({"w": torch.ones(2)}, tmp_path / "t.tsb")
    with pytest.raises(FormatError, match="does not record its architecture"):
        load_model(tmp_path / "t.tsb")


# --- recorded fixes: BatchNorm -> GroupNorm for DP ---------------------------------------------

def test_apply_fixes_matches_opacus(tmp_path):
    opacus = pytest.importorskip("opacus")
    torch.manual_seed(0)
    fixed_by_opacus = opacus.validators.ModuleValidator.fix(bm.ResNetMini())
    before = {n: type(m).__name__ for n, m in bm.ResNetMini().named_modules()}
    records = [f"{n}: {before[n]} -> {type(m).__name__}" for n, m in fixed_by_opacus.named_modules()
               if n in before and before[n] != type(m).__name__]
    assert records and all("BatchNorm2d -> GroupNorm" in r for r in records)
    ours = bm.ResNetMini()
    assert apply_fixes(ours, records) == records
    for (n1, m1), (n2, m2) in zip(ours.named_modules(), fixed_by_opacus.named_modules(), strict=True):
        assert n1 == n2 and type(m1) is type(m2)
        if isinstance(m1, nn.GroupNorm):
            assert (m1.num_groups, m1.num_channels, m1.affine) == (m2.num_groups, m2.num_channels, m2.affine)


def test_dp_fixed_resnet_loads_with_its_groupnorm(tmp_path):
    """The weights of a DP-trained ResNet belong to the GroupNorm model; load_model applies the
    manifest's record (privacy.model_fixes), so they fit and the outputs match."""
    register_architecture("resnet-mini-dp", bm.resnet_mini)
    try:
        torch.manual_seed(1)
        trained = bm.ResNetMini()
        records = [f"{n}: BatchNorm2d -> GroupNorm" for n, m in trained.named_modules()
                   if isinstance(m, nn.BatchNorm2d)]
        apply_fixes(trained, records)
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(torch.randn_like(p) * 0.1)  # not the initial values
        save(trained, tmp_path / "dp.tsb", architecture={"kind": "registry", "name": "resnet-mini-dp", "kwargs": {}},
             privacy={"epsilon": 3.0, "model_fixes": records})
        model = load_model(tmp_path / "dp.tsb")
        assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == len(records)
        assert _same_outputs(model, trained)
        with pytest.raises(FormatError, match="not 'layer: Before -> After'|names a layer"):
            apply_fixes(bm.ResNetMini(), ["nolayer: BatchNorm2d -> GroupNorm"])
        with pytest.raises(FormatError, match="can re-apply"):
            apply_fixes(bm.ResNetMini(), ["bn1: BatchNorm2d -> InstanceNorm2d"])
    finally:
        unregister_architecture("resnet-mini-dp")


def test_model_sources_do_not_import_train():
    """model/ defines the replacement and the zoo; rebuilding a model never imports train/
    (dependencies point down: train -> model)."""
    import pathlib

    root = pathlib.Path(__file__).parents[3] / "src" / "torchshield" / "model"
    files = [*(root / "sources").rglob("*.py"), *(root / n for n in ("loading.py", "bundle.py", "header.py",
                                                                      "checkpoint.py"))]
    offenders = [p.name for p in files for line in p.read_text().splitlines()
                 if line.strip().startswith(("from torchshield.train", "import torchshield.train"))]
    assert offenders == []


# --- training state -------------------------------------------------------------------------------

def _training_checkpoint(path, *, numpy_scalars=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
    doc = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 7}
    if numpy_scalars:
        doc["best_acc"] = np.float64(0.875)
        doc["seen"] = np.int64(1234)
    torch.save(doc, path)
    return model, opt


def test_training_state_dropped_is_counted_and_named(tmp_path):
    _, opt = _training_checkpoint(tmp_path / "ckpt.pt")
    n = sum(isinstance(v, torch.Tensor) for per_param in opt.state_dict()["state"].values() for v in per_param.values())
    assert n == 12  # Adam: step, exp_avg, exp_avg_sq for each of 4 parameters
    report = protect_model(tmp_path / "ckpt.pt", tmp_path / "c.tsb")
    assert report.dropped == {"optimizer": f"{n} tensors", "epoch": "7"} and not report.kept_training_state
    assert report.to_dict()["dropped_count"] == 2
    assert open_model.__doc__ and inspect(tmp_path / "c.tsb").manifest.get("training_state") is None


def test_training_state_kept_round_trips_into_the_optimizer(tmp_path):
    model, opt = _training_checkpoint(tmp_path / "ckpt.pt")
    protect_model(tmp_path / "ckpt.pt", tmp_path / "c.tsb", keep_training_state=True,
                  architecture=None)
    tensors = load(tmp_path / "c.tsb")
    assert set(tensors) == set(model.state_dict())  # the state stays out of the weights
    from torchshield.model.bundle import load_contents
    from torchshield.model.sources.state import unflatten_state

    state = unflatten_state(load_contents(tmp_path / "c.tsb").training_state)
    assert state["epoch"] == 7
    ref = opt.state_dict()
    assert state["optimizer"]["param_groups"] == ref["param_groups"]
    assert set(state["optimizer"]["state"]) == set(ref["state"]) == {0, 1, 2, 3}  # int keys come back
    # resuming from the bundle continues exactly like resuming from the original checkpoint
    twin = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    twin.load_state_dict({k: v.clone() for k, v in tensors.items()})
    opt2 = torch.optim.Adam(twin.parameters(), lr=0.01)
    opt2.load_state_dict(state["optimizer"])
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(9))
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))


def test_numpy_scalars_are_read_as_the_scanner_judges_them(tmp_path):
    """Scanner says safe -> protect reads it (no "scan it" loop); the values survive as numbers."""
    from torchshield.model.scan import scan

    _training_checkpoint(tmp_path / "np.pt", numpy_scalars=True)
    assert scan(tmp_path / "np.pt").safe
    report = protect_model(tmp_path / "np.pt", tmp_path / "n.tsb")
    assert report.dropped["best_acc"] == "0.875" and report.dropped["seen"] == "1234"
    protect_model(tmp_path / "np.pt", tmp_path / "k.tsb", keep_training_state=True)
    values = inspect(tmp_path / "k.tsb").manifest["training_state"]
    assert values["best_acc"] == 0.875 and values["seen"] == 1234


def test_objects_torch_refuses_are_named_without_scan_advice(tmp_path):
    """The scanner finds datetime harmless but torch's restricted unpickler refuses it: the
    error names the object and how to re-save, and does not send the user back to the scanner."""
    import datetime

    from torchshield.model.scan import scan

    torch.save({"state_dict": {"w": torch.ones(2)}, "saved_at": datetime.datetime(2024, 1, 2)}, tmp_path / "c.pt")
    assert scan(tmp_path / "c.pt").safe
    with pytest.raises(FormatError) as err:
        protect_model(tmp_path / "c.pt", tmp_path / "c.tsb")
    assert "datetime.datetime" in str(err.value) and "scan" not in str(err.value)
    assert not (tmp_path / "c.tsb").exists()


@pytest.mark.parametrize("spec,shape", [({"type": "mlp", "hidden": [8, 4]}, [6]),
                                        ({"type": "cnn", "channels": [4, 6], "pool": True}, [1, 12, 12])])
def test_zoo_rebuilds_what_training_builds(spec, shape):
    """The zoo under model/ (used by load_model) and train's zoo build the same module for a spec,
    so a bundle written by `torchshield train` loads with its own weights."""
    from torchshield.model.sources.zoo import build_zoo_model
    from torchshield.nn.zoo import build_model

    ours, theirs = build_zoo_model(spec, in_shape=shape, num_classes=3), build_model(spec, in_shape=shape,
                                                                                     num_classes=3)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in theirs.state_dict().items()]
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
