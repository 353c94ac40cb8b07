"""Known-answer vectors pin the file formats (issue 23, item 4).

The files in ``tests/vectors/v<N>/`` were made once by ``tests/vectors/make_vectors.py`` with the
TEST-ONLY keys in ``tests/vectors/keys/``; their SHA-256 is pinned in ``expected.json``. Each one
is decoded twice:

* by the product's public API (``torchshield.load/inspect``, ``bundle.verify``,
  ``stream.decrypt_file``, ``envelope.open_sealed``), compared bit-exactly with the expectations;
* by an INDEPENDENT reader written below straight from docs/format.md with nothing but
  ``cryptography`` (HKDF, AES-GCM, Ed25519), ``hashlib`` and ``blake3``: every field, length,
  padding byte, digest, signature, key slot and chunk the format promises is checked.

Negative vectors (a flipped bit in each part, truncation, extension, swapped or spliced chunks, a
copied key slot, a wrong key) must be refused by both readers, and the product must raise the
documented error class, which the independent reader predicts. A format change therefore cannot
pass silently through round-trip tests: the writer's version constants must equal those of the
newest vectors (a bump needs a new ``v<N+1>/``), and every older vector folder must still decode.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest
import torch
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import torchshield
from torchshield.crypto import envelope, stream
from torchshield.crypto.keys import MasterKey, read_key_file
from torchshield.crypto.signing import load_public_key, load_signing_key
from torchshield.errors import FormatError, IntegrityError, SignatureError, WrongKeyError
from torchshield.model import bundle
from torchshield.model.dtypes import dtype_from_name, dtype_name

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
KEYS = VECTORS / "keys"
VERSION_DIRS = sorted((p for p in VECTORS.glob("v*") if p.is_dir() and p.name[1:].isdigit()),
                      key=lambda p: int(p.name[1:]))
NEWEST = VERSION_DIRS[-1]


def _expected(vdir: Path) -> dict[str, Any]:
    return json.loads((vdir / "expected.json").read_text(encoding="utf-8"))


# All (version folder, file name) pairs, so that old folders keep being decoded after a bump.
ALL = [(v, name) for v in VERSION_DIRS for name in _expected(v)["files"]]
IDS = [f"{v.name}/{n}" for v, n in ALL]


def _of_kind(kind: str) -> list[tuple[Path, str]]:
    return [(v, n) for v, n in ALL if _expected(v)["files"][n]["kind"] == kind]


# ============================================================================================
# The independent reader: docs/format.md, cryptography, hashlib, blake3. Nothing from torchshield.
# ============================================================================================

class Rejected(Exception):
    """The reference reader refuses the file; ``kind`` is the error class the doc promises."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind


KIND_OF = {FormatError: "format", IntegrityError: "integrity", WrongKeyError: "wrong-key",
           SignatureError: "signature"}


def need(cond: bool, kind: str, why: str) -> None:
    if not cond:
        raise Rejected(kind, why)


def hkdf(key: bytes, info: bytes, *, salt: bytes | None = None, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def ref_key_id(master: bytes) -> bytes:
    # docs: Key id = HKDF-SHA256(master, info="torchshield/key-id/v1")[:8]
    return hkdf(master, b"torchshield/key-id/v1")[:8]


def canonical(doc: Any) -> bytes:
    # docs: canonical JSON (sorted keys, no spaces, UTF-8)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def ref_unwrap(master: bytes, slot: bytes, context: bytes) -> bytes:
    """docs: 01 | key_id (8) | nonce (12) | AES-256-GCM(wrapping key, data key) (48), wrapping key
    derive("envelope/wrap"), AD "torchshield/wrap/v1" | key_id | context."""
    need(len(slot) == 69 and slot[0] == 1, "format", "wrapped key: size or version")
    key_id, nonce, ct = slot[1:9], slot[9:21], slot[21:]
    need(key_id == ref_key_id(master), "wrong-key", "wrapped for another key id")
    wrapping = hkdf(master, b"torchshield/derive/v1/envelope/wrap")
    try:
        data_key = AESGCM(wrapping).decrypt(nonce, ct, b"torchshield/wrap/v1" + key_id + context)
    except InvalidTag:
        raise Rejected("integrity", "wrapped key does not authenticate") from None
    assert len(data_key) == 32
    return data_key


def ref_chunks(data_key: bytes, salt: bytes, context_digest: bytes, stored: bytes, chunk_size: int) -> bytes:
    """docs, the chunk layer: chunk key = HKDF(data key, salt, info="torchshield/stream/v1");
    chunk i: nonce 0^4 | i (BE 8), AD context_digest | i (BE 8) | last (1); chunks of chunk_size
    plaintext bytes + 16-byte tag, the last may be shorter, an empty plaintext is one empty chunk."""
    chunk_key = hkdf(data_key, b"torchshield/stream/v1", salt=salt)
    aead = AESGCM(chunk_key)
    pieces = [stored[i:i + chunk_size + 16] for i in range(0, len(stored), chunk_size + 16)] or [b""]
    out = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        need(len(piece) >= 16, "integrity", f"chunk {i} shorter than a tag")
        need(last or len(piece) == chunk_size + 16, "integrity", f"chunk {i} is not full")
        try:
            out.append(aead.decrypt(b"\x00" * 4 + i.to_bytes(8, "big"), piece,
                                    context_digest + i.to_bytes(8, "big") + (b"\x01" if last else b"\x00")))
        except InvalidTag:
            raise Rejected("integrity", f"chunk {i} does not authenticate") from None
    need(all(len(p) == chunk_size for p in out[:-1]), "integrity", "chunk sizes")
    return b"".join(out)


TSB_MAGIC = b"\x89TSB\r\n\x1a\n"
TSE_MAGIC = b"\x89TSE\r\n\x1a\n"
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8, "C128": 16}
MANIFEST_FIELDS = {"format", "format_version", "object_id", "created", "tool", "torch", "tensors", "tensor_order",
                   "data_length", "digest_alg", "metadata", "privacy", "watermark", "provenance"}
