"""A model directory scanned as one set: a Hugging Face model folder, a sharded checkpoint.

Every regular file under the directory is scanned (``.git`` is skipped: no model loader reads
it). Model formats are routed by content exactly as for a single file; what is not a model
format is accepted as inert data only when its content proves it: JSON that parses, UTF-8
text, an image, a protobuf message (sentencepiece ``tokenizer.model``, ONNX), an empty file.
Anything else stays ``unreadable`` and the set cannot be called safe.

The set adds what no single file shows:

* shard indexes (any JSON object with a ``weight_map``, e.g. ``model.safetensors.index.json``,
  ``pytorch_model.bin.index.json``) are validated as data: every entry must be a relative path
  that stays inside the directory (no ``..``, no absolute or drive path), and every shard it
  names must be present, so that what the loader opens is what was scanned;
* code the loader can be told to run: ``*.py`` sources and ``auto_map`` entries in a JSON
  config (transformers imports them with ``trust_remote_code=True``; an entry with ``--``
  fetches code from another repository). Both are ``high``; ``--allow trust_remote_code``
  (named exactly) accepts them;
* Keras configs (a JSON object with ``class_name`` and ``config``) are judged like the config
  of a ``.keras`` archive.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from torchshield.model.scan.allowlist import HIGH, Allowlist
from torchshield.model.scan.formats import Limits, open_regular, scan_file
from torchshield.model.scan.keras import config_findings
from torchshield.model.scan.pickle_ops import MEDIUM
from torchshield.model.scan.report import FileReport, Finding

__all__ = ["REMOTE_CODE", "scan_directory"]

REMOTE_CODE = "trust_remote_code"  # the exact --allow name that accepts custom code in a directory
_SKIP_DIRS = frozenset({".git"})
_MAX_JSON = 256 << 20
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
)
_DRIVE = re.compile(r"^[A-Za-z]:")
_TEXT_SUFFIXES = frozenset(
    {
        ".txt",
        ".md",
        ".rst",
        ".py",
        ".json",
        ".jsonl",
        ".yaml",
        ".yml",
        ".csv",
        ".tsv",
        ".cfg",
        ".ini",
        ".toml",
    }
    | {".jinja", ".j2", ".html"}
)
_JSON_KEYS = ("weight_map", "auto_map", "class_name")


def scan_directory(root: Path, allow: Allowlist, limits: Limits) -> list[FileReport]:
    """One report per file under ``root`` (sorted), plus one for ``root`` itself when the set
    has a finding of its own (a file cap reached, a directory link not followed) or no files."""
    files, set_findings = _walk(root, limits)
    scanned = [_scan_member(path, root, allow, limits) for path in files]
    reports = [report for report, _doc in scanned]
    by_path = {Path(os.path.normpath(r.path)): r for r in reports}
    for report, doc in scanned:
        if doc is not None:
            _check_json(doc, Path(report.path), root, by_path, report, allow)
    if set_findings or not files:
        top = FileReport(path=str(root), format="directory", findings=set_findings)
        if not files and not set_findings:
            top.unreadable_reason = "empty directory: no files to scan"
        reports.insert(0, top)
    return reports


def _walk(root: Path, limits: Limits) -> tuple[list[Path], list[Finding]]:
    files: list[Path] = []
    findings: list[Finding] = []
    for here, dirs, names in os.walk(root, followlinks=False):
        base = Path(here)
        for d in sorted(dirs):
            if (base / d).is_symlink():
                findings.append(
                    Finding(
                        str(root),
                        HIGH,
                        "unscannable",
                        "symbolic link to a directory, not followed: the files a loader reads "
                        "through it were not scanned",
                        member=str((base / d).relative_to(root)),
                    )
                )
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not (base / d).is_symlink())
        for name in sorted(names):
            if len(files) >= limits.max_members:
                findings.append(
                    Finding(
                        str(root),
                        HIGH,
                        "limit",
                        f"more than {limits.max_members} files in the directory: the rest were not scanned",
                    )
                )
                return files, findings
            files.append(base / name)
    return files, findings


def _scan_member(
    path: Path, root: Path, allow: Allowlist, limits: Limits
) -> tuple[FileReport, dict[str, Any] | None]:
    """The file's report, and its JSON object when that says something about the set."""
    report = scan_file(path, allow, limits)
    doc = None
    if report.unreadable_reason == "empty file":
        report.unreadable_reason, report.format = None, "empty"
    elif report.format == "unknown" and report.unreadable_reason is not None and not report.findings:
        kind, doc = _data_format(path, limits)
        if kind is not None:
            report.format, report.unreadable_reason = kind, None
    elif report.format == "pickle" and _text_misread_as_pickle(path, report):
        names = sorted({f.callable for f in report.findings if f.callable})
        report.findings = [
            Finding(
                report.path,
                "low",
                "structure",
                f"text file that begins like a protocol-0 pickle and breaks off (it would import "
                f"{', '.join(names) or 'nothing'} if unpickled; no loader unpickles a {path.suffix} file)",
            )
        ]
        report.format, report.unreadable_reason = "text", None
    if path.suffix == ".py" and not allow.allowed_by_user(REMOTE_CODE):
        report.findings.insert(
            0,
            Finding(
                report.path,
                HIGH,
                "remote-code",
                "Python source in a model directory: transformers imports and runs it when the "
                "model is loaded with trust_remote_code=True; review it or pass --allow trust_remote_code",
                callable=str(path.relative_to(root)),
            ),
        )
    return report, doc


