"""The distributed-engine contract without a JVM: what a worker gets (subkeys, never the master key),
that the per-row code run through an engine gives the single-process bytes, that bad input is
refused before the engine is used, that a failed run leaves no output, and that the scan report
does not depend on how the table is cut. Spark itself: tests/integration/test_data_spark.py."""

from __future__ import annotations

import pickle

import pytest

from torchshield.cli.app import run
from torchshield.crypto.keys import generate_master_key, write_key_file
from torchshield.data.anonymize import OPERATORS, Cell, KeyedContext, load_policy
from torchshield.data.cluster import OPERATOR_SUBKEYS, policy_subkeys
from torchshield.data.cluster.keys import keyed_operators
from torchshield.data.cluster.spark import _guarded, _unwrap
from torchshield.data.synth import patient_table
from torchshield.data.tabular import mask_file, scan_file
from torchshield.errors import FormatError, KeyMaterialError, ShieldError

POLICY = {"columns": {"name": {"operator": "pseudonymize", "type": "PERSON"}, "id_number": "encrypt",
                      "phone": "hash", "visit_date": "date_shift", "notes": "scan"},
          "person_key": "id_number", "entities": {"PERSON": "pseudonymize"}}


class PicklingEngine:
    """An engine that runs the task in this process, but ships ``shared`` and each chunk through
    pickle as Spark does, and counts what it was asked to do."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.chunks = 0
        self.fail_after = fail_after

    def map_chunks(self, task, shared, chunks):
        self.calls += 1
        wire = pickle.dumps(shared)
        for chunk in chunks:
            if self.fail_after is not None and self.chunks >= self.fail_after:
                raise ShieldError("a Spark task failed (ExecutorLostFailure)")
            self.chunks += 1
            yield task(pickle.loads(wire), pickle.loads(pickle.dumps(chunk)))

    def describe(self):
        return {"name": "pickling", "master": "in-process", "parallelism": 1}


@pytest.fixture
def table(tmp_path):
    src = tmp_path / "p.csv"
    src.write_bytes(patient_table(30, seed=5).to_csv(index=False).encode("gb18030"))
    return src


def test_every_keyed_operator_has_its_subkeys_listed():
    assert keyed_operators() == sorted(OPERATOR_SUBKEYS)


@pytest.mark.parametrize("name", sorted(OPERATOR_SUBKEYS))
def test_operators_give_the_same_output_with_the_subkeys_as_with_the_master(name):
    master = generate_master_key()
    pol = load_policy({"columns": {"c": name}})
    subkeys = policy_subkeys(pol, master)
    assert subkeys is not None and subkeys.labels == [label for label, _ in OPERATOR_SUBKEYS[name]]
    op = OPERATORS[name]()
    for value in ("11010519491231002X", "王小明", "2024-03-05", "Adam Anderson"):
        cell = Cell("PERSON", "p1")
        assert op.apply(value, cell, KeyedContext(subkeys)) == op.apply(value, cell, KeyedContext(master))


def test_only_the_policys_subkeys_travel_never_the_master():
    master = generate_master_key()
    pol = load_policy({"columns": {"phone": "hash", "age": {"operator": "generalize", "width": 10}}})
    subkeys = policy_subkeys(pol, master)
    assert subkeys is not None and subkeys.labels == ["data/keyed-hash"]
    wire = pickle.dumps(subkeys)
    assert master.secret not in wire and master.derive("data/deterministic-encryption", 64) not in wire
    assert subkeys.keys[("data/keyed-hash", 32)].hex() not in repr(subkeys)
    with pytest.raises(KeyMaterialError, match="data/pseudonym"):
        subkeys.derive("data/pseudonym")
    assert policy_subkeys(load_policy({"columns": {"age": {"operator": "generalize", "width": 10}}}), master) is None


def test_engine_output_is_byte_identical_and_report_equal(table, tmp_path):
    key = generate_master_key()
    engine = PicklingEngine()
    for suffix in (".csv", ".parquet", ".jsonl"):
        local = mask_file(table, tmp_path / f"local{suffix}", policy=POLICY, key=key, chunk_rows=7)
        dist = mask_file(table, tmp_path / f"dist{suffix}", policy=POLICY, key=key, chunk_rows=7, engine=engine)
        assert (tmp_path / f"dist{suffix}").read_bytes() == (tmp_path / f"local{suffix}").read_bytes()
        assert dist["changes_per_column"] == local["changes_per_column"] and dist["rows"] == 30
        assert dist["engine"]["name"] == "pickling"
    assert engine.chunks == 3 * 5


def test_bad_input_refused_before_the_engine_and_failure_leaves_no_output(table, tmp_path):
    key = generate_master_key()
    out = tmp_path / "out.csv"
    engine = PicklingEngine()
    with pytest.raises(ShieldError, match="columns.phnoe"):
        mask_file(table, out, policy={"columns": {"phnoe": "hash"}}, key=key, engine=engine)
    with pytest.raises(KeyMaterialError):
        mask_file(table, out, policy=POLICY, key=None, engine=engine)
    assert engine.calls == 0 and not out.exists()
    failing = PicklingEngine(fail_after=2)
    with pytest.raises(ShieldError, match="task failed"):
        mask_file(table, out, policy=POLICY, key=key, chunk_rows=5, engine=failing)
    assert failing.chunks == 2 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_a_failing_task_reports_its_type_never_its_message():
    class Value:
        value = None

    def leaky(shared, chunk):
        raise ValueError(f"cannot parse {chunk}")

    def refused(shared, chunk):
        raise FormatError("p.csv: line 7: bad", hint="fix it")

    status, info = _guarded(leaky, Value(), "13812345678")
    assert status == "error" and "13812345678" not in repr(info)
    with pytest.raises(ShieldError, match=r"task failed \(ValueError\)") as exc:
        list(_unwrap([("ok", 1), (status, info)]))
    assert "13812345678" not in str(exc.value)
    with pytest.raises(FormatError, match="line 7"):
        list(_unwrap([_guarded(refused, Value(), None)]))


def test_scan_report_does_not_depend_on_the_chunking(table):
    whole = scan_file(table, sample_rows=None)
    pieces = scan_file(table, sample_rows=None, chunk_rows=4)
    via_engine = scan_file(table, sample_rows=None, chunk_rows=7, engine=PicklingEngine())
    assert pieces["columns"] == whole["columns"] == via_engine["columns"]
    assert whole["columns"]["id_number"]["dominant_type"] == "CN_RESIDENT_ID"
    assert whole["columns"]["notes"]["kind"] == "free_text"


def test_cli_engine_flags_are_checked(table, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.csv"
    assert run(["data", "mask", str(table), "--out", str(out), "--engine", "flink"]) == 2
    assert "--engine" in capsys.readouterr().err
    assert run(["data", "scan", str(table), "--spark-master", "local[2]"]) == 2
    assert "--spark-master needs --engine spark" in capsys.readouterr().err
    pytest.importorskip("pyspark")
    # No Java: a one-line exit 2 naming the fix, and no output.
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    key = tmp_path / "k.key"
    write_key_file(key)
    assert run(["data", "mask", str(table), "--out", str(out), "--engine", "spark", "--json"]) == 2
    err = capsys.readouterr().err
    assert "Java" in err and "openjdk-17-jre-headless" in err and not out.exists()


def test_local_sessions_bind_loopback_and_cluster_sessions_keep_their_addresses():
    from torchshield.data.cluster import SparkEngine, make_engine

    local = SparkEngine(workers=3)
    assert local.master == "local[3]" and local._conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert local._conf["spark.io.encryption.enabled"] == "true" and local._conf["spark.ui.enabled"] == "false"
    remote = make_engine("spark", workers=2, master="spark://10.0.0.5:7077")
    assert remote.describe()["master"] == "spark://10.0.0.5:7077"
    assert "spark.driver.bindAddress" not in remote._conf and remote._conf["spark.io.encryption.enabled"] == "true"
    assert make_engine("local", workers=4) is None
