"""Issue 21: what the peers' corpora found, each as a file built opcode by opcode (never by
pickling a live object), checked against an independent reading (``pickletools`` parses without
importing anything) or an independently computed number."""

from __future__ import annotations

import pickletools
import struct
import sys
import time
from pathlib import Path

import pytest
import scan_corpus as corpus
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshield.model.scan import Limits, scan
from torchshield.model.scan.allowlist import Allowlist
from torchshield.model.scan.pickle_ops import MAX_EXPANDED, expanded_size, expansion_possible, walk_pickle

CMD = corpus.CMD


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _critical(path: Path) -> set[str | None]:
    return {f.callable for f in scan(path).findings if f.severity == "critical"}


# -- 1. a protocol-0 line longer than 64 KiB ------------------------------------------------
_LONG = 70_000


@pytest.mark.parametrize(
    "filler",
    [
        b"S'" + b"A" * _LONG + b"'\n0",  # STRING, then POP
        b"V" + b"A" * _LONG + b"\n0",  # UNICODE
        b"(S'" + b"A" * (1 << 20) + b"'\n1",  # a 1 MiB STRING inside a MARK, then POP_MARK
        b"\x80\x02V" + b"A" * _LONG + b"\n0",  # protocol 2 stream with a protocol-0 opcode
    ],
    ids=["string", "unicode", "string-1mib", "proto2"],
)
def test_long_text_line_does_not_hide_the_payload(tmp_path: Path, filler: bytes) -> None:
    data = filler + b"cos\nsystem\n(S'" + CMD.encode() + b"'\ntR."
    # the independent reading: CPython's own opcode parser sees the line, then the import and call
    ops = [(op.name, arg) for op, arg, _pos in pickletools.genops(data)]
    assert ("GLOBAL", "os system") in ops and ops[-2][0] == "REDUCE"
    report = scan(_write(tmp_path, "long.pkl", data))
    file = report.files[0]
    assert file.status == "unsafe" and report.exit_code == 1, file.unreadable_reason
    hit = next(f for f in file.findings if f.callable == "os.system")
    assert hit.severity == "critical" and hit.offset == data.index(b"cos\n")
    assert file.unreadable_reason is None


def test_unterminated_long_line_is_still_unreadable(tmp_path: Path) -> None:
    report = scan(_write(tmp_path, "cut.pkl", b"S'" + b"A" * _LONG))
    assert report.files[0].status == "unreadable" and report.exit_code == 2
    # after a payload, the same cut is reported as a truncation next to the finding
    cut = scan(
        _write(tmp_path, "cut2.pkl", corpus.reduce_payload("os", "system", proto=0)[:-5] + b"A" * _LONG)
    )
    assert "os.system" in {f.callable for f in cut.findings}
    assert any("no terminating newline" in f.message for f in cut.findings)


# -- 2. billion laughs: the expanded size, not the raw reference count ----------------------
def _laughs(fanout: int, depth: int) -> bytes:
    """Level 0 is an empty list in memo 0; level k is a list of `fanout` memo references to level k-1."""
    body = b"]q\x00"
    for level in range(1, depth + 1):
        body += b"(" + (b"h" + bytes([level - 1])) * fanout + b"lq" + bytes([level])
    return corpus.p2(body)


def _tree_size(fanout: int, depth: int) -> int:
    size = 1  # the empty list
    for _ in range(depth):
        size = 1 + fanout * size
    return size


def test_ninety_references_ten_deep_are_flagged_with_their_expanded_size(tmp_path: Path) -> None:
    data = _laughs(9, 10)
    gets = sum(op.name == "BINGET" for op, _a, _p in pickletools.genops(data))
    assert gets == 90  # far under any raw-count threshold (the old check needed 100 000)
    expected = _tree_size(9, 10)
    assert expected == (9**11 - 1) // 8 > 10**9
    start = time.perf_counter()
    file = scan(_write(tmp_path, "laughs.pkl", data)).files[0]
    assert time.perf_counter() - start < 5
    assert file.status == "unsafe"
    hit = next(f for f in file.findings if f.kind == "expansion")
    assert hit.severity == "high" and f"{expected:,} nodes" in hit.message


