import hashlib
import os
import tracemalloc

import pytest

from torchshield.crypto.envelope import open_sealed, rewrap_sealed, seal
from torchshield.crypto.keys import generate_master_key
from torchshield.crypto.stream import (
    ciphertext_length,
    decrypt_file,
    encrypt_file,
    plaintext_length,
    read_file_header,
    rotate_file_key,
)
from torchshield.errors import FormatError, IntegrityError, WrongKeyError

CS = 1 << 12  # small chunks so tests cover many-chunk files cheaply


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 5 * CS, 5 * CS + 17])
def test_round_trip_sizes(tmp_path, master_key, size):
    data = os.urandom(size)
    (tmp_path / "p").write_bytes(data)
    encrypt_file(tmp_path / "p", tmp_path / "c", master_key, chunk_size=CS)
    assert (tmp_path / "c").stat().st_size == 30 + 69 + ciphertext_length(size, CS)
    decrypt_file(tmp_path / "c", tmp_path / "d", master_key)
    assert (tmp_path / "d").read_bytes() == data


@pytest.mark.parametrize("n", [0, 1, 15, 16, 100, CS, CS + 16, 3 * (CS + 16), 3 * (CS + 16) + 20])
def test_plaintext_length_inverts_ciphertext_length(n):
    try:
        p = plaintext_length(n, CS)
    except IntegrityError:
        return
    assert ciphertext_length(p, CS) == n


def _encrypted(tmp_path, key, size=5 * CS + 100, name="c"):
    data = os.urandom(size)
    (tmp_path / "p").write_bytes(data)
    encrypt_file(tmp_path / "p", tmp_path / name, key, chunk_size=CS, overwrite=True)
    return bytearray((tmp_path / name).read_bytes())


def _assert_refused(tmp_path, key, blob, exc=IntegrityError):
    (tmp_path / "t").write_bytes(bytes(blob))
    with pytest.raises(exc):
        decrypt_file(tmp_path / "t", tmp_path / "out", key)
    assert not (tmp_path / "out").exists(), "no partial plaintext may be left behind"


def test_every_bit_flip_region_detected(tmp_path, master_key):
    blob = _encrypted(tmp_path, master_key)
    for pos in (9, 12, 20, 40, 120, 500, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        _assert_refused(tmp_path, master_key, bad, exc=(IntegrityError, FormatError))


def test_truncation_at_chunk_boundary_and_extension_detected(tmp_path, master_key):
    blob = _encrypted(tmp_path, master_key)
    header = 30 + 69
    _assert_refused(tmp_path, master_key, blob[: header + 2 * (CS + 16)])  # clean boundary cut
    _assert_refused(tmp_path, master_key, blob[:-1])
    _assert_refused(tmp_path, master_key, blob + b"\x00" * 16)
    _assert_refused(tmp_path, master_key, blob + blob[header:header + CS + 16])


def test_reordered_and_spliced_chunks_detected(tmp_path, master_key):
    blob = _encrypted(tmp_path, master_key)
    h, c = 30 + 69, CS + 16
    swapped = blob[:h] + blob[h + c:h + 2 * c] + blob[h:h + c] + blob[h + 2 * c:]
    _assert_refused(tmp_path, master_key, swapped)
    other = _encrypted(tmp_path, master_key, name="c2")
    spliced = blob[:h + c] + other[h + c:h + 2 * c] + blob[h + 2 * c:]
    _assert_refused(tmp_path, master_key, spliced)


def test_wrong_key_is_named_as_such(tmp_path, master_key):
    blob = _encrypted(tmp_path, master_key)
    _assert_refused(tmp_path, generate_master_key(), blob, exc=WrongKeyError)


def test_not_an_encrypted_file(tmp_path, master_key):
    _assert_refused(tmp_path, master_key, b"hello world, plainly not encrypted" * 3, exc=FormatError)


def test_rotation_rewrites_only_the_key_slot(tmp_path, master_key):
    blob = _encrypted(tmp_path, master_key)
    new = generate_master_key()
    rotate_file_key(tmp_path / "c", master_key, new)
    after = (tmp_path / "c").read_bytes()
    with open(tmp_path / "c", "rb") as fh:
        hdr = read_file_header(fh)
    changed = [i for i in range(len(blob)) if blob[i] != after[i]]
    assert changed and min(changed) >= hdr.keyslot_offset and max(changed) < hdr.data_offset
    decrypt_file(tmp_path / "c", tmp_path / "d", new)
    assert (tmp_path / "d").read_bytes() == (tmp_path / "p").read_bytes()
    with pytest.raises(WrongKeyError):
        decrypt_file(tmp_path / "c", tmp_path / "e", master_key)


def test_constant_memory(tmp_path, master_key):
    size = 48 << 20
    with open(tmp_path / "big", "wb") as fh:
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            fh.write(block)
    tracemalloc.start()
    encrypt_file(tmp_path / "big", tmp_path / "big.tse", master_key)
    decrypt_file(tmp_path / "big.tse", tmp_path / "big.out", master_key)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, f"peak Python allocation {peak} bytes for a {size}-byte file"
    digest = lambda p: hashlib.sha256(p.read_bytes()).digest()  # noqa: E731
    assert digest(tmp_path / "big") == digest(tmp_path / "big.out")


def test_sealed_secrets(master_key):
    blob = seal(master_key, b"watermark secret", context=b"obj-1")
    assert b"watermark secret" not in blob
    assert open_sealed(master_key, blob, context=b"obj-1") == b"watermark secret"
    with pytest.raises(IntegrityError):
        open_sealed(master_key, blob, context=b"obj-2")
    bad = bytearray(blob)
    bad[-1] ^= 1
    with pytest.raises(IntegrityError):
        open_sealed(master_key, bytes(bad), context=b"obj-1")
    new = generate_master_key()
    moved = rewrap_sealed(master_key, new, blob, context=b"obj-1")
    assert open_sealed(new, moved, context=b"obj-1") == b"watermark secret"
    with pytest.raises(WrongKeyError):
        open_sealed(master_key, moved, context=b"obj-1")
