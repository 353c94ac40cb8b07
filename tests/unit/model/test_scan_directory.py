"""Issue 21, item 7: a Hugging Face model directory or a sharded checkpoint scans as one set."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import scan_corpus as corpus
import torch

import torchshield
from torchshield.cli.app import run
from torchshield.model.scan import scan


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([byte])
        out += bytes([byte | 0x80])


def _sentencepiece_like(pieces: list[str]) -> bytes:
    """Protobuf wire format as sentencepiece writes tokenizer.model: field 1 (pieces), each a
    message with field 1 (piece, string) and field 2 (score, float)."""
    out = b""
    for i, piece in enumerate(pieces):
        text = piece.encode()
        inner = b"\x0a" + _varint(len(text)) + text + b"\x15" + struct.pack("<f", -float(i))
        out += b"\x0a" + _varint(len(inner)) + inner
    return out + b"\x12\x04\x08\x01\x10\x02"  # field 2: trainer spec (a small message)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Hugging Face model folder: a tiny BERT saved by transformers (sharded safetensors,
    index, config), a fast tokenizer, a sentencepiece-style model, a README and a .gitattributes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hf") / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    BertModel(config).save_pretrained(root, max_shard_size="20KB")
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "cat": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(root)
    (root / "spiece.model").write_bytes(_sentencepiece_like(["<pad>", "▁the", "▁cat"]))
    (root / "vocab.txt").write_text("cat\ndog\nbird\n")  # begins with 'c': GLOBAL opcode if read as pickle
    (root / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    (root / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_bytes(corpus.reduce_payload("os", "system"))  # no loader reads .git
    return root


def _statuses(report: torchshield.ScanReport, root: Path) -> dict[str, tuple[str, str]]:
    return {str(Path(f.path).relative_to(root)): (f.status, f.format) for f in report.files}


def test_hugging_face_directory_is_one_safe_set(hf_dir: Path) -> None:
    report = torchshield.scan(hf_dir)
    got = _statuses(report, hf_dir)
    assert report.safe and report.exit_code == 0, [
        (f.path, f.findings, f.unreadable_reason) for f in report.files
    ]
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 2 and all(got[s] == ("safe", "safetensors") for s in shards)
    assert got["model.safetensors.index.json"] == ("safe", "index-json")
    assert got["config.json"] == ("safe", "json") and got["tokenizer.json"] == ("safe", "json")
    assert got["spiece.model"] == ("safe", "protobuf") and got["README.md"] == ("safe", "text")
    assert got["vocab.txt"] == ("safe", "text")
    on_disk = {str(p.relative_to(hf_dir)) for p in hf_dir.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert set(got) == on_disk  # every file, once; nothing under .git


def test_pickle_in_the_set_makes_the_set_unsafe(hf_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    root.mkdir()
    for p in hf_dir.iterdir():
        if p.is_file():
            (root / p.name).write_bytes(p.read_bytes())
    (root / "training_args.bin").write_bytes(corpus.torch_zip(corpus.reduce_payload("os", "system", proto=4)))
    report = scan(root)
    assert not report.safe and report.exit_code == 1
    bad = [f for f in report.files if f.status != "safe"]
    assert [Path(f.path).name for f in bad] == ["training_args.bin"]
    assert bad[0].findings[0].callable == "os.system" and bad[0].findings[0].member == "archive/data.pkl"


def _bin_shards(root: Path, weight_map_override: dict[str, str] | None = None) -> dict[str, str]:
    """A sharded pytorch_model.bin checkpoint (torch.save per shard) and its index."""
    torch.manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    weights = {f"layer{i}.weight": torch.randn(4, 4) for i in range(4)}
    weight_map = {}
    for n, names in enumerate(
        (["layer0.weight", "layer1.weight"], ["layer2.weight", "layer3.weight"]), start=1
    ):
        shard = f"pytorch_model-0000{n}-of-00002.bin"
        torch.save({k: weights[k] for k in names}, root / shard)
        weight_map.update(dict.fromkeys(names, shard))
    weight_map.update(weight_map_override or {})
    index = {"metadata": {"total_size": 256}, "weight_map": weight_map}
    (root / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    return weight_map


def test_sharded_pickle_checkpoint_is_safe(tmp_path: Path) -> None:
    _bin_shards(tmp_path / "ckpt")
    report = scan(tmp_path / "ckpt")
    assert report.safe, [(f.path, f.findings) for f in report.files]
    assert {f.format for f in report.files} == {"torch-zip", "index-json", "json"}


def test_payload_in_one_shard_is_found(tmp_path: Path) -> None:
    _bin_shards(tmp_path / "ckpt")
    shard = tmp_path / "ckpt" / "pytorch_model-00002-of-00002.bin"
    shard.write_bytes(corpus.reduce_payload("posix", "system", proto=2))  # a legacy-style raw pickle
    report = scan(tmp_path / "ckpt")
    assert report.exit_code == 1
    assert {f.callable for f in report.findings if f.severity == "critical"} == {"posix.system"}


@pytest.mark.parametrize(
    ("entry", "what"),
    [
        ("../outside.bin", "climbs out"),
        ("sub/../../outside.bin", "climbs out"),
        ("/etc/passwd", "absolute path"),
        ("C:\\models\\evil.bin", "absolute path"),
        ("..\\outside.bin", "climbs out"),
    ],
)
def test_index_path_traversal_is_flagged_as_structure(tmp_path: Path, entry: str, what: str) -> None:
    (tmp_path / "outside.bin").write_bytes(corpus.reduce_payload("os", "system"))
    _bin_shards(tmp_path / "ckpt", {"layer3.weight": entry})
    report = scan(tmp_path / "ckpt")
    index = next(f for f in report.files if f.format == "index-json")
    assert index.status == "unsafe" and report.exit_code == 1
    hit = [f for f in index.findings if f.kind == "structure" and what in f.message]
    assert hit and hit[0].severity == "high" and "path traversal" in hit[0].message
    assert not any(f.kind == "import" or f.severity == "critical" for f in report.findings)
    assert not any("outside.bin" in f.path for f in report.files)  # the file outside was not read


def test_index_naming_a_missing_shard_is_not_clean(tmp_path: Path) -> None:
    _bin_shards(tmp_path / "ckpt", {"layer3.weight": "pytorch_model-00003-of-00003.bin"})
    report = scan(tmp_path / "ckpt")
    index = next(f for f in report.files if f.format == "index-json")
    assert index.status == "unsafe" and "not in the directory" in index.findings[0].message


def test_index_in_a_subfolder_and_nested_shards(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    (root / "shards").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, root / "shards" / "a.bin")
    (root / "model.bin.index.json").write_text(json.dumps({"weight_map": {"w": "shards/a.bin"}}))
    assert scan(root).safe
    (root / "model.bin.index.json").write_text(json.dumps({"weight_map": ["not", "a", "map"]}))
    assert not scan(root).safe


def test_custom_code_is_reported_and_accepted_only_by_name(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    _bin_shards(root)
    (root / "config.json").write_text(
        json.dumps(
            {
                "model_type": "x",
                "auto_map": {
                    "AutoModel": "modeling_x.XModel",
                    "AutoTokenizer": ["other/repo--tokenization_x.XTok", None],
                },
            }
        )
    )
    (root / "modeling_x.py").write_text("import torch\nclass XModel(torch.nn.Module):\n    pass\n")
    report = scan(root)
    kinds = {(Path(f.file).name, f.callable) for f in report.findings if f.kind == "remote-code"}
    assert kinds == {
        ("config.json", "modeling_x.XModel"),
        ("config.json", "other/repo--tokenization_x.XTok"),
        ("modeling_x.py", "modeling_x.py"),
    }
    assert report.exit_code == 1
    assert {f.severity for f in report.findings if f.severity in ("critical", "high")} == {"high"}
    assert "repository 'other/repo'" in next(f.message for f in report.findings if "--" in (f.callable or ""))
    assert scan(root, allow=["trust_remote_code"]).safe
    assert not scan(root, allow=["trust_*"]).safe


def test_text_that_only_looks_like_a_pickle(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "vocab.txt").write_text("cat\ndog\nbird\n")
    (root / "notes.md").write_text("import this\nand that\n")
    assert scan(root).safe
    # the same bytes under a name a loader unpickles are judged as a pickle
    (root / "pytorch_model.bin").write_text("cat\ndog\nbird\n")
    assert not scan(root).safe
    # and a complete protocol-0 payload is never excused by a text suffix
    (root / "pytorch_model.bin").unlink()
    (root / "vocab.txt").write_bytes(corpus.reduce_payload("os", "system", proto=0))
    assert "os.system" in {f.callable for f in scan(root).findings if f.severity == "critical"}


def test_unknown_binary_empty_and_special_files(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    (root / "model.safetensors").write_bytes(
        corpus.safetensors_raw(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\x00" * 4)
    )
    (root / ".lock").write_bytes(b"")
    assert scan(root).safe
    (root / "blob.dat").write_bytes(bytes(range(256)) * 3)  # binary, no known format
    report = scan(root)
    assert report.exit_code == 2
    assert [Path(f.path).name for f in report.files if f.status == "unreadable"] == ["blob.dat"]
    (root / "blob.dat").unlink()
    os.mkfifo(root / "pipe")  # must not block the scan
    fifo = next(f for f in scan(root).files if f.path.endswith("pipe"))
    assert fifo.unreadable_reason == "not a regular file (a device, pipe or socket)"


def test_empty_directory_and_directory_links(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    report = scan(empty)
    assert report.exit_code == 2 and report.files[0].format == "directory"
    root = tmp_path / "linked"
    root.mkdir()
    (root / "config.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.bin").write_bytes(corpus.reduce_payload("os", "system"))
    (root / "weights").symlink_to(elsewhere, target_is_directory=True)
    report = scan(root)
    top = report.files[0]
    assert top.format == "directory" and top.status == "unsafe"
    assert top.findings[0].member == "weights" and "not followed" in top.findings[0].message


def test_symlinked_files_are_read_like_the_hub_cache(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "abc123").write_bytes(corpus.reduce_payload("os", "system"))
    snap = tmp_path / "snapshots" / "rev"
    snap.mkdir(parents=True)
    (snap / "pytorch_model.bin").symlink_to(Path("../../blobs/abc123"))
    (snap / "model.bin.index.json").write_text(json.dumps({"weight_map": {"w": "pytorch_model.bin"}}))
    report = scan(snap)
    assert "os.system" in {f.callable for f in report.findings}
    index = next(f for f in report.files if f.format == "index-json")
    assert index.status == "safe"  # a symlinked shard is inside the set: the loader opens that name


def test_cli_lists_every_file_in_json(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run(["model", "scan", str(hf_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = {Path(f["path"]).name for f in doc["files"]}
    assert doc["safe"] is True and {"config.json", "model.safetensors.index.json", "tokenizer.json"} <= names
    assert all(f["status"] == "safe" and "findings" in f for f in doc["files"])
    _bin_shards(tmp_path / "ckpt", {"layer0.weight": "../x.bin"})
    assert run(["model", "scan", str(tmp_path / "ckpt"), str(hf_dir)]) == 1
    out = capsys.readouterr().out
    assert "UNSAFE" in out and "pytorch_model.bin.index.json" in out and "1 unsafe" in out