def test_expansion_bound_is_the_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "laughs.pkl", _laughs(9, 10))
    size = _tree_size(9, 10)
    assert not any(f.kind == "expansion" for f in scan(path, limits=Limits(max_expanded=size)).findings)
    assert any(f.kind == "expansion" for f in scan(path, limits=Limits(max_expanded=size - 1)).findings)
    small = _write(tmp_path, "small.pkl", _laughs(9, 6))  # 597 871 nodes: under the default bound
    assert _tree_size(9, 6) < MAX_EXPANDED and scan(small).safe


def test_huge_expansion_saturates_and_stays_fast(tmp_path: Path) -> None:
    data = _laughs(200, 250)  # 200^250 nodes: exact arithmetic would itself be a bomb
    start = time.perf_counter()
    file = scan(_write(tmp_path, "huge.pkl", data)).files[0]
    assert time.perf_counter() - start < 10
    hit = next(f for f in file.findings if f.kind == "expansion")
    assert "more than 9.22e+18 nodes" in hit.message


def test_expansion_through_a_call_argument_counts(tmp_path: Path) -> None:
    # builtins.str(<level 10>) materialises the argument while loading, though its result is popped
    laughs = _laughs(9, 10)[2:-1]
    data = corpus.p2(laughs + b"0" + b"cbuiltins\nstr\n" + b"h\x0a\x85R0" + b"}")
    file = scan(_write(tmp_path, "call.pkl", data)).files[0]
    assert {f.callable for f in file.findings if f.kind == "import"} == set()  # str is allowed
    assert any(f.kind == "expansion" for f in file.findings)


def test_many_references_without_nesting_are_not_an_attack(tmp_path: Path) -> None:
    # 200 000 references to one memoised string: the old raw count flagged this; it expands to 200 001
    data = corpus.p2(b"X\x03\x00\x00\x00tokq\x00" + b"0" + b"(" + b"h\x00" * 200_000 + b"l")
    file = scan(_write(tmp_path, "tokens.pkl", data)).files[0]
    assert file.status == "safe", file.findings


def test_self_reference_is_finite(tmp_path: Path) -> None:
    # a list that contains itself 50 times, and a dict whose values are that list: repr prints [...]
    data = corpus.p2(b"]q\x00(" + b"h\x00" * 50 + b"e}q\x01(X\x01\x00\x00\x00ah\x00u")
    start = time.perf_counter()
    file = scan(_write(tmp_path, "cycle.pkl", data)).files[0]
    assert file.status == "safe" and time.perf_counter() - start < 5


