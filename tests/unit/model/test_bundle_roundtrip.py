import pytest
import torch

import torchshield
from torchshield.model.bundle import verify

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64]


def _state():
    g = torch.Generator().manual_seed(0)
    sd = {}
    for dt in DTYPES:
        base = torch.randn(5, 7, generator=g) * 50
        if dt == torch.bool:
            t = base > 0
        elif dt.is_complex:
            t = torch.complex(base, -base).to(dt)
        else:
            t = base.to(dt)
        sd[f"t_{str(dt).split('.')[-1]}"] = t
    sd["empty"] = torch.empty(0, 4)
    sd["scalar"] = torch.tensor(3.5)
    sd["scalar_int"] = torch.tensor(7, dtype=torch.int64)
    sd["noncontig_T"] = torch.arange(24, dtype=torch.float32).reshape(4, 6).t()
    sd["noncontig_slice"] = torch.arange(100, dtype=torch.int32)[::3]
    sd["odd_size"] = torch.arange(3, dtype=torch.int8)  # forces alignment padding after it
    return sd


@pytest.mark.parametrize("encrypt", [False, True])
@pytest.mark.parametrize("sign", [False, True])
def test_bit_exact_round_trip(tmp_path, master_key, signer, encrypt, sign):
    sd = _state()
    path = tmp_path / "m.tsb"
    torchshield.save(sd, path, key=master_key if encrypt else None, sign_with=signer[0] if sign else None,
                     metadata={"task": "digits"}, privacy={"epsilon": 3.0}, chunk_size=1 << 12)
    out = torchshield.load(path, key=master_key if encrypt else None, verify_with=signer[1] if sign else None)
    assert list(out) == list(sd)
    for name, t in sd.items():
        got = out[name]
        assert got.dtype == t.dtype and got.shape == t.shape, name
        assert torch.equal(got.reshape(-1).view(torch.uint8) if got.numel() else got,
                           t.contiguous().reshape(-1).view(torch.uint8) if t.numel() else t), name
    info = torchshield.inspect(path)
    assert info.encrypted is encrypt and info.signed is sign
    assert info.manifest["privacy"] == {"epsilon": 3.0} and info.manifest["metadata"] == {"task": "digits"}
    assert verify(path, key=master_key if encrypt else None).ok


def test_module_and_load_state_dict(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    torchshield.save(model, tmp_path / "m.tsb")
    clone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    clone.load_state_dict(torchshield.load(tmp_path / "m.tsb"))
    x = torch.randn(3, 4)
    assert torch.equal(model(x), clone(x))


def test_plain_load_is_memory_mapped_copy_on_write(tmp_path):
    sd = {"w": torch.ones(1000)}
    torchshield.save(sd, tmp_path / "m.tsb")
    before = (tmp_path / "m.tsb").read_bytes()
    out = torchshield.load(tmp_path / "m.tsb")
    out["w"].mul_(3)  # writes go to private pages, never to the file
    assert (tmp_path / "m.tsb").read_bytes() == before
    assert torch.equal(torchshield.load(tmp_path / "m.tsb")["w"], torch.ones(1000))


def test_encrypted_bundle_hides_tensor_bytes(tmp_path, master_key):
    marker = torch.full((4096,), 1234.5678, dtype=torch.float64)
    torchshield.save({"secret": marker}, tmp_path / "m.tsb", key=master_key)
    raw = (tmp_path / "m.tsb").read_bytes()
    assert marker.numpy().tobytes()[:64] not in raw
    assert "digest" not in torchshield.inspect(tmp_path / "m.tsb").manifest["tensors"]["secret"]


def test_encrypted_load_writes_no_plaintext_file(tmp_path, master_key):
    torchshield.save({"w": torch.randn(64, 64)}, tmp_path / "m.tsb", key=master_key)
    before = set(tmp_path.iterdir())
    torchshield.load(tmp_path / "m.tsb", key=master_key)
    assert set(tmp_path.iterdir()) == before


def test_bad_objects_refused(tmp_path):
    from torchshield.errors import InputError

    with pytest.raises(InputError, match="not a tensor"):
        torchshield.save({"a": [1, 2]}, tmp_path / "m.tsb")
    with pytest.raises(InputError, match="JSON"):
        torchshield.save({"a": torch.ones(1)}, tmp_path / "m.tsb", metadata={"x": object()})
    assert not (tmp_path / "m.tsb").exists()
