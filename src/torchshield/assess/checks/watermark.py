"""Is the owner's mark in the model? Read the bundle's watermark record and, with the owner's
key, verify it (white-box: bits in the weights; trigger set: the secret queries' labels).

Verification needs the key because the record's secret is sealed under it; without the key the
report says a record is present, which proves nothing on its own (anyone can copy a record)."""

from __future__ import annotations

from torchshield.assess.checks.capability import require
from torchshield.assess.context import AssessContext
from torchshield.assess.findings import FAIL, PASS, SKIPPED, WARN, Section

__all__ = ["check_watermark"]


def check_watermark(ctx: AssessContext) -> Section:
    s = Section("watermark", "Ownership watermark")
    doc = ctx.manifest.get("watermark")
    if not isinstance(doc, dict):
        s.add(
            "record",
            WARN,
            "the bundle carries no watermark record: ownership of a leaked copy cannot be shown",
            "embed one: torchshield model watermark embed MODEL --key-file master.key",
        )
        return s
    wm = require("torchshield.model.watermark", "watermark verification")
    record = wm.WatermarkRecord.from_dict(doc, where="the bundle's watermark record")
    s.metrics.update(
        {
            "method": record.method,
            "mark_id": record.mark_id,
            "threshold": record.threshold,
            "record_key_id": record.key_id,
        }
    )
    if ctx.inputs.key is None:
        s.add(
            "verify",
            SKIPPED,
            f"a {record.method} watermark record is present; verifying it needs the owner's key",
            "pass --key-file with the key used to embed it",
        )
        return s
    if record.method == "whitebox":
        verdict = wm.verify_whitebox(ctx.tensors, record, ctx.inputs.key)
    else:
        verdict = wm.verify_trigger(wm.model_predictor(ctx.subject.module), record, ctx.inputs.key)
    s.metrics.update(
        {k: v for k, v in verdict.to_dict().items() if k not in {"method", "mark_id", "threshold"}}
    )
    what = (
        f"{verdict.matches}/{verdict.total} {'bits' if record.method == 'whitebox' else 'triggers'} agree "
        f"(p = {verdict.p_value:.2e}, threshold {verdict.threshold:g})"
    )
    if verdict.present:
        s.add("verify", PASS, "the owner's mark is present: " + what)
    else:
        s.add(
            "verify",
            FAIL,
            "the mark named by the record is absent: " + what,
            "this is not the marked model, or the mark was removed (fine-tuning, pruning); investigate",
        )
    return s
