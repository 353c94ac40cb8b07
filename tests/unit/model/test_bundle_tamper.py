"""Every bad input from the foundation issue gets its own clear error and exit code."""

import base64
import json
import struct

import pytest
import torch

import torchshield
from torchshield.crypto.keys import generate_master_key
from torchshield.crypto.signing import generate_signing_key
from torchshield.errors import (
    FormatError,
    InputError,
    IntegrityError,
    KeyMaterialError,
    SignatureError,
    WrongKeyError,
)
from torchshield.model.bundle import rotate_key, verify


@pytest.fixture
def sd():
    g = torch.Generator().manual_seed(1)
    return {"a.weight": torch.randn(64, 64, generator=g), "a.bias": torch.randn(64, generator=g),
            "steps": torch.tensor(10)}


def _write(path, sd, **kw):
    torchshield.save(sd, path, chunk_size=1 << 12, **kw)
    return bytearray(path.read_bytes())


def _data_offset(blob):
    mlen = struct.unpack("<I", blob[12:16])[0]
    head = 16 + mlen + (69 if blob[9] & 1 else 0)
    return head + (-head % 64)


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_flipped_byte_anywhere_is_detected(tmp_path, sd, master_key, encrypted):
    good = _write(tmp_path / "g.tsb", sd, key=master_key if encrypted else None)
    step = max(1, len(good) // 97)
    keyslot = range(0, 0)
    if encrypted:
        mlen = struct.unpack("<I", good[12:16])[0]
        keyslot = range(16 + mlen, 16 + mlen + 69)
    for pos in range(0, len(good), step):
        bad = bytearray(good)
        bad[pos] ^= 0x10
        (tmp_path / "b.tsb").write_bytes(bad)
        with pytest.raises((IntegrityError, FormatError, WrongKeyError, SignatureError)):
            torchshield.load(tmp_path / "b.tsb", key=master_key if encrypted else None)
        assert pos < 16 or pos in keyslot or not verify(tmp_path / "b.tsb").ok, pos


def test_truncated_and_extended(tmp_path, sd):
    good = _write(tmp_path / "g.tsb", sd)
    for blob in (good[:-1], good[: len(good) // 2], good + b"\x00", good + good[-200:]):
        (tmp_path / "b.tsb").write_bytes(blob)
        with pytest.raises(IntegrityError, match="truncated|extended"):
            torchshield.load(tmp_path / "b.tsb")


def test_manifest_edited_by_hand(tmp_path, sd, master_key):
    for key in (None, master_key):
        good = _write(tmp_path / "g.tsb", sd, key=key)
        mlen = struct.unpack("<I", good[12:16])[0]
        manifest = json.loads(good[16:16 + mlen])
        manifest["metadata"]["owner"] = "mallory"  # same length is not needed: we rewrite the length
        new = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        bad = good[:12] + struct.pack("<I", len(new)) + new + good[16 + mlen:]
        (tmp_path / "b.tsb").write_bytes(bad)
        with pytest.raises(IntegrityError, match="manifest was edited|truncated|extended"):
            torchshield.load(tmp_path / "b.tsb", key=key)


def test_wrong_key_and_missing_key(tmp_path, sd, master_key):
    _write(tmp_path / "e.tsb", sd, key=master_key)
    with pytest.raises(WrongKeyError, match="key id"):
        torchshield.load(tmp_path / "e.tsb", key=generate_master_key())
    with pytest.raises(KeyMaterialError, match="encrypted and no key"):
        torchshield.load(tmp_path / "e.tsb")


def test_key_slot_from_another_bundle(tmp_path, sd, master_key):
    a = _write(tmp_path / "a.tsb", sd, key=master_key)
    b = _write(tmp_path / "b.tsb", sd, key=master_key)
    mlen_a = struct.unpack("<I", a[12:16])[0]
    mlen_b = struct.unpack("<I", b[12:16])[0]
    a[16 + mlen_a:16 + mlen_a + 69] = b[16 + mlen_b:16 + mlen_b + 69]
    (tmp_path / "x.tsb").write_bytes(a)
    with pytest.raises(IntegrityError, match="wrapped data key"):
        torchshield.load(tmp_path / "x.tsb", key=master_key)


def test_signature_from_another_signer(tmp_path, sd, signer):
    other_key, other_pub = generate_signing_key(tmp_path / "other")
    _write(tmp_path / "s.tsb", sd, sign_with=signer[0])
    torchshield.load(tmp_path / "s.tsb", verify_with=signer[1])
    with pytest.raises(SignatureError, match="signed by"):
        torchshield.load(tmp_path / "s.tsb", verify_with=other_pub)


def test_forged_signature_block(tmp_path, sd, signer):
    """An attacker re-signs edited data with their own key and swaps the embedded public key."""
    good = _write(tmp_path / "s.tsb", sd, sign_with=signer[0])
    attacker_key, attacker_pub = generate_signing_key(tmp_path / "attacker")
    _write(tmp_path / "forged.tsb", sd, sign_with=attacker_key)
    with pytest.raises(SignatureError):
        torchshield.load(tmp_path / "forged.tsb", verify_with=signer[1])
    sig_len = struct.unpack("<I", good[-12:-8])[0]
    block = json.loads(good[-76 - sig_len:-76])
    block["signature"] = base64.b64encode(b"\x00" * 64).decode()
    new = json.dumps(block).encode()
    bad = good[:-76 - sig_len] + new + good[-76:-12] + struct.pack("<I", len(new)) + good[-8:]
    (tmp_path / "b.tsb").write_bytes(bad)
    with pytest.raises(SignatureError, match="does not verify"):
        torchshield.load(tmp_path / "b.tsb", verify_with=signer[1])


def test_unsigned_bundle_when_signature_required(tmp_path, sd, signer):
    _write(tmp_path / "u.tsb", sd)
    with pytest.raises(SignatureError, match="not signed"):
        torchshield.load(tmp_path / "u.tsb", verify_with=signer[1])


def test_signed_encrypted_bundle_verifies_without_the_key(tmp_path, sd, master_key, signer):
    _write(tmp_path / "se.tsb", sd, key=master_key, sign_with=signer[0])
    report = verify(tmp_path / "se.tsb", pubkey=signer[1])
    assert report.ok and report.signer and not report.decrypted


@pytest.mark.parametrize("content,exc", [(b"", FormatError), (b"PK\x03\x04 not a bundle", FormatError),
                                         (b"\x89TSB\r\n\x1a\n\x07" + b"\x00" * 64, FormatError)])
def test_non_bundles(tmp_path, content, exc):
    (tmp_path / "x.tsb").write_bytes(content)
    with pytest.raises(exc):
        torchshield.load(tmp_path / "x.tsb")


def test_directory_and_missing(tmp_path):
    with pytest.raises(InputError, match="directory"):
        torchshield.load(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        torchshield.inspect(tmp_path / "missing.tsb")


def test_rotation_keeps_signature_and_data(tmp_path, sd, master_key, signer):
    good = _write(tmp_path / "r.tsb", sd, key=master_key, sign_with=signer[0])
    new = generate_master_key()
    assert rotate_key(tmp_path / "r.tsb", master_key, new)
    after = (tmp_path / "r.tsb").read_bytes()
    assert len(after) == len(good) and sum(a != b for a, b in zip(good, after)) <= 69
    out = torchshield.load(tmp_path / "r.tsb", key=new, verify_with=signer[1])
    assert torch.equal(out["a.weight"], sd["a.weight"])
    with pytest.raises(WrongKeyError):
        torchshield.load(tmp_path / "r.tsb", key=master_key)


def test_failed_save_leaves_nothing(tmp_path, sd):
    (tmp_path / "m.tsb").write_bytes(b"previous content")
    with pytest.raises(InputError):
        torchshield.save({"bad": "not a tensor"}, tmp_path / "m.tsb")
    assert (tmp_path / "m.tsb").read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tsb"]