MANIFEST_V2_FIELDS = {"architecture", "preprocessing", "aliases", "files", "training_state"}


@dataclass
class RefBundle:
    version: int
    encrypted: bool
    manifest: dict[str, Any]
    key_id: str | None
    signer: str | None
    tensors: dict[str, bytes]
    data_offset: int
    stored_length: int
    keyslot_offset: int


def ref_read_tsb(blob: bytes, *, master: bytes | None, pubkey: bytes | None) -> RefBundle:
    """Every promise of the TSB section of docs/format.md, in its reading order."""
    need(blob[:8] == TSB_MAGIC, "format", "magic")
    version, flags, reserved, mlen = struct.unpack("<BBHI", blob[8:16])
    need(version == 1, "format", f"version {version}")
    need(reserved == 0 and flags & ~0x01 == 0, "integrity", "flags/reserved")
    need(16 + mlen + 76 <= len(blob), "integrity", "manifest length beyond the file")
    manifest_bytes = blob[16:16 + mlen]
    data_digest, manifest_digest, sig_len, end = struct.unpack("<32s32sI8s", blob[-76:])
    need(end == b"TSB-END1", "integrity", "end magic")
    # manifest digest: BLAKE3 of the first 16 bytes and the manifest
    need(blake3.blake3(blob[:16] + manifest_bytes).digest() == manifest_digest, "integrity", "manifest digest")
    manifest = json.loads(manifest_bytes.decode("utf-8"))
    need(canonical(manifest) == manifest_bytes, "format", "manifest is not canonical JSON")
    encrypted = bool(flags & 0x01)
    # manifest version 2 (docs/format.md): "manifest_version": 2 and optional v2 fields; absent means 1
    mversion = manifest.get("manifest_version", 1)
    need(mversion in (1, 2), "format", "manifest_version")
    optional = MANIFEST_V2_FIELDS if mversion == 2 else set()
    extra = set(manifest) - MANIFEST_FIELDS - ({"encryption"} if encrypted else set())
    need(MANIFEST_FIELDS <= set(manifest) and extra <= optional | ({"manifest_version"} if mversion == 2 else set()),
         "format", "manifest fields")
    need(("encryption" in manifest) == encrypted, "format", "manifest fields")
    need(manifest["format"] == "torchshield-bundle" and manifest["format_version"] == version
         and manifest["digest_alg"] == "blake3", "format", "format fields")
    object_id = bytes.fromhex(manifest["object_id"])
    need(len(object_id) == 16, "format", "object id is 16 bytes")
    n = manifest["data_length"]
    keyslot_offset = 16 + mlen
    head = keyslot_offset + (69 if encrypted else 0)
    data_offset = head + (-head % 64)  # zero padding to a multiple of 64
    if encrypted:
        enc = manifest["encryption"]
        need(enc["alg"] == "AES-256-GCM-STREAM-v1", "format", "alg")
        cs = enc["chunk_size"]
        need(cs > 0 and cs & (cs - 1) == 0, "format", "chunk size is a power of two")
        stored_length = n + 16 * max(1, math.ceil(n / cs))
    else:
        stored_length = n
    need(len(blob) == data_offset + stored_length + sig_len + 76, "integrity", "file size")
    need(not any(blob[head:data_offset]), "integrity", "padding bytes are not zero")
    stored = blob[data_offset:data_offset + stored_length]
    need(blake3.blake3(stored).digest() == data_digest, "integrity", "data digest (of the stored bytes)")

    signer = None
    if sig_len:
        block_bytes = blob[len(blob) - 76 - sig_len:len(blob) - 76]
        block = json.loads(block_bytes)
        need(canonical(block) == block_bytes and set(block) == {"alg", "fingerprint", "public_key", "signature"}
             and block["alg"] == "ed25519", "signature", "signature block")
        raw_pub = base64.b64decode(block["public_key"], validate=True)
        signer = "ed25519:" + hashlib.sha256(raw_pub).digest()[:16].hex()
        need(block["fingerprint"] == signer, "signature", "fingerprint")
        need(pubkey is None or pubkey == raw_pub, "signature", "signed by another key")
        message = b"torchshield/bundle-signature/v1" + blob[:12] + manifest_digest + data_digest
        try:
            Ed25519PublicKey.from_public_bytes(raw_pub).verify(base64.b64decode(block["signature"]), message)
        except InvalidSignature:
            raise Rejected("signature", "signature does not verify") from None
    else:
        need(pubkey is None, "signature", "not signed")

    key_id = None
    if encrypted:
        slot = blob[keyslot_offset:keyslot_offset + 69]
        key_id = slot[1:9].hex()
        need(master is not None, "wrong-key", "no key")
        assert master is not None
        data_key = ref_unwrap(master, slot, context=object_id)  # context = the object's id
        # for bundles the chunk layer's context digest is the manifest digest
        plain = ref_chunks(data_key, bytes.fromhex(enc["salt"]), manifest_digest, stored, cs)
    else:
        plain = stored
    need(len(plain) == n, "integrity", "plaintext length")

    tensors: dict[str, bytes] = {}
    order = manifest["tensor_order"]
    need(sorted(order) == sorted(manifest["tensors"]), "format", "tensor order")
    pos = 0
    for name in order:
        e = manifest["tensors"][name]
        a, b = e["offsets"]
        need(a == pos + (-pos % 64), "format", f"{name}: not the next 64-byte aligned offset")
        need(not any(plain[pos:a]), "integrity", f"{name}: padding before it is not zero")
        need(b - a == math.prod(e["shape"]) * ITEMSIZE[e["dtype"]], "format", f"{name}: size")
        need(("digest" in e) != encrypted, "format", f"{name}: digest present iff unencrypted")
        if not encrypted:
            need(blake3.blake3(plain[a:b]).hexdigest() == e["digest"], "integrity", f"{name}: digest")
        tensors[name] = plain[a:b]
        pos = b
    need(pos == n, "format", "tensors back to back up to data_length")
    return RefBundle(version, encrypted, manifest, key_id, signer, tensors, data_offset, stored_length,
                     keyslot_offset)