_ACTIONS = st.lists(
    st.tuples(st.sampled_from(["new", "get", "append", "int", "pop", "dup"]), st.integers(0, 255)),
    max_size=60,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(actions=_ACTIONS)
def test_expanded_size_matches_a_reference_and_the_skip_bound_holds(actions: list[tuple[str, int]]) -> None:
    """Random acyclic list graphs built opcode by opcode, next to the same graph built from real
    Python lists: the walker's size equals the reference path count, and the bound that lets a
    walk skip the computation (2 * ops * prod(1 + re-fetches of each list)) is never below it."""
    ops = bytearray(b"\x80\x04")
    stack: list[object] = []
    memo: list[list[object]] = []
    born: dict[int, int] = {}
    refetches = 0
    fetched: dict[int, int] = {}
    for act, k in actions:
        if act == "new":
            ops += b"]\x94"  # EMPTY_LIST, MEMOIZE
            fresh: list[object] = []
            born[id(fresh)] = len(memo)
            memo.append(fresh)
            stack.append(fresh)
        elif act == "get" and memo:
            ops += b"h" + bytes([k % len(memo)])
            stack.append(memo[k % len(memo)])
            refetches += 1
            fetched[id(stack[-1])] = fetched.get(id(stack[-1]), 0) + 1
        elif act == "dup" and stack and isinstance(stack[-1], list):
            ops += b"2"
            stack.append(stack[-1])
            refetches += 1
            fetched[id(stack[-1])] = fetched.get(id(stack[-1]), 0) + 1
        elif act == "int":
            ops += b"K" + bytes([k])
            stack.append(k)
        elif act == "append" and len(stack) >= 2 and isinstance(stack[-2], list):
            item, target = stack[-1], stack[-2]
            if isinstance(item, list) and born[id(item)] >= born[id(target)]:
                continue  # only older lists go into newer ones: the graph stays acyclic
            ops += b"a"
            stack.pop()
            target.append(item)
        elif act == "pop" and stack:
            ops += b"0"
            stack.pop()
    if not stack:
        ops += b"]"
        stack.append([])
    data = bytes(ops + b".")
    sizes: dict[int, int] = {}

    def reference(x: object) -> int:
        if not isinstance(x, list):
            return 1
        if id(x) not in sizes:
            sizes[id(x)] = 1 + sum(reference(c) for c in x)
        return sizes[id(x)]

    walk = walk_pickle(data, 0, len(data), Allowlist())
    assert walk.complete
    true_size = reference(stack[-1])
    assert expanded_size(walk.root) == true_size
    paths = 1
    for count in fetched.values():
        paths *= 1 + count
    assert true_size <= 2 * walk.ops * paths <= 2 * walk.ops * 2**refetches
    if true_size > 100 * walk.ops:
        assert expansion_possible(fetched.values(), walk.ops, true_size - 1)


def test_real_shared_tensors_are_not_flagged(tmp_path: Path) -> None:
    t = torch.randn(4)
    path = tmp_path / "shared.pt"
    torch.save({f"k{i}": t for i in range(5000)}, path)  # 5000 references to one tensor
    assert scan(path).safe


# -- 3. severity: callables that run code are critical ---------------------------------------
@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("yaml", "unsafe_load"),
        ("yaml", "load"),
        ("_xxsubinterpreters", "run_string"),
        ("pexpect", "spawn"),
        ("pexpect", "run"),
        ("_tkinter", "create"),
        ("atexit", "register"),
        ("weakref", "finalize"),
        ("sched", "scheduler"),
        ("contextlib", "ExitStack"),
        ("contextvars", "Context"),
        ("sqlite3", "connect"),
        ("compileall", "compile_dir"),
        ("py_compile", "compile"),
        ("random", "_os.system"),
        ("numpy", "_sys.exit"),
        ("torch.serialization", "_os.system"),
    ],
)
@pytest.mark.parametrize("proto", [0, 2, 4])
def test_code_running_callables_are_critical(tmp_path: Path, module: str, name: str, proto: int) -> None:
    data = corpus.reduce_payload(module, name, proto=proto)
    assert ("GLOBAL" if proto < 4 else "STACK_GLOBAL") in {op.name for op, _a, _p in pickletools.genops(data)}
    path = _write(tmp_path, "sev.pkl", data)
    assert f"{module}.{name}" in _critical(path)
    assert scan(path).exit_code == 1


def test_private_alias_of_a_harmless_module_stays_high(tmp_path: Path) -> None:
    # `_weakrefset`-style private names that alias nothing dangerous are unknown (high), not critical
    path = _write(tmp_path, "a.pkl", corpus.reduce_payload("mypkg", "_helpers.run"))
    findings = scan(path).findings
    assert [f.severity for f in findings if f.callable == "mypkg._helpers.run"] == ["high"]


