"""Ownership watermarks: white-box (bits in a symmetry-invariant carrier of the weights, after
Uchida et al. 2017) and black-box (a secret trigger set: keyed patterns on in-distribution inputs,
or noise triggers after Adi et al. 2018), each with an exact significance test.

Embed with a ``watermark:`` training-config section (``make_regularizer``) or ``embed`` on a
trained model; verify with ``verify_whitebox`` (weights) or ``verify_trigger`` (predictions
only). The record that describes a mark is public; its secret is sealed under the master key.
"""

from torchshield.model.watermark.record import WatermarkRecord, read_record, write_record
from torchshield.model.watermark.significance import (
    DEFAULT_P_THRESHOLD,
    Verdict,
    binomial_p_value,
    grouped_p_value,
)
from torchshield.model.watermark.training import embed, make_regularizer
from torchshield.model.watermark.trigger import (
    TriggerRegularizer,
    TriggerSet,
    model_predictor,
    new_trigger_mark,
    verify_trigger,
)
from torchshield.model.watermark.whitebox import (
    WhiteboxRegularizer,
    extract_bits,
    new_whitebox_mark,
    verify_whitebox,
)

__all__ = [
    "DEFAULT_P_THRESHOLD",
    "TriggerRegularizer",
    "TriggerSet",
    "Verdict",
    "WatermarkRecord",
    "WhiteboxRegularizer",
    "binomial_p_value",
    "embed",
    "extract_bits",
    "grouped_p_value",
    "make_regularizer",
    "model_predictor",
    "new_trigger_mark",
    "new_whitebox_mark",
    "read_record",
    "verify_trigger",
    "verify_whitebox",
    "write_record",
]
