"""Static scanner for model files that can run code when loaded.

``scan(path)`` reads pickles (every protocol, concatenated streams), torch zip checkpoints
(every pickle member, stored or deflated, nested archives), torch's legacy formats, NumPy
``.npy``/``.npz`` object arrays, safetensors headers, Keras configs (``.keras``, ``.h5``) and
``.tsb`` bundles, and reports every imported name that is not on the allowlist. A directory
(a Hugging Face model folder, a sharded checkpoint) is scanned as one set (``directory``).

Threat model: the file comes from someone we do not trust. The scanner never imports a module
named in the file and never unpickles; it walks opcodes symbolically (``pickle_ops``), reads
containers the way ``torch.load`` does rather than the way Python's ``zipfile`` does (so a
parser differential cannot hide a payload), and bounds time and memory on hostile input (caps
on decompressed bytes, compression ratio, members, nesting). What it cannot see: code run by
classes the allowlist accepts if those classes themselves were compromised on the loading
machine, and payloads in formats it reports as unscannable (7z, rar, encrypted members).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from torchshield.model.scan.allowlist import Allowlist
from torchshield.model.scan.directory import scan_directory
from torchshield.model.scan.formats import IS_A_DIRECTORY, Limits, scan_file
from torchshield.model.scan.report import FileReport, Finding, ScanReport

__all__ = ["FileReport", "Finding", "Limits", "ScanReport", "scan"]

PathLike = str | os.PathLike[str]


def scan(
    path: PathLike | Iterable[PathLike], *, allow: Iterable[str] = (), limits: Limits | None = None
) -> ScanReport:
    """Scan model files or model directories without running anything in them.

    A directory is scanned as one set: every file under it gets its own ``FileReport`` in the
    one returned report (``report.safe`` / ``report.exit_code`` is the set's verdict), and shard
    indexes are checked against the files present (see ``torchshield.model.scan.directory``).
    ``allow`` names extra globals to accept (``"mypkg.MyModel"``, or ``"mypkg.*"`` for a whole
    package); a known-dangerous name is accepted only when named exactly. Never raises for a
    bad file: a missing, empty or unparseable file is reported with status ``unreadable``.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    allowlist = Allowlist(allow)
    lim = limits or Limits()
    files: list[FileReport] = []
    for p in paths:
        report = scan_file(p, allowlist, lim)  # one open + fstat; a directory is told apart there
        if report.unreadable_reason == IS_A_DIRECTORY:
            files.extend(scan_directory(Path(p), allowlist, lim))
        else:
            files.append(report)
    return ScanReport(files=files)