# -- 4. encrypted zip members are never clean -------------------------------------------------
def _flag_member(data: bytes, member: str, flag: int, *, central: bool = True, local: bool = True) -> bytes:
    """Set a general-purpose flag bit on one member, in its local and/or central header."""
    out = bytearray(data)
    name = member.encode()
    pos = 0
    while (pos := out.find(b"PK\x03\x04", pos)) >= 0:
        nlen = struct.unpack_from("<H", out, pos + 26)[0]
        if local and out[pos + 30 : pos + 30 + nlen] == name:
            struct.pack_into("<H", out, pos + 6, struct.unpack_from("<H", out, pos + 6)[0] | flag)
        pos += 4
    pos = 0
    while (pos := out.find(b"PK\x01\x02", pos)) >= 0:
        nlen = struct.unpack_from("<H", out, pos + 28)[0]
        if central and out[pos + 46 : pos + 46 + nlen] == name:
            struct.pack_into("<H", out, pos + 8, struct.unpack_from("<H", out, pos + 8)[0] | flag)
        pos += 4
    return bytes(out)


_CIPHERTEXT = bytes((i * 151 + 7) % 256 for i in range(4096))  # neither a pickle nor a container


@pytest.mark.parametrize(
    ("flag", "where"),
    [(0x1, "both"), (0x1, "central"), (0x1, "local"), (0x40, "both")],
)
def test_encrypted_member_is_never_clean(tmp_path: Path, flag: int, where: str) -> None:
    clean = corpus.torch_zip(corpus.p2(b"}"), extra={"archive/extra.bin": _CIPHERTEXT})
    assert scan(_write(tmp_path, "clean.pt", clean)).safe  # the control: same bytes, no flag
    data = _flag_member(
        clean,
        "archive/extra.bin",
        flag,
        central=where in ("both", "central"),
        local=where in ("both", "local"),
    )
    report = scan(_write(tmp_path, "enc.pt", data))
    assert report.files[0].status == "unsafe" and report.exit_code == 1
    hit = [f for f in report.findings if f.kind == "unscannable" and f.member == "archive/extra.bin"]
    assert hit and hit[0].severity == "high" and f"flag 0x{flag:x}" in hit[0].message


def test_encrypted_tensor_record_is_flagged_too(tmp_path: Path) -> None:
    data = corpus.torch_zip(corpus.p2(b"}"), extra={"archive/data/0": b"\x00" * 16})
    report = scan(_write(tmp_path, "rec.pt", _flag_member(data, "archive/data/0", 0x1)))
    assert not report.safe and any(f.member == "archive/data/0" for f in report.findings)


def test_encrypted_payload_is_still_read_as_torch_reads_it(tmp_path: Path) -> None:
    data = corpus.torch_zip(corpus.reduce_payload("os", "system"))
    assert "os.system" in _critical(_write(tmp_path, "p.pt", _flag_member(data, "archive/data.pkl", 0x1)))


# -- 6. false alarms: inert names are allowed, name by name ----------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"c__future__\nannotations\nq\x00",
        b"cbuiltins\nlen\n(]tR",
        b"c__builtin__\nlen\n(]tR",
        b"cbuiltins\nmax\n(K\x01K\x02tR",
        corpus.sglob("collections.abc", "Iterable"),
        corpus.sglob("collections.abc", "Mapping"),
        corpus.sglob("torch.nn", "ParameterDict"),
    ],
    ids=["future", "len", "py2-len", "max", "abc-iterable", "abc-mapping", "parameterdict"],
)
def test_inert_names_are_safe(tmp_path: Path, body: bytes) -> None:
    data = (b"\x80\x04" if b"\x93" in body else b"\x80\x02") + body + b"."
    list(pickletools.genops(data))  # a well-formed stream
    file = scan(_write(tmp_path, "ok.pkl", data)).files[0]
    assert file.status == "safe" and file.imports >= 1, file.findings


