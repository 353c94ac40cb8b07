"""`data scan` and `data mask` on Apache Spark (``--engine spark``, ``local[2]``) against the
single-process path: the same bytes out for the same key, the same merged report, bad input
refused before any Spark job, no output after a failure, and no key material in Spark's output.

One SparkSession for the module (the JVM takes tens of seconds to start on a shared machine);
the CLI's engine finds it active and uses it without stopping it."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import pickle
import shutil

import pandas as pd
import pytest
from services import service_missing

from torchshield.cli.app import run
from torchshield.crypto.keys import read_key_file, write_key_file
from torchshield.data.anonymize import load_policy
from torchshield.data.cluster import SparkEngine
from torchshield.data.synth import patient_table
from torchshield.data.tabular import mask_file, scan_file
from torchshield.data.tabular.mask import MaskJob

pytestmark = pytest.mark.integration

POLICY = ("columns:\n"
          "  name: {operator: pseudonymize, type: PERSON}\n"
          "  id_number: encrypt\n"
          "  phone: hash\n"
          "  visit_date: date_shift\n"
          "  address: {operator: generalize, keep: 3}\n"
          "  notes: scan\n"
          "  contact: scan\n"
          "person_key: id_number\n"
          "entities:\n"
          "  PERSON: pseudonymize\n"
          "  EMAIL: hash\n")


@pytest.fixture(scope="module")
def spark():
    if importlib.util.find_spec("pyspark") is None:
        service_missing("spark", "pyspark is not installed (pip install 'torchshield[cluster]')")
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        service_missing("spark", "no Java runtime (bash .ci/java.sh installs one)")
    engine = SparkEngine(workers=2)
    sc = engine.session().sparkContext
    yield engine, sc
    engine.close()


def _jobs(sc) -> int:
    return len(sc.statusTracker().getJobIdsForGroup())


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """40 rows of Chinese and English PII as GB18030 CSV, a key and the policy."""
    d = tmp_path_factory.mktemp("spark")
    df = patient_table(40, seed=7)
    df["contact"] = [f"User Adam Anderson{i} logged in, mail adam.a{i}@example.com, 手机1381234{i:04d}"
                     for i in range(len(df))]
    src = d / "patients.csv"
    src.write_bytes(df.to_csv(index=False).encode("gb18030"))
    key = d / "k.key"
    write_key_file(key)
    pol = d / "policy.yaml"
    pol.write_text(POLICY, encoding="utf-8")
    return d, src, key, pol, df


def test_mask_is_byte_identical_to_single_process_and_report_merges(spark, table, capsys):
    _, sc = spark
    d, src, key, pol, df = table
    local, dist = d / "local.csv", d / "spark.csv"
    # 7-row chunks: 6 partitions in two waves, so the merge and the ordering are exercised.
    assert run(["data", "mask", str(src), "--policy", str(pol), "-k", str(key), "--out", str(local),
                "--chunk-rows", "7", "--json"]) == 0
    rep_local = json.loads(capsys.readouterr().out)
    before = _jobs(sc)
    assert run(["data", "mask", str(src), "--policy", str(pol), "-k", str(key), "--out", str(dist),
                "--chunk-rows", "7", "--engine", "spark", "-j", "2", "--json"]) == 0
    rep_spark = json.loads(capsys.readouterr().out)
    assert _jobs(sc) - before == 2  # it really ran on Spark: one job per wave of 4 partitions
    assert rep_spark["engine"]["name"] == "spark" and rep_spark["engine"]["master"].startswith("local")
    assert dist.read_bytes() == local.read_bytes()
    assert rep_spark["changes_per_column"] == rep_local["changes_per_column"]
    assert rep_spark["findings_per_type"] == rep_local["findings_per_type"] and rep_spark["rows"] == 40
    # and the output is de-identified: no ID, phone, e-mail or name of the input survives
    out = dist.read_text(encoding="utf-8")
    for value in [*df["id_number"], *df["phone"], *df["name"], "adam.a3@example.com", "Adam Anderson3"]:
        assert value not in out
    # a Parquet output from the API, with a different partitioning, is identical too
    k = read_key_file(key)
    engine, _ = spark
    mask_file(src, d / "local.parquet", policy=pol, key=k, chunk_rows=11)
    mask_file(src, d / "spark.parquet", policy=pol, key=k, chunk_rows=11, engine=engine)
    assert (d / "spark.parquet").read_bytes() == (d / "local.parquet").read_bytes()


def test_scan_report_merged_across_partitions_equals_local(spark, table, capsys):
    engine, _ = spark
    _, src, _, _, _ = table
    local = scan_file(src, sample_rows=None)  # one 50,000-row chunk
    dist = scan_file(src, sample_rows=None, engine=engine, chunk_rows=6)  # 7 partitions, summed on the driver
    assert dist["columns"] == local["columns"] and dist["rows_scanned"] == 40
    assert local["columns"]["phone"]["types"]["CN_MOBILE"]["cells"] == 40
    assert run(["data", "scan", str(src), "--full", "--engine", "spark", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["columns"] == local["columns"]


def test_bad_input_refused_before_spark_and_failures_leave_no_output(spark, table, capsys):
    _, sc = spark
    d, src, key, pol, _ = table
    out = d / "bad.csv"
    before = _jobs(sc)
    missing = d / "missing.yaml"
    missing.write_text("columns:\n  phnoe: hash\n", encoding="utf-8")
    unknown = d / "unknown.yaml"
    unknown.write_text("columns:\n  phone: {operator: maskk}\n", encoding="utf-8")
    for bad, field in ((missing, "columns.phnoe"), (unknown, "columns.phone.operator")):
        assert run(["data", "mask", str(src), "--policy", str(bad), "-k", str(key), "--out", str(out),
                    "--engine", "spark", "-j", "2"]) == 2
        err = capsys.readouterr().err
        assert field in err and len(err.strip().splitlines()) == 1
    assert _jobs(sc) == before  # refused on the driver: no Spark job started
    # A malformed row (line 33) after six 5-row chunks: the first wave is masked on Spark and written to
    # the temporary file, then the reader fails naming the line; nothing is left behind.
    lines = src.read_bytes().split(b"\n")
    broken = d / "broken.csv"
    broken.write_bytes(b"\n".join([*lines[:32], lines[32] + b",one,field,too,many", *lines[33:]]))
    listing = sorted(p.name for p in d.iterdir())
    assert run(["data", "mask", str(broken), "--policy", str(pol), "-k", str(key), "--out", str(out),
                "--chunk-rows", "5", "--engine", "spark", "-j", "2"]) == 2
    err = capsys.readouterr().err
    assert "broken.csv" in err and "line 33" in err and "\n" not in err.strip()
    assert _jobs(sc) > before  # the first wave did run
    assert not out.exists() and sorted(p.name for p in d.iterdir()) == listing


def test_no_key_material_in_the_broadcast_or_in_spark_output(spark, table, capfd):
    _, src, key, pol, _ = table
    k = read_key_file(key)
    secrets = [k.secret] + [k.derive(label, n) for label, n in (("data/keyed-hash", 32), ("data/pseudonym", 32),
                                                                ("data/deterministic-encryption", 64),
                                                                ("data/date-shift", 32))]
    engine, _ = spark
    captured: list[bytes] = []

    class Recording:  # what the engine would broadcast, pickled as Spark pickles it
        def map_chunks(self, task, shared, chunks):
            captured.append(pickle.dumps(shared))
            return engine.map_chunks(task, shared, chunks)

        def describe(self):
            return engine.describe()

    capfd.readouterr()
    mask_file(src, src.with_name("rec.csv"), policy=pol, key=k, chunk_rows=20, engine=Recording())
    job = pickle.loads(captured[0])
    assert isinstance(job, MaskJob) and job.subkeys.labels == ["data/date-shift", "data/deterministic-encryption",
                                                                 "data/keyed-hash", "data/pseudonym"]
    assert k.secret not in captured[0]  # the master key never leaves the driver
    # Spark's own logs (the JVM writes to this process's stderr) and ours: no key in any form.
    assert run(["data", "mask", str(src), "--policy", str(pol), "-k", str(key), "--out",
                str(src.with_name("logs.csv")), "--engine", "spark", "-j", "2", "--chunk-rows", "9"]) == 0
    text = "".join(capfd.readouterr())
    for s in secrets:
        for form in (s.hex(), base64.b64encode(s).decode(), base64.urlsafe_b64encode(s).decode().rstrip("=")):
            assert form not in text
    assert load_policy(pol).needs_key
    assert (pd.read_csv(src.with_name("logs.csv"), dtype=str)["id_number"].str.startswith("tsenc1.")).all()