def _text_misread_as_pickle(path: Path, report: FileReport) -> bool:
    """A text file (``import torch``, ``class Foo``) whose first bytes are GLOBAL/INST opcodes.

    Only for text suffixes no loader unpickles, only when the reading broke off (no STOP: the
    bytes are not a pickle) and nothing critical was named; the content must be UTF-8 text."""
    if path.suffix.lower() not in _TEXT_SUFFIXES:
        return False
    if any(f.severity == "critical" for f in report.findings):
        return False
    if not any(f.kind == "unreadable" for f in report.findings):
        return False
    try:
        fh = open_regular(path)
        if fh is None:
            return False
        with fh:
            return _is_text(fh)
    except OSError:
        return False


# -- inert data, proven by content --------------------------------------------------------
def _data_format(path: Path, limits: Limits) -> tuple[str | None, dict[str, Any] | None]:
    """The kind of inert data the file holds (None: not proven), and its JSON object when it
    has a key that speaks about the set (a shard index, an auto_map, a Keras config)."""
    try:
        fh = open_regular(path)
        if fh is None:
            return None, None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(4096)
            for magic, kind in _IMAGE_MAGIC:
                if head.startswith(magic):
                    return kind, None
            if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
                return "image", None
            if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[") and size <= _MAX_JSON:
                fh.seek(0)
                try:
                    doc = json.loads(fh.read().decode("utf-8-sig"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    pass
                else:
                    keep = isinstance(doc, dict) and any(k in doc for k in _JSON_KEYS)
                    return "json", doc if keep else None
            fh.seek(0)
            if _is_text(fh):
                return "text", None
            if size <= limits.max_bytes:
                fh.seek(0)
                if _is_protobuf(fh.read()):
                    return "protobuf", None
    except OSError:
        pass
    return None, None


def _is_text(fh: Any) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    while True:
        chunk = fh.read(1 << 20)
        if not chunk:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                return False
            return True
        if b"\x00" in chunk:
            return False
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            return False


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("bad varint")


def _is_protobuf(data: bytes) -> bool:
    """True when the bytes parse, to the last byte, as the fields of one protobuf message."""
    if not data:
        return False
    pos, end = 0, len(data)
    try:
        while pos < end:
            key, pos = _varint(data, pos)
            wire, number = key & 7, key >> 3
            if number == 0:
                return False
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                n, pos = _varint(data, pos)
                pos += n
            else:
                return False
            if pos > end:
                return False
    except ValueError:
        return False
    return True


# -- what a JSON file in the set says about the set ----------------------------------------
def _check_json(
    doc: dict[str, Any],
    path: Path,
    root: Path,
    files: dict[Path, FileReport],
    report: FileReport,
    allow: Allowlist,
) -> None:
    if "weight_map" in doc:
        report.format = "index-json"
        _check_index(doc, path, root, files, report)
    if "auto_map" in doc and not allow.allowed_by_user(REMOTE_CODE):
        _check_auto_map(doc["auto_map"], report)
    if "class_name" in doc and "config" in doc:
        for severity, message, name in config_findings(doc, allow):
            report.findings.append(Finding(report.path, severity, "import", message, callable=name))


def _check_index(
    doc: dict[str, Any], path: Path, root: Path, files: dict[Path, FileReport], report: FileReport
) -> None:
    def add(severity: str, kind: str, message: str) -> None:
        report.findings.append(Finding(report.path, severity, kind, message))

    weight_map, metadata = doc["weight_map"], doc.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        add(MEDIUM, "structure", "shard index: 'metadata' must be a JSON object")
    if not isinstance(weight_map, dict):
        add(HIGH, "structure", "shard index: 'weight_map' must map tensor names to shard file names")
        return
    shards: dict[str, int] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            add(HIGH, "structure", f"shard index: entry {name!r} is not a file name")
            continue
        shards[shard] = shards.get(shard, 0) + 1
    for shard, count in sorted(shards.items()):
        problem = _shard_path_problem(shard)
        target = path.parent / shard
        if problem is None and not _inside(target, root):
            problem = "resolves outside the scanned directory"
        if problem is not None:
            add(
                HIGH,
                "structure",
                f"shard index: {count} tensor(s) point to {shard!r}, which {problem} (path traversal): "
                "the loader would open a file this scan did not cover",
            )
            continue
        if Path(os.path.normpath(target)) not in files:
            add(
                HIGH,
                "unscannable",
                f"shard index: {count} tensor(s) point to {shard!r}, which is not in the directory: "
                "not scanned (the loader fetches or fails on it)",
            )


def _shard_path_problem(shard: str) -> str | None:
    if not shard or "\x00" in shard:
        return "is empty or holds a NUL byte"
    if shard.startswith(("/", "\\")) or _DRIVE.match(shard):
        return "is an absolute path"
    parts = re.split(r"[\\/]", shard)
    if ".." in parts:
        return "climbs out with '..'"
    return None


def _inside(target: Path, root: Path) -> bool:
    """Lexical containment (symlinked shards, as in the Hugging Face cache, are followed when read)."""
    normal = PurePosixPath(os.path.normpath(target))
    base = PurePosixPath(os.path.normpath(root))
    return normal == base or base in normal.parents


def _check_auto_map(auto_map: Any, report: FileReport) -> None:
    refs: list[str] = []
    todo = [auto_map]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, str):
            refs.append(node)
    for ref in sorted(set(refs)):
        remote = "--" in ref
        where = (
            f"code from the repository {ref.split('--', 1)[0]!r}, downloaded at load time"
            if remote
            else "a Python file of this directory"
        )
        report.findings.append(
            Finding(
                report.path,
                HIGH,
                "remote-code",
                f"auto_map names custom code {ref!r} ({where}): transformers imports and runs it "
                "when the model is loaded with trust_remote_code=True; review it or pass "
                "--allow trust_remote_code",
                callable=ref,
            )
        )
