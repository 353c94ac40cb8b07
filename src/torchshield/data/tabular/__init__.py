"""Tables: streaming readers/writers with encoding detection, file-level mask and scan,
k-anonymity with l-diversity and risk metrics."""

from torchshield.data.tabular.io import (
    FORMATS,
    count_rows,
    detect_encoding,
    detect_format,
    iter_chunks,
    open_writer,
    read_table,
    write_table,
)
from torchshield.data.tabular.kanon import KAnonResult, QuasiIdentifier, kanonymize, risk_metrics
from torchshield.data.tabular.mask import mask_file, sidecar_paths
from torchshield.data.tabular.scan import scan_file, scan_frame

__all__ = [
    "FORMATS",
    "KAnonResult",
    "QuasiIdentifier",
    "count_rows",
    "detect_encoding",
    "detect_format",
    "iter_chunks",
    "kanonymize",
    "mask_file",
    "open_writer",
    "read_table",
    "risk_metrics",
    "scan_file",
    "scan_frame",
    "sidecar_paths",
    "write_table",
]