@dataclass
class RefTse:
    version: int
    chunk_size: int
    context: bytes
    keyslot_offset: int
    data_offset: int
    plaintext: bytes


def ref_read_tse(blob: bytes, *, master: bytes, context: bytes) -> RefTse:
    need(blob[:8] == TSE_MAGIC, "format", "magic")
    need(len(blob) >= 30, "format", "header")
    version, log2, reserved = struct.unpack("<BBH", blob[8:12])
    need(version == 1, "format", f"version {version}")
    need(12 <= log2 <= 26, "format", "chunk size out of range")
    salt = blob[12:28]
    (ctx_len,) = struct.unpack("<H", blob[28:30])
    ctx = blob[30:30 + ctx_len]
    slot = blob[30 + ctx_len:30 + ctx_len + 69]
    need(len(ctx) == ctx_len and len(slot) == 69, "integrity", "truncated header")
    need(ctx == context, "integrity", "another context")
    # context_digest = SHA-256(everything before the wrapped key)
    context_digest = hashlib.sha256(blob[:30 + ctx_len]).digest()
    # the wrapped key's context is salt | context (the code; docs/format.md said "the object id")
    data_key = ref_unwrap(master, slot, context=salt + ctx)
    need(reserved == 0, "integrity", "reserved bits")
    plain = ref_chunks(data_key, salt, context_digest, blob[30 + ctx_len + 69:], 1 << log2)
    return RefTse(version, 1 << log2, ctx, 30 + ctx_len, 30 + ctx_len + 69, plain)


def ref_open_sealed(blob: bytes, *, master: bytes, context: bytes) -> bytes:
    """b"TSS1" | wrapped key (69, context = context) | nonce (12) | AES-256-GCM(data key, plaintext,
    AD "torchshield/seal/v1" | context) with tag."""
    need(blob[:4] == b"TSS1" and len(blob) >= 4 + 69 + 12 + 16, "format", "magic or size")
    data_key = ref_unwrap(master, blob[4:73], context=context)
    try:
        return AESGCM(data_key).decrypt(blob[73:85], blob[85:], b"torchshield/seal/v1" + context)
    except InvalidTag:
        raise Rejected("integrity", "sealed ciphertext does not authenticate") from None


# ============================================================================================
# Fixtures: the committed test keys
# ============================================================================================

@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    k = _expected(NEWEST)["keys"]
    return {"master": bytes.fromhex(k["master_secret_hex"]), "pub": bytes.fromhex(k["signer_public_hex"]),
            "key_id": k["master_key_id"], "fingerprint": k["signer_fingerprint"]}


def test_committed_test_keys_are_the_documented_fixed_ones(keys: dict[str, Any]) -> None:
    assert all(_expected(v)["keys"] == _expected(NEWEST)["keys"] for v in VERSION_DIRS), "one set of test keys"
    assert keys["master"] == bytes(range(32))
    text = (KEYS / "TEST-ONLY-master.key").read_text()
    prefix, b64 = text.split()
    assert prefix == "torchshield-key-v1" and base64.urlsafe_b64decode(b64) == bytes(range(32))
    with warnings.catch_warnings():  # git does not keep mode 0600: the product rightly warns
        warnings.simplefilter("ignore")
        assert read_key_file(KEYS / "TEST-ONLY-master.key").secret == bytes(range(32))
    assert ref_key_id(keys["master"]).hex() == keys["key_id"] == MasterKey(keys["master"]).key_id
    seed = bytes.fromhex(_expected(NEWEST)["keys"]["signer_seed_hex"])
    assert seed == bytes(range(32, 64))
    priv = load_signing_key(KEYS / "TEST-ONLY-signer.key")
    assert priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption()) == seed
    raw_pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw_pub == keys["pub"]
    assert load_public_key(KEYS / "TEST-ONLY-signer.pub").public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw_pub
    assert keys["fingerprint"] == "ed25519:" + hashlib.sha256(raw_pub).digest()[:16].hex()


# ============================================================================================
# (a) the files cannot drift
# ============================================================================================

@pytest.mark.parametrize("vdir", VERSION_DIRS, ids=[v.name for v in VERSION_DIRS])
def test_every_vector_file_is_pinned_by_sha256(vdir: Path) -> None:
    files = _expected(vdir)["files"]
    on_disk = {p.name for p in vdir.iterdir() if p.name != "expected.json"}
    assert on_disk == set(files), "every vector file is listed in expected.json, and only those"
    for name, exp in files.items():
        assert hashlib.sha256((vdir / name).read_bytes()).hexdigest() == exp["sha256"], name


