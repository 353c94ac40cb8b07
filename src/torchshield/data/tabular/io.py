"""Streaming table readers and atomic writers for CSV/TSV, Parquet, JSONL and plain text.

Readers yield pandas DataFrames of at most ``chunk_rows`` rows, so memory stays bounded on
files of any size. Text is decoded strictly: a byte that is not valid in the detected (or
given) encoding is an error naming the line, never a silent replacement character. Writers
go through ``atomic_output``: a failure midway leaves no partial file."""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchshield.atomic import atomic_output
from torchshield.data.dtypes import is_text as _is_text
from torchshield.errors import FormatError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["FORMATS", "TableWriter", "count_rows", "detect_encoding", "detect_format", "iter_chunks", "open_writer",
           "read_table", "write_table"]

FORMATS = ("csv", "tsv", "parquet", "jsonl", "txt")
_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
           ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".text": "txt"}


def detect_format(path: str | Path, given: str | None = None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise InputError(f"unknown format {given!r}", hint=f"use one of: {', '.join(FORMATS)}")
        return given
    fmt = _SUFFIX.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: cannot tell the format from the file name",
                         hint=f"pass --format ({', '.join(FORMATS)})")
    return fmt


def detect_encoding(path: str | Path, *, sample: int = 1 << 20) -> str:
    """'utf-8-sig', 'utf-8' or 'gb18030', judged on the first ``sample`` bytes.

    UTF-8 is tried first: GB18030 can decode almost any byte string, so it is the fallback,
    and a GB18030 file is very unlikely to be valid UTF-8 beyond its ASCII part."""
    with open(path, "rb") as fh:
        head = fh.read(sample)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FormatError(f"{path}: UTF-16 text is not supported", hint="convert it to UTF-8 first")
    for enc in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(enc)().decode(head, final=len(head) < sample)
            return enc
        except UnicodeDecodeError:
            continue
    raise FormatError(f"{path}: neither UTF-8 nor GB18030", hint="pass --encoding with the right codec")


def _line_of(path: str | Path, byte_offset: int) -> int:
    with open(path, "rb") as fh:
        return fh.read(max(0, byte_offset)).count(b"\n") + 1


