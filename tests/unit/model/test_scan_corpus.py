"""The scanner against the threat catalogue (model-threats.md) and against real benign files."""

from __future__ import annotations
import __future__

import collections
import datetime
import pickle
from pathlib import Path

import numpy as np
import pytest
import scan_corpus as corpus
import torch

from torchshield.model.scan import scan

MALICIOUS = corpus.malicious()


@pytest.fixture(scope="module")
def malicious_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("malicious")
    return {sample.ident: path for sample, path in corpus.write_all(MALICIOUS, folder)}


@pytest.mark.parametrize("sample", MALICIOUS, ids=[s.ident for s in MALICIOUS])
def test_malicious_sample_is_flagged(sample: corpus.Sample, malicious_files: dict[str, Path]) -> None:
    report = scan(malicious_files[sample.ident])
    file = report.files[0]
    assert not report.safe and report.exit_code == 1, (file.status, file.findings)
    assert file.status == "unsafe"
    if sample.expect == "unsafe":
        critical = {f.callable for f in file.findings if f.severity == "critical"}
        assert sample.callable in critical, [(f.severity, f.callable, f.message) for f in file.findings]
        hit = next(f for f in file.findings if f.callable == sample.callable)
        assert hit.offset is not None and hit.offset >= 0 and hit.file == str(malicious_files[sample.ident])


def test_finding_names_member_offset_and_callable(tmp_path: Path) -> None:
    payload = corpus.reduce_payload("os", "system", proto=2)
    path = tmp_path / "model.pt"
    path.write_bytes(corpus.torch_zip(payload))
    finding = next(f for f in scan(path).findings if f.severity == "critical")
    assert finding.member == "archive/data.pkl"
    assert finding.callable == "os.system"
    assert finding.offset == payload.index(b"cos\n")  # the GLOBAL opcode that imports it
    assert "REDUCE@" in finding.message


def test_nested_pickle_payload_is_scanned_in_place(malicious_files: dict[str, Path]) -> None:
    findings = scan(malicious_files["C1-pickle.loads"]).findings
    inner = [f for f in findings if f.callable == "os.system"]
    assert inner and "pickle.loads argument" in (inner[0].member or "")


def test_nested_zip_member_path(malicious_files: dict[str, Path]) -> None:
    finding = next(f for f in scan(malicious_files["nested-zip"]).findings if f.callable == "os.system")
    assert finding.member == "model/inner.pt > archive/data.pkl"


def test_zip_differentials_are_reported(malicious_files: dict[str, Path]) -> None:
    kinds = {
        ident: " ".join(f.message for f in scan(malicious_files[ident]).findings)
        for ident in ("E2-flag-0x1", "E3-crc", "E4-central-name")
    }
    assert "flag 0x1" in kinds["E2-flag-0x1"]
    assert "CRC-32 mismatch" in kinds["E3-crc"]
    assert "local header names" in kinds["E4-central-name"]


@pytest.mark.parametrize("name", sorted(corpus.malformed_safetensors()))
def test_malformed_safetensors_rejected(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(corpus.malformed_safetensors()[name])
    report = scan(path)
    assert report.files[0].status == "unreadable" and report.exit_code == 2
    assert "malformed safetensors" in (report.files[0].unreadable_reason or "")


# -- benign controls: no false positives ---------------------------------------------------
def _benign(folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)
    )
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    tensors = {
        "f32": torch.randn(5, 3),
        "f16": torch.randn(4).half(),
        "bf16": torch.randn(4).bfloat16(),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "i64": torch.arange(10),
        "bool": torch.tensor([True, False]),
        "empty": torch.empty(0),
        "scalar": torch.tensor(3.5),
        "view": torch.randn(4, 4).t(),
        "c64": torch.randn(3, dtype=torch.complex64),
        "u8": torch.arange(4, dtype=torch.uint8),
        "param": torch.nn.Parameter(torch.randn(2)),
    }
    objects = {
        "state_dict.pt": net.state_dict(),
        "dtypes.pt": tensors,
        "checkpoint.pt": {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": 3,
            "loss": 0.25,
            "shape": torch.Size([3, 4]),
            "counts": collections.Counter("aab"),
            "device": torch.device("cpu"),
            "dtype": torch.float16,
            "tags": {"a", "b"},
        },
        "shared.pt": {"a": (t := torch.randn(10)), "b": t[2:5]},
    }
    paths: dict[str, Path] = {}
    for name, obj in objects.items():
        paths[name] = folder / name
        torch.save(obj, paths[name])
        legacy = folder / f"legacy_{name}"
        torch.save(obj, legacy, _use_new_zipfile_serialization=False)
        paths[legacy.name] = legacy
    for proto in (2, 4, 5):
        p = folder / f"proto{proto}.pt"
        torch.save(net.state_dict(), p, pickle_protocol=proto)
        paths[p.name] = p
    np.save(folder / "arr.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(folder / "strings.npy", np.array(["x", "yz", None], dtype=object), allow_pickle=True)
    np.save(folder / "structured.npy", np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]))
    np.savez(folder / "arrays.npz", a=np.arange(3), b=np.eye(2))
    np.savez_compressed(folder / "compressed.npz", a=np.zeros((100, 100)), s=np.array([1, "a"], dtype=object))
    rng_state = {
        "rng": np.random.default_rng(0),
        "legacy": np.random.RandomState(1),
        "x": np.float32(2.0),
        "arr": np.arange(3),
    }
    for proto in (2, 4):
        p = folder / f"numpy_objects_p{proto}.pkl"
        p.write_bytes(pickle.dumps(rng_state, protocol=proto))
    (folder / "plain.pkl").write_bytes(pickle.dumps(collections.OrderedDict(a=1, b=[1.5, "x"]), protocol=0))
    stdlib = {
        "future": __future__.annotations,
        "when": datetime.datetime(2020, 1, 1),
        "frac": slice(1, 2),
        "z": 1j,
        "fs": frozenset({1}),
        "ba": bytearray(b"ab"),
    }
    for proto in (0, 2, 5):
        (folder / f"stdlib_p{proto}.pkl").write_bytes(pickle.dumps(stdlib, protocol=proto))
        paths[f"stdlib_p{proto}.pkl"] = folder / f"stdlib_p{proto}.pkl"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items() if k != "param"}, folder / "model.safetensors")
    save_file({}, folder / "empty.safetensors")
    for name in (
        "arr.npy",
        "strings.npy",
        "structured.npy",
        "arrays.npz",
        "compressed.npz",
        "plain.pkl",
        "numpy_objects_p2.pkl",
        "numpy_objects_p4.pkl",
        "model.safetensors",
        "empty.safetensors",
    ):
        paths[name] = folder / name
    return paths