def test_the_vectors_cover_what_the_issue_asks() -> None:
    kinds = {(e["kind"], e.get("encrypted"), e.get("signed")) for e in _expected(NEWEST)["files"].values()}
    assert {("tsb", False, False), ("tsb", True, False), ("tsb", False, True), ("tsb", True, True),
            ("tse", None, None), ("sealed", None, None)} <= kinds
    tensors = _expected(NEWEST)["tensors"]
    assert {"F32", "I64", "BF16", "BOOL", "F16"} <= {t["dtype"] for t in tensors.values()}
    assert any(math.prod(t["shape"]) == 0 for t in tensors.values())
    tse = [e for e in _expected(NEWEST)["files"].values() if e["kind"] == "tse"]
    assert any(len(e["plaintext"]) // 2 > e["chunk_size"] for e in tse) and any(e["plaintext"] == "" for e in tse)


# ============================================================================================
# (b) + (c): the product's API and the independent reader agree with the known answers
# ============================================================================================

def _raw(t: torch.Tensor) -> bytes:
    return bytes(t.contiguous().reshape(-1).view(torch.uint8).numpy()) if t.numel() else b""


@pytest.mark.parametrize(("vdir", "name"), _of_kind("tsb"), ids=[f"{v.name}/{n}" for v, n in _of_kind("tsb")])
def test_bundle_vector_decodes_to_the_known_answer(vdir: Path, name: str, keys: dict[str, Any]) -> None:
    doc = _expected(vdir)
    exp, exp_tensors = doc["files"][name], doc["tensors"]
    path = vdir / name
    master = MasterKey(keys["master"])

    # the independent reader
    ref = ref_read_tsb(path.read_bytes(), master=keys["master"], pubkey=keys["pub"] if exp["signed"] else None)
    assert ref.version == doc["versions"]["bundle"]
    assert ref.encrypted == exp["encrypted"]
    assert ref.manifest == exp["manifest"]
    assert ref.key_id == exp["key_id"] == (keys["key_id"] if exp["encrypted"] else None)
    assert ref.signer == exp["signer"] == (keys["fingerprint"] if exp["signed"] else None)
    assert list(ref.tensors) == list(exp_tensors)
    for tname, t in exp_tensors.items():
        assert ref.tensors[tname].hex() == t["hex"], tname
        entry = ref.manifest["tensors"][tname]
        assert (entry["dtype"], entry["shape"]) == (t["dtype"], t["shape"])

    # the product's public API
    info = torchshield.inspect(path)
    assert info.format_version == ref.version
    assert {k: v for k, v in info.manifest.items() if k not in ("encrypted", "signed")} == exp["manifest"]
    assert (info.encrypted, info.signed, info.key_id, info.signer) == \
        (exp["encrypted"], exp["signed"], exp["key_id"], exp["signer"])
    assert info.file_size == path.stat().st_size
    loaded = torchshield.load(path, key=master if exp["encrypted"] else None,
                              verify_with=keys["pub"] if exp["signed"] else None)
    assert list(loaded) == list(exp_tensors)
    for tname, t in exp_tensors.items():
        got = loaded[tname]
        assert dtype_name(got.dtype) == t["dtype"] and list(got.shape) == t["shape"], tname
        assert _raw(got).hex() == t["hex"], tname
    report = bundle.verify(path, pubkey=keys["pub"] if exp["signed"] else None,
                           key=master if exp["encrypted"] else None)
    assert report.ok, report.problems
    assert (report.signed, report.signer, report.encrypted, report.decrypted) == \
        (exp["signed"], exp["signer"], exp["encrypted"], exp["encrypted"])


@pytest.mark.parametrize(("vdir", "name"), _of_kind("tse"), ids=[f"{v.name}/{n}" for v, n in _of_kind("tse")])
def test_tse_vector_decodes_to_the_known_answer(vdir: Path, name: str, keys: dict[str, Any],
                                                tmp_path: Path) -> None:
    doc = _expected(vdir)
    exp = doc["files"][name]
    ctx = bytes.fromhex(exp["context"])
    ref = ref_read_tse((vdir / name).read_bytes(), master=keys["master"], context=ctx)
    assert ref.version == doc["versions"]["tse"] and ref.chunk_size == exp["chunk_size"]
    assert ref.plaintext.hex() == exp["plaintext"]
    n = stream.decrypt_file(vdir / name, tmp_path / "out", MasterKey(keys["master"]), context=ctx)
    assert n == len(ref.plaintext)
    assert (tmp_path / "out").read_bytes().hex() == exp["plaintext"]
    with (vdir / name).open("rb") as fh:
        hdr = stream.read_file_header(fh)
    assert (hdr.chunk_size, hdr.context, hdr.wrapped_key.key_id_hex, hdr.data_offset) == \
        (exp["chunk_size"], ctx, keys["key_id"], ref.data_offset)


@pytest.mark.parametrize(("vdir", "name"), _of_kind("sealed"),
                         ids=[f"{v.name}/{n}" for v, n in _of_kind("sealed")])
def test_sealed_vector_opens_to_the_known_answer(vdir: Path, name: str, keys: dict[str, Any]) -> None:
    exp = _expected(vdir)["files"][name]
    blob, ctx = (vdir / name).read_bytes(), bytes.fromhex(exp["context"])
    assert ref_open_sealed(blob, master=keys["master"], context=ctx).hex() == exp["plaintext"]
    assert envelope.open_sealed(MasterKey(keys["master"]), blob, context=ctx).hex() == exp["plaintext"]
    assert envelope.WrappedKey.from_bytes(blob[4:73]).key_id_hex == keys["key_id"]


# ============================================================================================
# (d) negative vectors: each refused by both readers, with the documented error class
# ============================================================================================

def flip(off: int | Callable[[bytes], int], bit: int = 0x01) -> Callable[[bytes], bytes]:
    def mutate(blob: bytes) -> bytes:
        at = off(blob) if callable(off) else off
        b = bytearray(blob)
        b[at] ^= bit
        return bytes(b)
    return mutate


def cut(n: int) -> Callable[[bytes], bytes]:
    return lambda blob: blob[:-n]


def _tsb_layout(blob: bytes) -> RefBundle:
    return ref_read_tsb(blob, master=bytes(range(32)), pubkey=None)


def _tsb_data(blob: bytes) -> int:
    return _tsb_layout(blob).data_offset + 7


def _tsb_last_tag(blob: bytes) -> int:
    lay = _tsb_layout(blob)
    return lay.data_offset + lay.stored_length - 1


def _tsb_pad(blob: bytes) -> int:
    lay = _tsb_layout(blob)
    head = lay.keyslot_offset + (69 if lay.encrypted else 0)
    assert lay.data_offset > head, "this vector has padding before its data"
    return head


def _tsb_slot(k: int) -> Callable[[bytes], int]:
    return lambda blob: _tsb_layout(blob).keyslot_offset + k


def _tsb_sig_flip(blob: bytes) -> bytes:
    """One bit of the raw Ed25519 signature flipped, re-encoded (the block stays valid JSON)."""
    (sig_len,) = struct.unpack("<I", blob[-12:-8])
    start = len(blob) - 76 - sig_len
    block = json.loads(blob[start:len(blob) - 76])
    sig = bytearray(base64.b64decode(block["signature"]))
    sig[5] ^= 0x01
    new = canonical(dict(block, signature=base64.b64encode(bytes(sig)).decode()))
    assert len(new) == sig_len
    return blob[:start] + new + blob[len(blob) - 76:]


def _fix_data_digest(mutate: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Then recompute the (unkeyed) data digest in the trailer, as any attacker can."""
    def fixed(blob: bytes) -> bytes:
        lay = _tsb_layout(blob)
        bad = mutate(blob)
        digest = blake3.blake3(bad[lay.data_offset:lay.data_offset + lay.stored_length]).digest()
        return bad[:-76] + digest + bad[-44:]
    return fixed


def _tsb_swap_chunks(blob: bytes) -> bytes:
    lay = _tsb_layout(blob)
    cs = lay.manifest["encryption"]["chunk_size"] + 16
    a = lay.data_offset
    assert lay.stored_length > cs, "at least two chunks"
    first, rest = blob[a:a + cs], blob[a + cs:a + lay.stored_length]
    return blob[:a] + rest + first + blob[a + lay.stored_length:]  # same length, chunks reordered


def _tsb_cut_last_chunk(blob: bytes) -> bytes:
    """Drop the final chunk and fix every length and digest a keyless attacker can fix."""
    lay = _tsb_layout(blob)
    cs = lay.manifest["encryption"]["chunk_size"]
    manifest = dict(lay.manifest, data_length=cs)
    mbytes = canonical(manifest)
    prefix = blob[:12] + struct.pack("<I", len(mbytes))
    head = prefix + mbytes + blob[lay.keyslot_offset:lay.keyslot_offset + 69]
    head += b"\x00" * (-len(head) % 64)
    data = blob[lay.data_offset:lay.data_offset + cs + 16]
    return head + data + blake3.blake3(data).digest() + blake3.blake3(prefix + mbytes).digest() + \
        struct.pack("<I", 0) + b"TSB-END1"


def _tse_off(blob: bytes, what: str, k: int = 0) -> int:
    (ctx_len,) = struct.unpack("<H", blob[28:30])
    return {"slot": 30 + ctx_len, "data": 30 + ctx_len + 69}[what] + k


def _tse_swap(blob: bytes) -> bytes:
    d = _tse_off(blob, "data")
    cs = (1 << blob[9]) + 16
    return blob[:d] + blob[d + cs:d + 2 * cs] + blob[d:d + cs] + blob[d + 2 * cs:]


def _tse_drop_last_chunk(blob: bytes) -> bytes:
    d = _tse_off(blob, "data")
    cs = (1 << blob[9]) + 16
    full = (len(blob) - d) // cs
    return blob[:d + (full - 1 if (len(blob) - d) % cs == 0 else full) * cs]


def _set(at: int, value: int) -> Callable[[bytes], bytes]:
    def mutate(blob: bytes) -> bytes:
        b = bytearray(blob)
        b[at] = value
        return bytes(b)
    return mutate


# (file, case, mutation, expected product error)
NEGATIVE: list[tuple[str, str, Callable[[bytes], bytes], type[Exception]]] = [
    ("bundle-plain.tsb", "magic", flip(1), FormatError),
    ("bundle-plain.tsb", "version 2", _set(8, 2), FormatError),
    ("bundle-plain.tsb", "unknown flag", flip(9, 0x02), IntegrityError),
    ("bundle-plain.tsb", "manifest bit", flip(40), IntegrityError),
    ("bundle-plain.tsb", "manifest length", flip(12), IntegrityError),
    ("bundle-plain.tsb", "padding byte", flip(_tsb_pad), IntegrityError),
    ("bundle-plain.tsb", "data bit", flip(_tsb_data), IntegrityError),
    ("bundle-plain.tsb", "data digest", flip(lambda b: len(b) - 76), IntegrityError),
    ("bundle-plain.tsb", "manifest digest", flip(lambda b: len(b) - 44), IntegrityError),
    ("bundle-plain.tsb", "end magic", flip(lambda b: len(b) - 1), IntegrityError),
    ("bundle-plain.tsb", "truncated by one byte", cut(1), IntegrityError),
    ("bundle-plain.tsb", "truncated to half", lambda b: b[:len(b) // 2], IntegrityError),
    ("bundle-plain.tsb", "extended", lambda b: b[:-76] + b"\x00" + b[-76:], IntegrityError),
    ("bundle-encrypted.tsb", "manifest bit", flip(40), IntegrityError),
    ("bundle-encrypted.tsb", "data bit", flip(_tsb_data), IntegrityError),
    ("bundle-encrypted.tsb", "last tag bit", flip(_tsb_last_tag), IntegrityError),
    ("bundle-encrypted.tsb", "wrapped key version", flip(_tsb_slot(0)), FormatError),
    ("bundle-encrypted.tsb", "wrapped key id", flip(_tsb_slot(1)), WrongKeyError),
    ("bundle-encrypted.tsb", "wrapped key nonce", flip(_tsb_slot(10)), IntegrityError),
    ("bundle-encrypted.tsb", "wrapped key ciphertext", flip(_tsb_slot(40)), IntegrityError),
    ("bundle-encrypted.tsb", "wrapped key tag", flip(_tsb_slot(68)), IntegrityError),
    ("bundle-encrypted.tsb", "data bit, data digest fixed", _fix_data_digest(flip(_tsb_data)), IntegrityError),
    ("bundle-encrypted.tsb", "swapped chunks", _tsb_swap_chunks, IntegrityError),
    ("bundle-encrypted.tsb", "swapped chunks, data digest fixed", _fix_data_digest(_tsb_swap_chunks),
     IntegrityError),
    ("bundle-encrypted.tsb", "last chunk dropped, lengths and digests fixed", _tsb_cut_last_chunk, IntegrityError),
    ("bundle-encrypted.tsb", "truncated by one byte", cut(1), IntegrityError),
    ("bundle-signed.tsb", "signature bit", _tsb_sig_flip, SignatureError),
    ("bundle-signed.tsb", "data bit", flip(_tsb_data), IntegrityError),
    ("bundle-encrypted-signed.tsb", "signature bit", _tsb_sig_flip, SignatureError),
    ("bundle-encrypted-signed.tsb", "wrapped key ciphertext", flip(_tsb_slot(30)), IntegrityError),
    ("tse-multichunk.tse", "magic", flip(0), FormatError),
    ("tse-multichunk.tse", "version 2", _set(8, 2), FormatError),
    ("tse-multichunk.tse", "chunk size byte", _set(9, 30), FormatError),
    ("tse-multichunk.tse", "reserved", flip(10), IntegrityError),
    ("tse-multichunk.tse", "salt bit", flip(14), IntegrityError),
    ("tse-multichunk.tse", "context bit", flip(31), IntegrityError),
    ("tse-multichunk.tse", "wrapped key version", flip(lambda b: _tse_off(b, "slot")), FormatError),
    ("tse-multichunk.tse", "wrapped key id", flip(lambda b: _tse_off(b, "slot", 3)), WrongKeyError),
    ("tse-multichunk.tse", "wrapped key ciphertext", flip(lambda b: _tse_off(b, "slot", 50)), IntegrityError),
    ("tse-multichunk.tse", "chunk 0 bit", flip(lambda b: _tse_off(b, "data", 5)), IntegrityError),
    ("tse-multichunk.tse", "chunk 1 tag bit", flip(lambda b: _tse_off(b, "data", 2 * 4112 - 1)), IntegrityError),
    ("tse-multichunk.tse", "last tag bit", flip(lambda b: len(b) - 1), IntegrityError),
    ("tse-multichunk.tse", "swapped chunks", _tse_swap, IntegrityError),
    ("tse-multichunk.tse", "cut at a chunk boundary", _tse_drop_last_chunk, IntegrityError),
    ("tse-multichunk.tse", "truncated by one byte", cut(1), IntegrityError),
    ("tse-multichunk.tse", "truncated inside the key slot", lambda b: b[:_tse_off(b, "slot", 10)], IntegrityError),
    ("tse-multichunk.tse", "extended", lambda b: b + b"\x00" * 16, IntegrityError),
    ("tse-exact.tse", "swapped chunks", _tse_swap, IntegrityError),
    ("tse-exact.tse", "cut at a chunk boundary", _tse_drop_last_chunk, IntegrityError),
    ("tse-exact.tse", "an empty final chunk appended", lambda b: b + b[-16:], IntegrityError),
    ("tse-empty.tse", "tag bit", flip(lambda b: len(b) - 1), IntegrityError),
    ("tse-empty.tse", "no chunk at all", cut(16), IntegrityError),
    ("sealed.tss", "magic", flip(0), FormatError),
    ("sealed.tss", "wrapped key version", flip(4), FormatError),
    ("sealed.tss", "wrapped key id", flip(6), WrongKeyError),
    ("sealed.tss", "wrapped key ciphertext", flip(50), IntegrityError),
    ("sealed.tss", "nonce", flip(80), IntegrityError),
    ("sealed.tss", "ciphertext bit", flip(90), IntegrityError),
    ("sealed.tss", "tag bit", flip(lambda b: len(b) - 1), IntegrityError),
    ("sealed.tss", "truncated by one byte", cut(1), IntegrityError),
    ("sealed.tss", "truncated below the minimum", lambda b: b[:100], FormatError),
    ("sealed-empty.tss", "tag bit", flip(lambda b: len(b) - 1), IntegrityError),
]


def _product_read(kind: str, path: Path, exp: dict[str, Any], master: MasterKey, pub: bytes | None,
                  tmp: Path) -> None:
    if kind == "tsb":
        torchshield.load(path, key=master if exp["encrypted"] else None, verify_with=pub)
    elif kind == "tse":
        stream.decrypt_file(path, tmp / "plain.out", master, context=bytes.fromhex(exp["context"]))
    else:
        envelope.open_sealed(master, path.read_bytes(), context=bytes.fromhex(exp["context"]))


def _ref_read(kind: str, blob: bytes, exp: dict[str, Any], master: bytes, pub: bytes | None) -> None:
    if kind == "tsb":
        ref_read_tsb(blob, master=master, pubkey=pub)
    elif kind == "tse":
        ref_read_tse(blob, master=master, context=bytes.fromhex(exp["context"]))
    else:
        ref_open_sealed(blob, master=master, context=bytes.fromhex(exp["context"]))


@pytest.mark.parametrize(("name", "case", "mutate", "error"), NEGATIVE, ids=[f"{n}:{c}" for n, c, _, _ in NEGATIVE])
def test_negative_vector_is_refused_with_the_documented_error(name: str, case: str, mutate: Callable[[bytes], bytes],
                                                              error: type[Exception], keys: dict[str, Any],
                                                              tmp_path: Path) -> None:
    exp = _expected(NEWEST)["files"][name]
    good = (NEWEST / name).read_bytes()
    bad = mutate(good)
    assert bad != good
    path = tmp_path / name
    path.write_bytes(bad)
    pub = keys["pub"] if exp.get("signed") else None
    with pytest.raises(Rejected) as ref_exc:
        _ref_read(exp["kind"], bad, exp, keys["master"], pub)
    assert ref_exc.value.kind == KIND_OF[error], f"the doc-based reader predicts {ref_exc.value}"
    with pytest.raises(Exception) as exc:
        _product_read(exp["kind"], path, exp, MasterKey(keys["master"]), pub, tmp_path)
    assert type(exc.value) is error, f"{case}: {type(exc.value).__name__}: {exc.value}"
    assert not (tmp_path / "plain.out").exists(), "no plaintext output from a refused file"


@pytest.mark.parametrize("name", ["bundle-encrypted.tsb", "tse-multichunk.tse", "sealed.tss"])
def test_a_wrong_key_is_named_as_such(name: str, keys: dict[str, Any], tmp_path: Path) -> None:
    exp = _expected(NEWEST)["files"][name]
    other = bytes(range(1, 33))
    with pytest.raises(Rejected, match="wrong-key"):
        _ref_read(exp["kind"], (NEWEST / name).read_bytes(), exp, other, None)
    with pytest.raises(WrongKeyError):
        _product_read(exp["kind"], NEWEST / name, exp, MasterKey(other), None, tmp_path)


def test_a_key_slot_copied_from_another_bundle_does_not_open_it(keys: dict[str, Any], tmp_path: Path) -> None:
    """Both bundles are encrypted under the same master key; the wrap binds the object id."""
    a, b = (NEWEST / "bundle-encrypted.tsb").read_bytes(), (NEWEST / "bundle-encrypted-signed.tsb").read_bytes()
    la, lb = _tsb_layout(a), _tsb_layout(b)
    spliced = a[:la.keyslot_offset] + b[lb.keyslot_offset:lb.keyslot_offset + 69] + a[la.keyslot_offset + 69:]
    with pytest.raises(Rejected, match="integrity: wrapped key"):
        ref_read_tsb(spliced, master=keys["master"], pubkey=None)
    (tmp_path / "x.tsb").write_bytes(spliced)
    with pytest.raises(IntegrityError, match="wrapped data key"):
        torchshield.load(tmp_path / "x.tsb", key=MasterKey(keys["master"]))


def test_a_chunk_spliced_from_another_tse_file_fails(keys: dict[str, Any], tmp_path: Path) -> None:
    a, b = (NEWEST / "tse-multichunk.tse").read_bytes(), (NEWEST / "tse-exact.tse").read_bytes()
    da, db = _tse_off(a, "data"), _tse_off(b, "data")
    spliced = a[:da] + b[db:db + 4112] + a[da + 4112:]
    exp = _expected(NEWEST)["files"]["tse-multichunk.tse"]
    with pytest.raises(Rejected, match="chunk 0"):
        _ref_read("tse", spliced, exp, keys["master"], None)
    (tmp_path / "x.tse").write_bytes(spliced)
    with pytest.raises(IntegrityError, match="chunk 0"):
        _product_read("tse", tmp_path / "x.tse", exp, MasterKey(keys["master"]), None, tmp_path)


def test_verify_without_the_key_reports_changed_data_of_a_signed_encrypted_bundle(keys: dict[str, Any],
                                                                                 tmp_path: Path) -> None:
    """The signature covers the digest of the stored (encrypted) bytes: a keyless verifier sees a
    changed byte, and a recomputed digest breaks the signature."""
    blob = (NEWEST / "bundle-encrypted-signed.tsb").read_bytes()
    (tmp_path / "x.tsb").write_bytes(flip(_tsb_data)(blob))
    report = bundle.verify(tmp_path / "x.tsb", pubkey=keys["pub"])
    assert not report.ok and not report.decrypted
    assert len(report.problems) == 1 and "tensor data was changed" in report.problems[0], report.problems
    with pytest.raises(IntegrityError):
        torchshield.load(tmp_path / "x.tsb", key=MasterKey(keys["master"]), verify_with=keys["pub"])
    (tmp_path / "y.tsb").write_bytes(_fix_data_digest(flip(_tsb_data))(blob))
    report = bundle.verify(tmp_path / "y.tsb", pubkey=keys["pub"])
    assert not report.ok
    assert len(report.problems) == 1 and "signature does not verify" in report.problems[0], report.problems
    with pytest.raises(SignatureError):
        torchshield.load(tmp_path / "y.tsb", key=MasterKey(keys["master"]), verify_with=keys["pub"])


def test_another_signer_is_refused(keys: dict[str, Any]) -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with pytest.raises(Rejected, match="signature: signed by another key"):
        ref_read_tsb((NEWEST / "bundle-signed.tsb").read_bytes(), master=None, pubkey=other)
    with pytest.raises(SignatureError, match="not by the expected signer"):
        torchshield.load(NEWEST / "bundle-signed.tsb", verify_with=other)


def _with_chunk_size(blob: bytes, chunk_size: int) -> bytes:
    """An encrypted bundle whose manifest declares another chunk size, every unkeyed digest fixed."""
    lay = _tsb_layout(blob)
    manifest = dict(lay.manifest, encryption=dict(lay.manifest["encryption"], chunk_size=chunk_size))
    mbytes = canonical(manifest)
    prefix = blob[:12] + struct.pack("<I", len(mbytes))
    head = prefix + mbytes + blob[lay.keyslot_offset:lay.keyslot_offset + 69]
    head += b"\x00" * (-len(head) % 64)
    data = blob[lay.data_offset:lay.data_offset + lay.stored_length]
    return head + data + blake3.blake3(data).digest() + blake3.blake3(prefix + mbytes).digest() + \
        struct.pack("<I", 0) + b"TSB-END1"


@pytest.mark.parametrize("chunk_size", [0, 1000, 2**40, -4096, "4096", True])
def test_a_manifest_with_a_bad_chunk_size_is_a_format_error(keys: dict[str, Any], tmp_path: Path,
                                                             chunk_size: Any) -> None:
    """0 used to divide by zero, 2**40 to be allocated before any tag was checked."""
    bad = _with_chunk_size((NEWEST / "bundle-encrypted.tsb").read_bytes(), chunk_size)
    if chunk_size == 0:
        with pytest.raises(Rejected, match="format: chunk size"):
            ref_read_tsb(bad, master=keys["master"], pubkey=None)
    (tmp_path / "x.tsb").write_bytes(bad)
    with pytest.raises(FormatError):
        torchshield.inspect(tmp_path / "x.tsb")
    with pytest.raises(FormatError):
        torchshield.load(tmp_path / "x.tsb", key=MasterKey(keys["master"]))


# ============================================================================================
# (e) a format change is deliberate
# ============================================================================================

def test_writer_version_constants_equal_the_newest_vectors() -> None:
    """Bumping a version constant (or the seal magic) fails here until a new ``v<N+1>/`` is made."""
    doc = _expected(NEWEST)
    assert doc["versions"] == {"bundle": bundle.VERSION, "tse": stream._FILE_VERSION,
                               "wrap": envelope._WRAP_VERSION, "seal_magic": envelope._SEAL_MAGIC.decode()}
    for name, exp in doc["files"].items():
        blob = (NEWEST / name).read_bytes()
        if exp["kind"] == "tsb":
            assert blob[:8] == bundle.MAGIC and blob[8] == bundle.VERSION and blob[-8:] == bundle.END_MAGIC
            if exp["encrypted"]:
                assert blob[_tsb_layout(blob).keyslot_offset] == envelope._WRAP_VERSION
        elif exp["kind"] == "tse":
            assert blob[:8] == stream._FILE_MAGIC and blob[8] == stream._FILE_VERSION
            assert blob[_tse_off(blob, "slot")] == envelope._WRAP_VERSION
        else:
            assert blob[:4] == envelope._SEAL_MAGIC and blob[4] == envelope._WRAP_VERSION


def test_what_the_writer_writes_today_is_the_format_of_the_newest_vectors(keys: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    """A writer change that keeps round trips green (a new AD, another KDF label, other padding)
    fails here: the doc-based reader, which decodes the committed vectors, must decode it too."""
    doc = _expected(NEWEST)
    tensors = {name: torch.frombuffer(bytearray.fromhex(t["hex"]) or bytearray(1),
                                      dtype=torch.uint8)[:len(t["hex"]) // 2]
               .view(dtype_from_name(t["dtype"])).reshape(t["shape"]).clone()
               for name, t in doc["tensors"].items()}
    master = MasterKey(keys["master"])
    signer = load_signing_key(KEYS / "TEST-ONLY-signer.key")
    bundle.save(tensors, tmp_path / "now.tsb", key=master, sign_with=signer, chunk_size=4096,
                metadata={"x": "模型"})
    ref = ref_read_tsb((tmp_path / "now.tsb").read_bytes(), master=keys["master"], pubkey=keys["pub"])
    assert ref.version == doc["versions"]["bundle"]
    assert {k: v.hex() for k, v in ref.tensors.items()} == {k: t["hex"] for k, t in doc["tensors"].items()}
    plain = bytes(range(256)) * 40
    (tmp_path / "p").write_bytes(plain)
    stream.encrypt_file(tmp_path / "p", tmp_path / "now.tse", master, context=b"c", chunk_size=4096)
    assert ref_read_tse((tmp_path / "now.tse").read_bytes(), master=keys["master"], context=b"c").plaintext == plain
    sealed = envelope.seal(master, b"secret", context=b"c")
    assert ref_open_sealed(sealed, master=keys["master"], context=b"c") == b"secret"