def count_rows(path: str | Path, fmt: str) -> int | None:
    """Rows in the file (for a progress bar): Parquet metadata, or newlines for text formats."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    n = 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            n += block.count(b"\n")
    return max(0, n - (1 if fmt in ("csv", "tsv") else 0))


def _readable(p: Path, fmt: str | None) -> str:
    """The format of ``p``, after refusing a missing, non-regular or empty file (both readers)."""
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file")
    if p.stat().st_size == 0:
        raise InputError(f"{p} is empty", hint="give a file with a header row and data")
    return detect_format(p, fmt)


def iter_chunks(path: str | Path, *, fmt: str | None = None, encoding: str | None = None,
                chunk_rows: int = 50_000, nrows: int | None = None) -> Iterator[pd.DataFrame]:
    """Yield the table at ``path`` in DataFrames of at most ``chunk_rows`` rows (all values str
    for text formats, so IDs with leading zeros stay intact)."""
    p = Path(path)
    fmt = _readable(p, fmt)
    if fmt == "parquet":
        yield from _parquet_chunks(p, chunk_rows, nrows)
        return
    enc = _encoding(p, encoding)
    try:
        if fmt in ("csv", "tsv"):
            yield from _csv_chunks(p, fmt, enc, chunk_rows, nrows)
        elif fmt == "jsonl":
            yield from _jsonl_chunks(p, enc, chunk_rows, nrows)
        else:
            yield from _text_chunks(p, enc, chunk_rows, nrows)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{p}: line {_approx_line(p, exc)}: bytes not valid in {enc}",
                          hint="the file mixes encodings or is not text; fix it or pass --encoding") from None


def _encoding(p: Path, encoding: str | None) -> str:
    """The given encoding, or the detected one; refused (exit 2) when Python does not know it."""
    enc = encoding or detect_encoding(p)
    try:
        codecs.lookup(enc)
    except LookupError:
        raise InputError(f"unknown encoding {enc!r}", hint="e.g. utf-8, gb18030") from None
    return enc


def read_table(path: str | Path, *, fmt: str | None = None, encoding: str | None = None,
               typed: bool = False) -> pd.DataFrame:
    """The whole table at ``path`` in one DataFrame: the one reader behind ``data scan``,
    ``data mask``, ``data kanon`` and ``data query`` (same format and encoding detection, same
    errors naming the file and line).

    ``typed=False`` keeps every value of a text format as str (IDs with leading zeros stay
    intact: what de-identification needs). ``typed=True`` lets pandas infer column types as
    ``pd.read_csv`` does by default (what numeric aggregates need; for a UTF-8 CSV the frame is
    the one ``pd.read_csv(path)`` gives, so a data set's fingerprint does not depend on which
    command read it)."""
    import pandas as pd

    p = Path(path)
    if not typed:
        chunks = list(iter_chunks(p, fmt=fmt, encoding=encoding))
        return pd.concat(chunks, ignore_index=True) if len(chunks) != 1 else chunks[0]
    fmt = _readable(p, fmt)
    if fmt == "parquet":
        try:
            return pd.read_parquet(p)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for broken files
            raise FormatError(f"{p}: cannot read as Parquet ({type(exc).__name__})") from None
    enc = _encoding(p, encoding)
    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(p, sep="\t" if fmt == "tsv" else ",", encoding=enc)
        if fmt == "jsonl":
            return pd.read_json(p, lines=True, encoding=enc)
        return pd.concat(list(_text_chunks(p, enc, 1 << 30, None)), ignore_index=True)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{p}: line {_approx_line(p, exc)}: bytes not valid in {enc}",
                          hint="the file mixes encodings or is not text; fix it or pass --encoding") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{p} has no header row or data") from None
    except (pd.errors.ParserError, ValueError) as exc:
        msg = str(exc).split("C error: ")[-1].strip()
        raise FormatError(f"{p}: malformed {fmt.upper()}: {msg}",
                          hint="every row needs the header's number of fields") from None


def _approx_line(p: Path, exc: UnicodeDecodeError) -> str:
    # pandas decodes in blocks, so exc.start is relative to a block; search the file instead.
    enc = exc.encoding
    with open(p, "rb") as fh:
        for i, line in enumerate(fh, start=1):
            try:
                line.decode(enc)
            except UnicodeDecodeError:
                return str(i)
    return "?"


def _csv_chunks(p: Path, fmt: str, enc: str, chunk_rows: int, nrows: int | None) -> Iterator[pd.DataFrame]:
    import pandas as pd

    sep = "\t" if fmt == "tsv" else ","
    try:
        reader = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, encoding=enc, chunksize=chunk_rows,
                             nrows=nrows, engine="c")
        with reader:
            yield from reader
    except pd.errors.EmptyDataError:
        raise InputError(f"{p} has no header row or data") from None
    except pd.errors.ParserError as exc:
        msg = str(exc).split("C error: ")[-1].strip()
        raise FormatError(f"{p}: malformed CSV: {msg}", hint="every row needs the header's number of fields; "
                                                            "quote values that contain the separator") from None


def _jsonl_chunks(p: Path, enc: str, chunk_rows: int, nrows: int | None) -> Iterator[pd.DataFrame]:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    seen = 0
    with open(p, encoding=enc, newline="") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{p}: line {i}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise FormatError(f"{p}: line {i}: each line must be a JSON object")
            rows.append(obj)
            seen += 1
            if len(rows) >= chunk_rows:
                yield pd.DataFrame(rows)
                rows = []
            if nrows is not None and seen >= nrows:
                break
    if rows or seen == 0:
        if seen == 0:
            raise InputError(f"{p} holds no JSON records")
        yield pd.DataFrame(rows)


def _text_chunks(p: Path, enc: str, chunk_rows: int, nrows: int | None) -> Iterator[pd.DataFrame]:
    import pandas as pd

    lines: list[str] = []
    seen = 0
    with open(p, encoding=enc, newline="") as fh:
        for line in fh:
            lines.append(line.rstrip("\r\n"))
            seen += 1
            if len(lines) >= chunk_rows:
                yield pd.DataFrame({"text": lines})
                lines = []
            if nrows is not None and seen >= nrows:
                break
    if lines:
        yield pd.DataFrame({"text": lines})


def _parquet_chunks(p: Path, chunk_rows: int, nrows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FormatError(f"{p}: not a readable Parquet file ({exc})") from None
    seen = 0
    for batch in pf.iter_batches(batch_size=chunk_rows):
        df = batch.to_pandas()
        if nrows is not None and seen + len(df) > nrows:
            df = df.iloc[:nrows - seen]
        seen += len(df)
        yield df
        if nrows is not None and seen >= nrows:
            return


class TableWriter:
    """Append DataFrame chunks to one output file of ``fmt``; the file appears only on success."""

    def __init__(self, fh: Any, fmt: str) -> None:
        self.fh = fh
        self.fmt = fmt
        self._pq: Any = None
        self._schema: Any = None
        self._header = True
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        self.rows += len(df)
        if self.fmt in ("csv", "tsv"):
            buf = io.StringIO()
            df.to_csv(buf, index=False, header=self._header, sep="\t" if self.fmt == "tsv" else ",")
            self._header = False
            self.fh.write(buf.getvalue().encode("utf-8"))
        elif self.fmt == "jsonl":
            if len(df):
                text = df.to_json(orient="records", lines=True, force_ascii=False)
                self.fh.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))
        elif self.fmt == "txt":
            col = df.columns[0]
            self.fh.write("".join(f"{v}\n" for v in df[col].tolist()).encode("utf-8"))
        else:
            self._write_parquet(df)

    def _write_parquet(self, df: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            # Text columns become strings; numeric columns keep their type (k-anonymity needs them).
            fields = []
            for c in df.columns:
                t = pa.string() if _is_text(df[c]) else pa.Table.from_pandas(df[[c]], preserve_index=False).schema.field(0).type
                fields.append(pa.field(str(c), t))
            self._schema = pa.schema(fields)
            self._pq = pq.ParquetWriter(self.fh, self._schema)
        cols = {str(c): df[c].astype(object).where(df[c].notna(), None).map(lambda v: v if v is None else str(v))
                if self._schema.field(str(c)).type == pa.string() else df[c] for c in df.columns}
        self._pq.write_table(pa.table(cols, schema=self._schema))

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()


@contextmanager
def open_writer(path: str | Path, fmt: str) -> Iterator[TableWriter]:
    with atomic_output(path) as fh:
        w = TableWriter(fh, fmt)
        yield w
        w.close()


def write_table(df: pd.DataFrame, path: str | Path, *, fmt: str | None = None) -> None:
    """Write ``df`` atomically in the format named by ``fmt`` or the file suffix."""
    with open_writer(path, detect_format(path, fmt)) as w:
        w.write(df)