@pytest.fixture(scope="module")
def benign_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _benign(tmp_path_factory.mktemp("benign"))


def test_benign_files_are_safe(benign_files: dict[str, Path]) -> None:
    report = scan(list(benign_files.values()))
    problems = {
        f.path: [
            (x.severity, x.callable, x.message) for x in f.findings if x.severity in ("critical", "high")
        ]
        for f in report.files
        if f.status != "safe"
    }
    assert problems == {}
    assert report.safe and report.exit_code == 0
    formats = {Path(f.path).name: f.format for f in report.files}
    assert formats["state_dict.pt"] == "torch-zip" and formats["legacy_state_dict.pt"] == "torch-legacy"
    assert formats["arrays.npz"] == "npz" and formats["model.safetensors"] == "safetensors"
    assert all(f.pickles >= 1 for f in report.files if f.format in ("torch-zip", "torch-legacy"))


def test_whole_module_is_suspicious_not_critical(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    findings = scan(path).findings
    assert findings and {f.severity for f in findings} == {"high"}
    assert "torch.nn.modules.linear.Linear" in {f.callable for f in findings}
    assert scan(path, allow=["torch.nn.modules.*"]).safe


def test_allow_does_not_widen_to_dangerous_by_wildcard(tmp_path: Path) -> None:
    path = tmp_path / "a.pkl"
    path.write_bytes(corpus.reduce_payload("os", "system"))
    assert not scan(path, allow=["os.*"]).safe
    assert scan(path, allow=["os.system"]).safe  # an exact name is the user's explicit decision


def test_torchscript_archive_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    file = scan(path).files[0]
    assert file.format == "torchscript" and file.status == "unsafe"
    assert any(f.kind == "torchscript" for f in file.findings)
    assert not any(f.severity == "critical" for f in file.findings)


def test_bundle_is_inspected(tmp_path: Path) -> None:
    import torchshield

    path = tmp_path / "m.tsb"
    torchshield.save({"w": torch.randn(3)}, path)
    assert scan(path).files[0].format == "tsb" and scan(path).safe
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # damage the trailer
    path.write_bytes(bytes(data))
    file = scan(path).files[0]
    assert file.status == "unreadable" and "bundle" in (file.unreadable_reason or "")


def _keras(layers: list[dict[str, object]]) -> bytes:
    import io
    import json
    import zipfile

    config = {"class_name": "Sequential", "config": {"layers": layers}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 32)
    return buf.getvalue()


def test_keras_archives(tmp_path: Path) -> None:
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}}
    lam = {"module": "keras.layers", "class_name": "Lambda", "config": {"function": {"code": "4wEAAA=="}}}
    func = {
        "module": "keras.layers",
        "class_name": "Activation",
        "config": {
            "activation": {
                "module": "os",
                "class_name": "function",
                "config": "system",
                "registered_name": "function",
            }
        },
    }
    cases = {
        "benign.keras": ([dense], "safe"),
        "lambda.keras": ([dense, lam], "keras.layers.Lambda"),
        "function.keras": ([func], "os.system"),
    }
    for name, (layers, expect) in cases.items():
        (tmp_path / name).write_bytes(_keras(layers))
        file = scan(tmp_path / name).files[0]
        assert file.format == "keras"
        if expect == "safe":
            assert file.status == "safe"
        else:
            assert file.status == "unsafe" and expect in {
                f.callable for f in file.findings if f.severity == "critical"
            }
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    assert "HDF5" in (scan(tmp_path / "model.h5").files[0].unreadable_reason or "")