def _parameter(key: str) -> bytes:
    storage = b"(" + corpus.su("storage") + corpus.glob("torch", "FloatStorage") + corpus.su(key)
    storage += corpus.su("cpu") + b"K\x04tQ"
    tensor = corpus.call(
        corpus.glob("torch._utils", "_rebuild_tensor_v2"),
        storage,
        b"K\x00",
        b"K\x04\x85",
        b"K\x01\x85",
        b"\x89",
        corpus.call(corpus.glob("collections", "OrderedDict")),
    )
    return corpus.call(
        corpus.glob("torch._utils", "_rebuild_parameter"),
        tensor,
        b"\x88",
        corpus.call(corpus.glob("collections", "OrderedDict")),
    )


def _sd_embedding_fragment() -> bytes:
    """A textual-inversion embedding as Stable Diffusion checkpoints hold it: a ParameterDict
    rebuilt by copyreg._reconstructor, then BUILD with its module state."""
    module = (
        corpus.glob("copyreg", "_reconstructor")
        + corpus.glob("torch.nn.modules.container", "ParameterDict")
        + corpus.glob("builtins", "object")
        + b"N\x87R"
    )
    params = corpus.call(corpus.glob("collections", "OrderedDict")) + b"(" + corpus.su("*") + _parameter("0")
    params += b"u"
    state = b"}(" + corpus.su("training") + b"\x89" + corpus.su("_parameters") + params
    for hooks in ("_buffers", "_forward_hooks", "_forward_pre_hooks", "_modules"):
        state += corpus.su(hooks) + corpus.call(corpus.glob("collections", "OrderedDict"))
    state += b"u"
    root = b"}(" + corpus.su("string_to_param") + module + state + b"b" + corpus.su("name") + corpus.su("*")
    return corpus.p2(root + b"u")


def test_stable_diffusion_parameterdict_fragment_is_safe(tmp_path: Path) -> None:
    pkl = _sd_embedding_fragment()
    names = {arg for op, arg, _p in pickletools.genops(pkl) if op.name == "GLOBAL"}
    assert "torch.nn.modules.container ParameterDict" in names
    data = corpus.torch_zip(pkl, extra={"archive/data/0": b"\x00" * 16})
    file = scan(_write(tmp_path, "embedding.pt", data)).files[0]
    assert file.status == "safe" and file.format == "torch-zip", file.findings


def test_real_parameterdict_checkpoint_is_safe(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "real.pt"
    torch.save(
        {"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.randn(2, 8))})}, path
    )
    assert scan(path).safe, scan(path).findings


@pytest.mark.parametrize(
    ("module", "name", "severity"),
    [
        ("builtins", "getattr", "critical"),
        ("builtins", "map", "high"),
        ("builtins", "type", "high"),
        ("collections.abc", "Mapping.register", "high"),
        ("__future__", "os", "critical"),  # an attribute chain to os
        ("__future__", "CO_NESTED", "high"),
        ("torch.nn.modules.linear", "Linear", "high"),
    ],
)
def test_neighbours_of_inert_names_are_not_widened(
    tmp_path: Path, module: str, name: str, severity: str
) -> None:
    path = _write(tmp_path, "n.pkl", corpus.reduce_payload(module, name))
    assert [f.severity for f in scan(path).findings if f.callable == f"{module}.{name}"] == [severity]


def test_canary_still_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the new code paths (long lines, expansion walk, aliases) import nothing either
    canary = tmp_path / "ran.txt"
    (tmp_path / "ts_canary21.py").write_text(f"open({str(canary)!r}, 'w').write('ran')\nimport os\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = b"V" + b"A" * _LONG + b"\n0" + b"cts_canary21\n_os.system\n(V" + CMD.encode() + b"\ntR."
    data = data[:-1] + _laughs(9, 10)[2:]
    file = scan(_write(tmp_path, "c.pkl", data)).files[0]
    assert not canary.exists() and "ts_canary21" not in sys.modules
    assert "ts_canary21._os.system" in {f.callable for f in file.findings if f.severity == "critical"}
    assert any(f.kind == "expansion" for f in file.findings)
