"""File safety (the static scanner), integrity, signature and encryption of the model file.

Threat model: the file may come from someone we do not trust. The scan never loads it; the
signature check says who made it only when the reviewer names the expected public key, since a
signature checked against the key embedded in the file proves integrity, not origin."""

from __future__ import annotations

from torchshield.assess.context import AssessContext
from torchshield.assess.findings import FAIL, PASS, WARN, Section
from torchshield.errors import CheckFailed

__all__ = ["check_model_file"]


def check_model_file(ctx: AssessContext) -> Section:
    from torchshield.model.bundle import is_bundle, verify
    from torchshield.model.scan import scan

    s = Section("model-file", "File safety and signature")
    path = ctx.inputs.model
    report = scan(path).files[0]
    s.metrics.update(
        {
            "file": path.name,
            "format": report.format,
            "size_bytes": report.size,
            "scan_status": report.status,
            "scan_findings": len(report.findings),
        }
    )
    if report.status == "unsafe":
        names = sorted({f.callable for f in report.findings if f.callable})[:5]
        s.add(
            "scan",
            FAIL,
            f"the file can run code when loaded ({len(report.findings)} findings"
            + (f", e.g. {', '.join(names)}" if names else "")
            + ")",
            "do not load it; ask its producer for a .tsb or safetensors file and rescan",
            findings=[f.to_dict() for f in report.findings[:20]],
        )
    elif report.status == "unreadable":
        s.add(
            "scan",
            FAIL,
            f"the scanner could not read the file ({report.unreadable_reason})",
            "check the path and format; an unscannable file must not be loaded",
        )
    else:
        s.add("scan", PASS, f"no code-running content ({report.format}, {report.size} bytes)")
    if not is_bundle(path):
        s.add(
            "bundle",
            WARN,
            "not a torchshield bundle: no manifest, digest, signature or encryption to check",
            "convert it: torchshield model protect MODEL --out model.tsb --sign signer.key --key-file K",
        )
        return s
    res = verify(path, pubkey=ctx.inputs.pubkey, key=ctx.inputs.key)
    signature = [p for p in res.problems if _is_signature_problem(p)]
    integrity = [p for p in res.problems if p not in signature]
    if integrity:
        s.add(
            "integrity",
            FAIL,
            integrity[0],
            "restore the file from a trusted copy (torchshield store restore)",
        )
        try:
            ctx.info  # noqa: B018 - a bundle whose structure is broken has nothing more to check
        except CheckFailed:
            return s
    info = ctx.info
    s.metrics.update(
        {
            "signed": info.signed,
            "signer": info.signer,
            "encrypted": info.encrypted,
            "key_id": info.key_id,
            "created": info.manifest.get("created"),
            "tool": info.manifest.get("tool"),
            "tensors": len(info.tensors),
        }
    )
    if not integrity:
        s.add(
            "integrity",
            PASS,
            "the tensor data matches the bundle's digests"
            + (" and every encrypted chunk authenticates" if res.decrypted else ""),
        )
    _signature(s, res.signed, res.signer, signature, ctx.inputs.pubkey is not None)
    if info.encrypted:
        s.add("encryption", PASS, f"tensor data is encrypted (AES-256-GCM stream) under key id {info.key_id}")
    else:
        s.add(
            "encryption",
            WARN,
            "weights are stored in clear: anyone with the file has the model",
            "encrypt it: torchshield model protect MODEL --key-file master.key",
        )
    return s


def _is_signature_problem(message: str) -> bool:
    m = message.lower()
    return "signature" in m or "signed by" in m or "is not signed" in m


def _signature(s: Section, signed: bool, signer: str | None, problems: list[str], pinned: bool) -> None:
    if problems:
        s.add("signature", FAIL, problems[0], "do not deploy it; get a bundle signed by the expected signer")
    elif not signed:
        s.add(
            "signature",
            WARN,
            "the bundle is not signed, so nothing proves who made it",
            "sign it: torchshield model protect MODEL --sign signer.key",
        )
    elif pinned:
        s.add("signature", PASS, f"signed by the expected signer {signer}")
    else:
        s.add(
            "signature",
            WARN,
            f"the signature is valid for the key embedded in the file ({signer}), "
            "which proves integrity but not origin",
            "pass --pubkey signer.pub to check who signed it",
        )
