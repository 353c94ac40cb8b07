"""`torchshield data`: find PII in tables and text, de-identify it, release under k-anonymity.

Commands: scan, find, mask, unmask, kanon, generate. The privacy engineer's `data query`
(issue 4) plugs into this group through ``torchshield.cli.data_query_cmd.register_into``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, progress
from torchshield.errors import InputError

__all__ = ["register"]

data_app = typer.Typer(help="Find PII, de-identify tables and text, release under k-anonymity.",
                       no_args_is_help=True)

_KEY_FILE = typer.Option(None, "--key-file", "-k", help="Master key file (else $TORCHSHIELD_KEY / _KEY_FILE).")
_ENCODING = typer.Option(None, "--encoding", help="Input text encoding (default: detect UTF-8/UTF-8-BOM/GB18030).")
_FORMAT = typer.Option(None, "--format", help="Input format: csv, tsv, parquet, jsonl, txt (default: from suffix).")
_ENGINE = typer.Option("local", "--engine",
                       help="local (this process, the default) or spark (Apache Spark; pip install 'torchshield[cluster]').")
_SPARK_MASTER = typer.Option(None, "--spark-master",
                             help="Spark master URL with --engine spark (default: local[WORKERS]).")


def _key(key_file: Path | None, *, required: bool) -> Any:
    from torchshield.crypto.keys import resolve_master_key

    return resolve_master_key(key_file=key_file, required=required)


@data_app.command("scan")
def scan(path: Path = typer.Argument(..., help="CSV/TSV/Parquet/JSONL/text file."),
         sample: int = typer.Option(2000, "--sample", help="Rows to scan from the start of the file."),
         full: bool = typer.Option(False, "--full", help="Scan every row (slower on big files)."),
         min_score: float = typer.Option(0.5, "--min-score", help="Detector threshold in [0, 1]."),
         encoding: str | None = _ENCODING, fmt: str | None = _FORMAT,
         engine: str = _ENGINE,
         workers: int = typer.Option(2, "--workers", "-j", help="Spark local workers (with --engine spark)."),
         spark_master: str | None = _SPARK_MASTER, as_json: bool = JSON_OPTION) -> None:
    """Show, per column, which PII types it holds and how often (no values are printed)."""
    from torchshield.data.cluster import make_engine
    from torchshield.data.tabular import scan_file

    if sample < 1 or workers < 1:
        raise InputError("--sample and --workers must be at least 1")
    eng = make_engine(engine, workers=workers, master=spark_master)
    try:
        result = scan_file(path, sample_rows=None if full else sample, encoding=encoding, fmt=fmt,
                           min_score=min_score, engine=eng)
    finally:
        if eng is not None:
            eng.close()

    def human(c: Any) -> None:
        from rich.table import Table

        c.print(f"{result['file']}: {result['rows_scanned']} of {result['rows_total']} rows scanned"
                f"{' (sample)' if result['sampled'] else ''}, encoding {result['encoding'] or 'binary'}"
                + (f", on {result['engine']['name']} {result['engine']['master']}" if "engine" in result else ""))
        t = Table("column", "kind", "class", "PII types (cells with it / findings)")
        for col, info in result["columns"].items():
            types = ", ".join(f"{k} {v['cells']}/{v['findings']} ({v['fraction']:.0%})"
                              for k, v in sorted(info["types"].items(), key=lambda kv: -kv[1]["cells"]))
            t.add_row(col, info["kind"], info["identifier_class"], types or "-")
        c.print(t)

    emit(result, human, as_json=as_json)


@data_app.command("find")
def find(text: str | None = typer.Argument(None, help="Text to scan (default: read stdin)."),
         lang: str | None = typer.Option(None, "--lang", help="zh or en (default: detect)."),
         min_score: float = typer.Option(0.5, "--min-score"),
         show_text: bool = typer.Option(False, "--show-text", help="Print the matched text (it is PII)."),
         as_json: bool = JSON_OPTION) -> None:
    """Find PII in one text; exit 1 if any is found (useful as a pre-commit or CI check)."""
    from torchshield.cli.output import fail
    from torchshield.data import find_pii

    body = text if text is not None else sys.stdin.read()
    findings = find_pii(body, lang=lang, min_score=min_score)
    data = [f.to_dict(redact=not show_text) for f in findings]

    def human(c: Any) -> None:
        for f in findings:
            c.print(f"{f.type:<20} [{f.start}:{f.end}] score {f.score:.2f}" + (f"  {f.text}" if show_text else ""))
        if not findings:
            c.print("no PII found")

    emit({"findings": data}, human, as_json=as_json)
    if findings:
        fail(1)


@data_app.command("mask")
def mask(path: Path = typer.Argument(..., help="Input table or text file."),
         out: Path = typer.Option(..., "--out", "-o", help="Output file (.csv/.tsv/.parquet/.jsonl/.txt)."),
         policy: Path | None = typer.Option(None, "--policy", help="Policy YAML (default: replace all PII)."),
         key_file: Path | None = _KEY_FILE, encoding: str | None = _ENCODING, fmt: str | None = _FORMAT,
         out_format: str | None = typer.Option(None, "--out-format", help="Output format (default: from suffix)."),
         chunk_rows: int = typer.Option(50_000, "--chunk-rows", help="Rows per chunk (bounds memory)."),
         workers: int | None = typer.Option(None, "--workers", "-j",
                                            help="Processes masking chunks in parallel (default 1); "
                                                 "Spark local workers with --engine spark (default 2)."),
         engine: str = _ENGINE, spark_master: str | None = _SPARK_MASTER,
         as_json: bool = JSON_OPTION) -> None:
    """De-identify a table under a policy, streaming; writes OUT, OUT.policy.yaml and OUT.report.json."""
    from torchshield.data.anonymize import load_policy
    from torchshield.data.cluster import make_engine
    from torchshield.data.tabular import mask_file

    if workers is None:
        workers = 2 if engine == "spark" else 1
    if chunk_rows < 1 or workers < 1:
        raise InputError("--chunk-rows and --workers must be at least 1")
    from torchshield.data.tabular import count_rows, detect_format

    eng = make_engine(engine, workers=workers, master=spark_master)  # not started: bad input below costs no JVM
    pol = load_policy(policy)
    key = _key(key_file, required=False)
    total = count_rows(path, detect_format(path, fmt)) if path.is_file() else None
    try:
        with progress("masking", total) as advance:
            report = mask_file(path, out, policy=pol, key=key, encoding=encoding, in_format=fmt,
                               out_format=out_format, chunk_rows=chunk_rows, on_progress=advance,
                               workers=1 if eng is not None else workers, engine=eng)
    finally:
        if eng is not None:
            eng.close()

    def human(c: Any) -> None:
        c.print(f"wrote {report['output']}: {report['rows']} rows in {report['seconds']} s "
                f"({report['rows_per_second']} rows/s)"
                + (f" on {report['engine']['name']} {report['engine']['master']}" if "engine" in report else ""))
        for col, counts in report["changes_per_column"].items():
            c.print(f"  {col}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if report["dropped_columns"]:
            c.print(f"  dropped: {', '.join(report['dropped_columns'])}")
        c.print(f"  {report['note']}")

    emit(report, human, as_json=as_json)


@data_app.command("unmask")
def unmask(path: Path = typer.Argument(..., help="A file written by `data mask` with encrypt tokens."),
           out: Path = typer.Option(..., "--out", "-o", help="Where to write the restored file."),
           key_file: Path | None = _KEY_FILE, fmt: str | None = _FORMAT, as_json: bool = JSON_OPTION) -> None:
    """Reverse `encrypt` tokens with the key (other operators are one-way by design)."""
    from torchshield.data.anonymize import KeyedContext, unmask_text
    from torchshield.data.tabular import detect_format, iter_chunks, open_writer

    key = _key(key_file, required=True)
    ctx = KeyedContext(key)
    restored = 0
    with open_writer(out, detect_format(out)) as writer:
        for chunk in iter_chunks(path, fmt=fmt):
            for col in chunk.columns:
                values = chunk[col].tolist()
                new = [unmask_text(v, key, keys=ctx) if isinstance(v, str) else v for v in values]
                restored += sum(1 for a, b in zip(values, new, strict=True) if a != b)
                chunk[col] = new
            writer.write(chunk)
    emit({"output": str(out), "cells_restored": restored},
         lambda c: c.print(f"wrote {out}: {restored} cells restored"), as_json=as_json)


@data_app.command("kanon")
def kanon(path: Path = typer.Argument(..., help="Input table."),
          k: int = typer.Option(..., "--k", help="Minimum rows per equivalence class."),
          quasi: str = typer.Option(..., "--quasi", help="Comma-separated quasi-identifier columns."),
          out: Path = typer.Option(..., "--out", "-o", help="Released table."),
          sensitive: str | None = typer.Option(None, "--sensitive", help="Sensitive column (for --l / --t)."),
          l_div: int | None = typer.Option(None, "--l", help="Distinct sensitive values per class."),
          t_close: float | None = typer.Option(None, "--t", help="Max total-variation distance per class."),
          hierarchy: Path | None = typer.Option(None, "--hierarchy",
                                                help="YAML: {column: {value: parent, ...}} category hierarchies."),
          policy: Path | None = typer.Option(None, "--policy",
                                             help="Policy YAML whose `hierarchies:` section to use."),
          max_suppress: float = typer.Option(0.05, "--max-suppress", help="Fraction of rows that may be suppressed."),
          encoding: str | None = _ENCODING, fmt: str | None = _FORMAT, as_json: bool = JSON_OPTION) -> None:
    """Generalise quasi-identifiers until every class has >= k rows; report risk and information loss."""
    from torchshield.atomic import atomic_write_bytes
    from torchshield.data.tabular import kanonymize, read_table, sidecar_paths, write_table

    cols = [c.strip() for c in quasi.split(",") if c.strip()]
    if not cols:
        raise InputError("--quasi needs at least one column name")
    hier = _load_hierarchy(hierarchy)
    if policy is not None:
        from torchshield.data.anonymize import load_policy

        hier = {**load_policy(policy).hierarchies, **(hier or {})}
    with progress("reading", None):
        df = read_table(path, fmt=fmt, encoding=encoding)
    with progress("generalising", None):
        result = kanonymize(df, cols, k=k, l=l_div, t=t_close, sensitive=sensitive, hierarchies=hier,
                            max_suppress=max_suppress)
    write_table(result.table, out)
    report = dict(result.report, input=str(path), output=str(out))
    atomic_write_bytes(sidecar_paths(out)[1], json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8"))

    def human(c: Any) -> None:
        r = report
        c.print(f"wrote {out}: {r['rows_released']} rows in {r['classes']} classes (min size {r['min_class_size']}), "
                f"{r['suppressed_rows']} suppressed")
        c.print(f"  risk (prosecutor): max {r['risk_before']['max']:.3f} -> {r['risk_after']['max']:.3f}, "
                f"avg {r['risk_before']['avg']:.3f} -> {r['risk_after']['avg']:.3f}")
        c.print(f"  information loss: NCP {r['information_loss']['ncp']:.3f}, "
                f"discernibility {r['information_loss']['discernibility']}")
        if r["l"] is not None:
            c.print(f"  l-diversity: {r['l_achieved']} distinct sensitive values in the least diverse class")

    emit(report, human, as_json=as_json)


def _load_hierarchy(path: Path | None) -> dict[str, dict[str, str]] | None:
    if path is None:
        return None
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"hierarchy file {path} does not exist") from None
    except yaml.YAMLError:
        raise InputError(f"{path}: not valid YAML") from None
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise InputError(f"{path}: expected {{column: {{value: parent}}}}")
    return {str(c): {str(a): str(b) for a, b in m.items()} for c, m in raw.items()}


@data_app.command("generate")
def generate(out: Path = typer.Option(..., "--out", "-o", help="Where to write the synthetic patient table."),
             rows: int = typer.Option(1000, "--rows", help="Number of rows."),
             seed: int = typer.Option(0, "--seed"),
             encoding: str = typer.Option("utf-8", "--encoding", help="utf-8 or gb18030 (CSV only)."),
             as_json: bool = JSON_OPTION) -> None:
    """Write a synthetic (Faker) patient table for trying the commands; no real person is in it."""
    from torchshield.atomic import atomic_output
    from torchshield.data.synth import patient_table
    from torchshield.data.tabular import detect_format, write_table

    if rows < 1:
        raise InputError("--rows must be at least 1")
    df = patient_table(rows, seed=seed, unique=min(rows, 20_000))
    fmt = detect_format(out)
    if fmt == "csv" and encoding.lower() != "utf-8":
        with atomic_output(out) as fh:
            fh.write(df.to_csv(index=False).encode(encoding))
    else:
        write_table(df, out)
    emit({"output": str(out), "rows": rows, "columns": list(df.columns)},
         lambda c: c.print(f"wrote {out}: {rows} synthetic rows"), as_json=as_json)


def register(root: typer.Typer) -> None:
    root.add_typer(data_app, name="data", help="Find PII, de-identify tables and text, k-anonymity.")
    if importlib.util.find_spec("torchshield.cli.data_query_cmd"):
        importlib.import_module("torchshield.cli.data_query_cmd").register_into(data_app)
