"""Make the known-answer vectors in ``tests/vectors/v<N>/`` -- run ONCE per format version.

    PYTHONPATH=src python tests/vectors/make_vectors.py v1

The tests never run this script: they read the committed files, whose SHA-256 is pinned in
``v<N>/expected.json``. Salts, nonces, data keys and object ids come from the product's own
randomness, so running it again gives different (equally valid) bytes; that is why the files are
committed and never regenerated in place. A format change means a new version folder (``v2/``)
made by this script, next to the old ones, which must keep decoding.

Keys: the TEST-ONLY keys in ``tests/vectors/keys/`` (master key = bytes(range(32)), Ed25519 key
from the seed bytes(range(32, 64))). They are public, protect nothing, and exist only here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import torchshield
from torchshield.crypto import envelope, signing, stream
from torchshield.crypto.keys import MasterKey
from torchshield.model import bundle
from torchshield.model.dtypes import dtype_name

HERE = Path(__file__).resolve().parent
KEYS = HERE / "keys"
MASTER_SECRET = bytes(range(32))
SIGNER_SEED = bytes(range(32, 64))
CHUNK = 4096  # the smallest chunk size TSE accepts: multi-chunk vectors stay a few KiB


def fixed_test_keys() -> tuple[MasterKey, Ed25519PrivateKey]:
    master = MasterKey(MASTER_SECRET)
    signer = Ed25519PrivateKey.from_private_bytes(SIGNER_SEED)
    KEYS.mkdir(exist_ok=True)
    (KEYS / "TEST-ONLY-master.key").write_text(
        "torchshield-key-v1 " + base64.urlsafe_b64encode(MASTER_SECRET).decode() + "\n")
    (KEYS / "TEST-ONLY-signer.key").write_bytes(signer.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (KEYS / "TEST-ONLY-signer.pub").write_bytes(signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return master, signer


def tensors() -> dict[str, torch.Tensor]:
    """Several dtypes, special float values (bit-exact NaN, -0.0, subnormal), an empty tensor in
    the middle and an odd-sized last tensor (so the data length is not a multiple of 64)."""
    rng = np.random.default_rng(20261204)
    big = torch.from_numpy(rng.standard_normal((33, 40)).astype(np.float32))  # 5280 B: two 4 KiB chunks
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, 3.4e38, -1.5],
                           dtype=torch.float32)
    special.view(torch.int32)[4] = 0x7FC00123  # a NaN with a payload: bit-exact or bust
    return {
        "layer.weight": big,
        "special.f32": special,
        "counts.i64": torch.tensor([[0, -1, 2**62], [-(2**63), 2**63 - 1, 42]], dtype=torch.int64),
        "emb.bf16": torch.linspace(-2, 2, 16).reshape(4, 4).to(torch.bfloat16),
        "half.f16": torch.tensor([65504.0, -6.1e-5, 0.333], dtype=torch.float16),
        "empty.f32": torch.zeros((0, 4), dtype=torch.float32),
        "mask.bool": torch.tensor([True, False, True, True, False]),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(version_dir: str) -> None:
    out = HERE / version_dir
    out.mkdir(exist_ok=False)  # never overwrite committed vectors
    master, signer = fixed_test_keys()
    ts = tensors()
    files: dict[str, dict] = {}
    meta = {"purpose": "known-answer test vector", "note": "模型 (UTF-8 in the manifest)"}
    prov = {"source": "tests/vectors/make_vectors.py"}
    for name, enc, sig in (("bundle-plain.tsb", False, False), ("bundle-signed.tsb", False, True),
                           ("bundle-encrypted.tsb", True, False), ("bundle-encrypted-signed.tsb", True, True)):
        path = out / name
        bundle.save(ts, path, key=master if enc else None, sign_with=signer if sig else None,
                    metadata=meta, provenance=prov, chunk_size=CHUNK, overwrite=False)
        info = torchshield.inspect(path)
        files[name] = {"kind": "tsb", "sha256": sha256(path), "encrypted": enc, "signed": sig,
                       "key_id": info.key_id, "signer": info.signer,
                       "manifest": {k: v for k, v in info.manifest.items() if k not in ("encrypted", "signed")}}
    rng = np.random.default_rng(7)
    plains = {"tse-multichunk.tse": (rng.bytes(2 * CHUNK + 100), b"torchshield/test-vector/tse"),
              "tse-exact.tse": (rng.bytes(2 * CHUNK), b"ctx"),
              "tse-empty.tse": (b"", b"")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (plain, ctx) in plains.items():
            src = Path(tmp) / name
            src.write_bytes(plain)
            stream.encrypt_file(src, out / name, master, context=ctx, chunk_size=CHUNK)
            files[name] = {"kind": "tse", "sha256": sha256(out / name), "context": ctx.hex(),
                           "chunk_size": CHUNK, "plaintext": plain.hex()}
    for name, plain, ctx in (("sealed.tss", "水印密钥 watermark key 0123".encode(), b"torchshield/test-vector/seal"),
                             ("sealed-empty.tss", b"", b"")):
        (out / name).write_bytes(envelope.seal(master, plain, context=ctx))
        files[name] = {"kind": "sealed", "sha256": sha256(out / name), "context": ctx.hex(),
                       "plaintext": plain.hex()}
    doc = {
        "comment": "Known-answer vectors made once by make_vectors.py with the TEST-ONLY keys; never regenerate.",
        "made_with": {"torchshield": torchshield.__version__, "torch": torch.__version__},
        "versions": {"bundle": bundle.VERSION, "tse": stream._FILE_VERSION, "wrap": envelope._WRAP_VERSION,
                     "seal_magic": envelope._SEAL_MAGIC.decode()},
        "keys": {"master_secret_hex": MASTER_SECRET.hex(), "master_key_id": master.key_id,
                 "signer_seed_hex": SIGNER_SEED.hex(),
                 "signer_public_hex": signing.raw_public_key(signer.public_key()).hex(),
                 "signer_fingerprint": signing.fingerprint(signer.public_key())},
        "tensors": {k: {"dtype": dtype_name(t.dtype), "shape": list(t.shape),
                        "hex": bytes(t.reshape(-1).view(torch.uint8).numpy()).hex() if t.numel() else ""}
                    for k, t in ts.items()},
        "files": files,
    }
    (out / "expected.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n")
    print(f"wrote {len(files)} vectors to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "v1")
