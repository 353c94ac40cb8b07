"""A symbolic walk over pickle opcodes: what a stream would import and call, without running it.

Why not ``pickletools.genops``: it decodes every string (a hostile name raises instead of being
reported), it has no notion of the stack, so ``STACK_GLOBAL`` operands fetched from the memo
stay invisible, and it copies every byte string it meets. This reader keeps a symbolic stack
and memo (strings, small ints, tuples, imported names, call results; everything else is one
opaque marker), never allocates from a length field (every length is checked against the bytes
that are really there before anything is sliced), never recurses, and records every
irregularity that makes a loader and a static reader disagree (unset memo slots, operands of
the wrong type, opcodes that straddle a FRAME, misplaced PROTO, stack underflow).

Threat model: the bytes come from an attacker. Time is linear in the length of the stream,
memory is linear in the number of opcodes (each opcode pushes at most one small object; DUP
and memo GET share references, so "billion laughs" expansion costs nothing here). Text lines
(protocol 0) are read to their newline however long, as CPython's ``readline`` does: a long
line must not end the reading before the opcodes after it.

Containers remember what was put in them, so that the size the loaded object takes once
materialised (``json.dumps``, ``repr``, a deep copy, a walk over it) is computed over the memo
graph, each shared object counted once per reference (``expanded_size``): ~90 memo references
nested ten deep expand to 10^9 nodes, which a count of raw references cannot see.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from torchshield.model.scan.allowlist import CRITICAL, HIGH, Allowlist, Verdict

__all__ = [
    "LEGACY_MAGIC",
    "MAX_EXPANDED",
    "PickleWalk",
    "RawFinding",
    "expanded_size",
    "looks_like_pickle",
    "walk_pickle",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of torch's legacy (non-zip) format
MAX_TEXT = 1 << 16  # longer strings are kept as opaque markers: no module name is that long
MEDIUM = "medium"
MAX_EXPANDED = 10_000_000  # nodes of the materialised object; see _Walker.check_expansion
_EXPANSION_RATIO = 100  # ... and that many times the opcodes (a plain large pickle is not an attack)
_SIZE_CAP = 1 << 63  # sizes saturate here: exact arithmetic on 1000^120 would itself be a bomb

# Calls whose first argument is itself a serialized object: its bytes are scanned as a nested file.
NESTED_LOADERS = frozenset(
    {
        "pickle.loads",
        "_pickle.loads",
        "cPickle.loads",
        "pickle._loads",
        "dill.loads",
        "cloudpickle.loads",
        "torch.load",
        "torch.serialization.load",
        "torch.storage._load_from_bytes",
        "joblib.load",
        "numpy.loads",
        "pandas.read_pickle",
    }
)


@dataclass(frozen=True)
class RawFinding:
    """A finding inside one pickle; the caller adds the file and member."""

    offset: int
    severity: str
    kind: str
    message: str
    callable: str | None = None


class _Opaque:
    __slots__ = ()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "<opaque>"


OPAQUE = _Opaque()


class Node(list):
    """A container built by the stream, holding what was put into it, for ``expanded_size``.

    The node is itself a list of chunks: the Python list popped at a MARK as it is, a single
    value as a tuple of one, so APPENDS/SETITEMS cost one append here (a list subclass with no
    ``__init__`` of its own is created at C speed); only ``expanded_size`` looks inside."""

    __slots__ = ()


class ListNode(Node):
    """A list (EMPTY_LIST, LIST)."""

    __slots__ = ()


class MapNode(Node):
    """A dict, set or frozenset (EMPTY_DICT, DICT, EMPTY_SET, FROZENSET)."""

    __slots__ = ()


class Blob:
    """A bytes literal, kept as a view into the input (no copy)."""

    __slots__ = ("offset", "view")

    def __init__(self, view: memoryview, offset: int) -> None:
        self.view = view
        self.offset = offset


class Ref:
    """An imported global: where it was imported and how it was used."""

    __slots__ = ("calls", "full", "offset", "verdict")

    def __init__(self, full: str, offset: int, verdict: Verdict) -> None:
        self.full = full
        self.offset = offset
        self.verdict = verdict
        self.calls: list[str] = []


class Call(Node):
    """The result of calling something: an opaque object with a known origin. Its arguments and
    whatever is later put into it (SETITEMS, APPENDS, BUILD state) are its chunks."""

    __slots__ = ("callee",)
    callee: Any


@dataclass
class PickleWalk:
    """What one pickle (one STOP) contains."""

    start: int
    end: int = 0
    complete: bool = False
    root: Any = None
    ops: int = 0
    findings: list[RawFinding] = field(default_factory=list)
    refs: list[Ref] = field(default_factory=list)
    nested: list[tuple[int, str, Blob]] = field(default_factory=list)
    persistent_ids: list[tuple[Any, ...]] = field(default_factory=list)
    resync: list[int] = field(default_factory=list)  # where another reading of the bytes starts
    error: str | None = None

    @property
    def imports_anything(self) -> bool:
        return bool(self.refs) or any(f.kind == "extension" for f in self.findings)


# Argument layout per opcode: ("none",), ("fixed", n), ("line",), ("lines",), ("len", size, signed)
_NONE, _FIXED, _LINE, _LINES, _LEN = range(5)
_ARGS: dict[int, tuple[int, int, bool]] = {}
for _ch in b"(.012NRabd}el]ost)uQ\x81\x85\x86\x87\x88\x89\x92\x93\x94\x8f\x90\x91\x97\x98":
    _ARGS[_ch] = (_NONE, 0, False)
for _op, _n in (
    (b"J", 4),
    (b"K", 1),
    (b"M", 2),
    (b"G", 8),
    (b"h", 1),
    (b"j", 4),
    (b"q", 1),
    (b"r", 4),
    (b"\x82", 1),
    (b"\x83", 2),
    (b"\x84", 4),
    (b"\x80", 1),
    (b"\x95", 8),
):
    _ARGS[_op[0]] = (_FIXED, _n, False)
for _ch in b"ILFSVPgp":
    _ARGS[_ch] = (_LINE, 0, False)
for _ch in b"ci":
    _ARGS[_ch] = (_LINES, 0, False)
for _op, _n, _signed in (
    (b"T", 4, True),
    (b"U", 1, False),
    (b"X", 4, False),
    (b"\x8c", 1, False),
    (b"\x8d", 8, False),
    (b"B", 4, False),
    (b"C", 1, False),
    (b"\x8e", 8, False),
    (b"\x96", 8, False),
    (b"\x8a", 1, False),
    (b"\x8b", 4, True),
):
    _ARGS[_op[0]] = (_LEN, _n, _signed)

_OP_NAMES = {
    ord(k): v
    for k, v in {
        "c": "GLOBAL",
        "i": "INST",
        "R": "REDUCE",
        "o": "OBJ",
        "\x81": "NEWOBJ",
        "\x92": "NEWOBJ_EX",
        "b": "BUILD",
        "\x93": "STACK_GLOBAL",
    }.items()
}
_UINT = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}
_INT4 = struct.Struct("<i")
_SAFE_PROTO_FIRST = frozenset(_ARGS)


def looks_like_pickle(head: bytes) -> bool:
    """A cheap sniff: PROTO 0-5 first, or a protocol 0/1 opening opcode."""
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) > 1 and head[1] <= 5
    return head[0] in b"(}]c)iNIJKLSVXUTF"


class _Walker:
    def __init__(self, data: Any, start: int, end: int, allow: Allowlist) -> None:
        self.data = data  # bytes, bytearray or mmap: anything with .find
        self.buf = memoryview(data)
        self.end = end
        self.allow = allow
        self.walk = PickleWalk(start=start)
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.refs_by_name: dict[str, Ref] = {}
        self.frame_end = -1
        self.arg_pos = 0
        # memo GETs and DUPs of containers: shared containers are the raw material of expansion
        # attacks; sharing a string or a name (every torch checkpoint does) cannot expand anything
        self.reuse = 0
        self.fetches: dict[int, int] = {}  # id(container) -> times re-fetched (containers live in memo)
        self.calls: list[Call] = []
        self.max_expanded = MAX_EXPANDED

    # -- findings -------------------------------------------------------------------
    def anomaly(self, offset: int, message: str, severity: str = HIGH, kind: str = "structure") -> None:
        self.walk.findings.append(RawFinding(offset, severity, kind, message))

    def pop(self, offset: int) -> Any:
        if self.stack:
            return self.stack.pop()
        self.anomaly(
            offset, "stack underflow: the loader stops with an error here (malformed or crafted stream)"
        )
        return OPAQUE

    def pop_mark(self, offset: int) -> list[Any]:
        items = self.stack
        if self.metastack:
            self.stack = self.metastack.pop()
        else:
            self.anomaly(offset, "no MARK to pop to: the loader stops with an error here")
            self.stack = []
        return items

    def top(self, offset: int) -> Any:
        if self.stack:
            return self.stack[-1]
        self.anomaly(
            offset, "stack underflow: the loader stops with an error here (malformed or crafted stream)"
        )
        return OPAQUE

    # -- names -----------------------------------------------------------------------
    def import_name(self, module: str, name: str, offset: int) -> Ref:
        full = f"{module}.{name}"
        ref = self.refs_by_name.get(full)
        if ref is None:
            ref = Ref(full, offset, self.allow.judge(module, name))
            self.refs_by_name[full] = ref
            self.walk.refs.append(ref)
        return ref

    def call(self, callee: Any, how: str, offset: int, args: Any = None) -> Call:
        if isinstance(callee, Ref):
            callee.calls.append(f"{how}@{offset}")
            if (
                callee.full in NESTED_LOADERS
                and isinstance(args, tuple)
                and args
                and isinstance(args[0], Blob)
            ):
                self.walk.nested.append((offset, callee.full, args[0]))
        else:
            what = (
                "the result of another call"
                if isinstance(callee, Call)
                else "a value that is not an imported name"
            )
            self.anomaly(offset, f"{how} calls {what} (indirect call)")
        result = Call(((args,),) if args is not None else ())
        result.callee = callee
        self.calls.append(result)
        return result

    # -- argument decoding ---------------------------------------------------------
    def text(self, raw: memoryview, offset: int, encoding: str = "utf-8") -> Any:
        if len(raw) > MAX_TEXT:
            return OPAQUE
        try:
            if encoding == "utf-8":
                return codecs.decode(raw, "utf-8", "surrogatepass")
            return codecs.decode(raw, encoding)
        except (UnicodeDecodeError, ValueError):
            self.anomaly(
                offset, "string is not valid text: the loader fails here (parser-differential trick)"
            )
            return OPAQUE

    def name_line(self, raw: memoryview, offset: int) -> str:
        if len(raw) > MAX_TEXT:
            self.anomaly(offset, f"GLOBAL name line of {len(raw)} bytes: no importable name is that long")
            raw = raw[:MAX_TEXT]
        try:
            return codecs.decode(raw, "utf-8")
        except UnicodeDecodeError:
            self.anomaly(
                offset, "GLOBAL name is not valid UTF-8: the loader fails here, scanners often crash"
            )
            return codecs.decode(raw, "utf-8", "backslashreplace")

    def run(self) -> PickleWalk:
        buf, end, walk = self.buf, self.end, self.walk
        pos = walk.start
        stack = self.stack
        memo = self.memo
        args_table = _ARGS
        first = True
        while True:
            if pos >= end:
                walk.error = "stream ends before STOP (truncated)"
                self.anomaly(
                    pos, "pickle ends before its STOP opcode (truncated or crafted)", kind="unreadable"
                )
                break
            op = buf[pos]
            offset = pos
            spec = args_table.get(op)
            if spec is None:
                walk.error = f"invalid opcode 0x{op:02x}"
                self.anomaly(
                    offset,
                    f"invalid opcode 0x{op:02x}: the loader stops with an error here",
                    kind="unreadable",
                )
                break
            kind, size, signed = spec
            pos += 1
            arg: Any = None
            if kind == _FIXED:
                if pos + size > end:
                    walk.error = "truncated argument"
                    self.anomaly(
                        offset, "opcode argument runs past the end of the data (truncated)", kind="unreadable"
                    )
                    break
                arg = buf[pos : pos + size]
                pos += size
            elif kind == _LEN:
                if pos + size > end:
                    walk.error = "truncated length"
                    self.anomaly(
                        offset, "length field runs past the end of the data (truncated)", kind="unreadable"
                    )
                    break
                n = (
                    _INT4.unpack_from(buf, pos)[0]
                    if signed and size == 4
                    else _UINT[size].unpack_from(buf, pos)[0]
                )
                pos += size
                if n < 0 or n > end - pos:
                    walk.error = "absurd length field"
                    self.anomaly(
                        offset,
                        f"length field says {n} bytes but only {end - pos} remain (absurd or truncated)",
                        kind="unreadable",
                    )
                    break
                arg = buf[pos : pos + n]
                self.arg_pos = pos
                pos += n
            elif kind == _LINE or kind == _LINES:
                lines = []
                for _ in range(1 if kind == _LINE else 2):
                    nl = self.data.find(b"\n", pos, end)  # no cap: CPython's readline has none
                    if nl < 0:
                        break
                    lines.append(buf[pos:nl])
                    pos = nl + 1
                if len(lines) < (1 if kind == _LINE else 2):
                    walk.error = "unterminated line argument"
                    self.anomaly(
                        offset, "text argument has no terminating newline (truncated)", kind="unreadable"
                    )
                    break
                arg = lines
            if self.frame_end >= 0 and offset < self.frame_end < pos:
                self.anomaly(
                    offset,
                    "opcode straddles a FRAME boundary: loaders and scanners can read different "
                    "opcodes here (parser differential); the bytes after the frame were scanned too",
                )
                walk.resync.append(self.frame_end)
            walk.ops += 1
            if op == 0x80:  # PROTO
                if not first:
                    self.anomaly(
                        offset, "PROTO opcode not at the start of the pickle (duplicate or misplaced)"
                    )
                if arg[0] > 5:
                    self.anomaly(offset, f"unsupported protocol {arg[0]}: the loader refuses the stream here")
            first = False
            if op == 0x2E:  # STOP
                walk.root = self.pop(offset)
                walk.complete = True
                break
            self.step(op, offset, arg, stack, memo)
            stack = self.stack
        walk.end = pos
        if self.reuse and expansion_possible(self.fetches.values(), walk.ops, self.max_expanded):
            self.check_expansion()
        return walk

    def check_expansion(self) -> None:
        """Flag an object graph whose materialised size is both large and far larger than the stream.

        The roots are the loaded object and every call's arguments (a call such as ``str(x)``
        materialises ``x`` while loading, even when its result is then popped)."""
        walk = self.walk
        sizes: dict[int, int] = {}
        biggest = 0
        for root in (walk.root, *self.calls):
            biggest = max(biggest, expanded_size(root, sizes))
        if biggest > self.max_expanded and biggest > _EXPANSION_RATIO * walk.ops:
            shown = f"more than {_SIZE_CAP:.2e}" if biggest >= _SIZE_CAP else f"{biggest:,}"
            walk.findings.append(
                RawFinding(
                    walk.start,
                    HIGH,
                    "expansion",
                    f"the loaded object expands to {shown} nodes when materialised, from {walk.ops} "
                    f"opcodes and {self.reuse} memo/DUP references to containers: a memory-expansion (billion laughs) "
                    f"attack on whoever walks, prints or copies it (limit {self.max_expanded:,})",
                )
            )

    def step(self, op: int, offset: int, arg: Any, stack: list[Any], memo: dict[int, Any]) -> None:
        if op in (0x8C, 0x58, 0x8D):  # SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
            stack.append(self.text(arg, offset))
        elif op in (0x94, 0x71, 0x72, 0x70):  # MEMOIZE, BINPUT, LONG_BINPUT, PUT
            value = self.top(offset)
            if op == 0x94:
                memo[len(memo)] = value
            else:
                idx = _memo_index(op, arg)
                if idx is None or idx < 0:
                    self.anomaly(offset, "memo PUT with an invalid index")
                else:
                    memo[idx] = value
        elif op in (0x68, 0x6A, 0x67):  # BINGET, LONG_BINGET, GET
            idx = _memo_index(op, arg)
            if idx is None or idx not in memo:
                self.anomaly(
                    offset, f"memo GET of unset slot {idx}: the loader fails here; a naive scanner crashes"
                )
                stack.append(OPAQUE)
            else:
                value = memo[idx]
                stack.append(value)
                if type(value) in _CONTAINERS:
                    self.reuse += 1
                    self.fetches[id(value)] = self.fetches.get(id(value), 0) + 1
        elif op == 0x28:  # MARK
            self.metastack.append(stack)
            self.stack = []
        elif op in (0x4B, 0x4D, 0x4A):  # BININT1, BININT2, BININT
            stack.append(int.from_bytes(arg, "little", signed=(op == 0x4A)))
        elif op in (0x8A, 0x8B):  # LONG1, LONG4
            stack.append(int.from_bytes(arg, "little", signed=True) if len(arg) <= 64 else OPAQUE)
        elif op in (0x42, 0x43, 0x8E, 0x96):  # BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
            stack.append(Blob(arg, self.arg_pos))
        elif op in (0x54, 0x55):  # BINSTRING, SHORT_BINSTRING: str under Python 3's default encoding
            stack.append(self.text(arg, offset, "latin-1"))
        elif op == 0x53:  # STRING
            stack.append(_quoted_string(arg[0]))
        elif op == 0x56:  # UNICODE
            stack.append(self.text(arg[0], offset, "raw-unicode-escape"))
        elif op in (0x49, 0x4C):  # INT, LONG (decimal lines)
            stack.append(_decimal(arg[0]))
        elif op in (0x85, 0x86, 0x87):  # TUPLE1-3
            n = op - 0x84
            items = [self.pop(offset) for _ in range(n)]
            stack.append(tuple(reversed(items)))
        elif op == 0x74:  # TUPLE
            items = self.pop_mark(offset)
            self.stack.append(tuple(items))
        elif op == 0x29:  # EMPTY_TUPLE
            stack.append(())
        elif op in (0x5D, 0x7D, 0x8F, 0x4E, 0x88, 0x89, 0x46, 0x47):  # empties, None, bools, floats
            stack.append(ListNode() if op == 0x5D else MapNode() if op in (0x7D, 0x8F) else OPAQUE)
        elif op in (0x6C, 0x64, 0x91):  # LIST, DICT, FROZENSET
            items = self.pop_mark(offset)
            self.stack.append(ListNode((items,)) if op == 0x6C else MapNode((items,)))
        elif op in (0x61, 0x73, 0x75, 0x65, 0x90):  # APPEND, SETITEM, SETITEMS, APPENDS, ADDITEMS
            added: Any
            if op == 0x61:
                added = self.pop(offset)
            elif op == 0x73:
                value = self.pop(offset)
                added = [self.pop(offset), value]
            else:
                added = self.pop_mark(offset)
            target = self.top(offset)
            if type(target) in _CONTAINERS and type(target) is not tuple:
                target.append(added if op != 0x61 else (added,))
            if op in (0x73, 0x75) and type(target) in (ListNode, tuple):
                self.anomaly(
                    offset,
                    "SETITEM on a list or tuple: crashes or corrupts memory in torch's "
                    "weights_only loader (CVE-2026-24747 class)",
                )
        elif op == 0x63 or op == 0x69:  # GLOBAL, INST
            module = self.name_line(arg[0], offset)
            name = self.name_line(arg[1], offset)
            ref = self.import_name(module, name, offset)
            if op == 0x63:
                self.stack.append(ref)
            else:
                items = self.pop_mark(offset)
                self.stack.append(self.call(ref, "INST", offset, tuple(items)))
        elif op == 0x93:  # STACK_GLOBAL
            name = self.pop(offset)
            module = self.pop(offset)
            if isinstance(module, str) and isinstance(name, str):
                self.stack.append(self.import_name(module, name, offset))
            else:
                shown = "/".join(_describe(v) for v in (module, name))
                self.walk.findings.append(
                    RawFinding(
                        offset,
                        CRITICAL,
                        "structure",
                        f"STACK_GLOBAL with operands that are not plain strings ({shown}): the imported name is "
                        "hidden from static reading (type confusion or computed name)",
                        callable="<computed>",
                    )
                )
                self.stack.append(OPAQUE)
        elif op == 0x52:  # REDUCE
            args = self.pop(offset)
            callee = self.pop(offset)
            self.stack.append(self.call(callee, "REDUCE", offset, args))
        elif op == 0x81:  # NEWOBJ
            args = self.pop(offset)
            cls = self.pop(offset)
            self.stack.append(self.call(cls, "NEWOBJ", offset, args))
        elif op == 0x92:  # NEWOBJ_EX
            self.pop(offset)
            args = self.pop(offset)
            cls = self.pop(offset)
            self.stack.append(self.call(cls, "NEWOBJ_EX", offset, args))
        elif op == 0x6F:  # OBJ
            items = self.pop_mark(offset)
            cls = items[0] if items else OPAQUE
            self.stack.append(self.call(cls, "OBJ", offset, tuple(items[1:])))
        elif op == 0x62:  # BUILD
            state = self.pop(offset)
            target = self.top(offset)
            if type(target) in _CONTAINERS and type(target) is not tuple:
                target.append((state,))
            elif isinstance(target, Ref):
                self.walk.findings.append(
                    RawFinding(
                        offset,
                        CRITICAL,
                        "structure",
                        f"BUILD sets attributes on the imported object {target.full} (state injection)",
                        callable=target.full,
                    )
                )
                target.calls.append(f"BUILD@{offset}")
        elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            code = int.from_bytes(arg, "little")
            self.walk.findings.append(
                RawFinding(
                    offset,
                    CRITICAL,
                    "extension",
                    f"EXT{len(arg) if len(arg) != 4 else 4} extension code {code}: imports a callable through the "
                    "copyreg registry with no name in the file",
                    callable=f"<extension {code}>",
                )
            )
            self.stack.append(OPAQUE)
        elif op == 0x51:  # BINPERSID
            pid = self.pop(offset)
            if isinstance(pid, tuple):
                self.walk.persistent_ids.append(pid)
            self.stack.append(OPAQUE)
        elif op == 0x50:  # PERSID
            self.stack.append(OPAQUE)
        elif op == 0x30:  # POP
            if self.stack:
                self.stack.pop()
            elif self.metastack:
                self.stack = self.metastack.pop()
            else:
                self.pop(offset)
        elif op == 0x31:  # POP_MARK
            self.pop_mark(offset)
        elif op == 0x32:  # DUP
            value = self.top(offset)
            self.stack.append(value)
            if type(value) in _CONTAINERS:
                self.reuse += 1
                self.fetches[id(value)] = self.fetches.get(id(value), 0) + 1
        elif op == 0x95:  # FRAME
            size = int.from_bytes(arg, "little")
            self.frame_end = offset + 9 + size
            if self.frame_end > self.end:
                self.anomaly(
                    offset, f"FRAME declares {size} bytes, more than the data holds (truncated or crafted)"
                )
        elif op in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
            self.stack.append(OPAQUE)
        # PROTO needs no stack work; STOP is handled by the loop.


_CONTAINERS = frozenset({ListNode, MapNode, Call, tuple})


def expansion_possible(fetches: Iterable[int], ops: int, max_expanded: int) -> bool:
    """Whether containers re-fetched ``fetches`` times each (memo GET, DUP) in a stream of ``ops``
    opcodes can reach a flagged size; when not, the expansion walk is skipped.

    Each push places a value in at most one container, so a container's in-degree is at most
    1 + its re-fetches. A root-to-node path picks one parent at each node it passes, so a node
    is reached by at most prod(1 + fetches) paths, and the expanded size is at most
    2 * ops * prod(1 + fetches) (nodes plus back-edges counted as leaves). The flag needs more
    than ``max_expanded`` and more than 100 x ops."""
    bound = 2
    for count in fetches:
        bound *= 1 + count
        if bound * ops > max_expanded and bound > _EXPANSION_RATIO:
            return True
    return False


def expanded_size(root: Any, sizes: dict[int, int] | None = None) -> int:
    """How many nodes ``root`` has once materialised as a tree: every reference to a shared
    object counts that object's whole size again (a DAG-to-tree size), saturating at 2**63.

    Iterative post-order walk, each container visited once (``sizes`` caches by identity, and
    may be shared between calls over one stream), so time is linear in the graph however large
    the result. A reference back to a container still being walked (a cycle: ``repr`` prints
    ``[...]``) counts 1. Leaves (strings, numbers, names, bytes) count 1."""
    if sizes is None:
        sizes = {}
    if type(root) not in _CONTAINERS:
        return 1
    done = sizes.get(id(root))
    if done is not None:
        return done
    active = {id(root)}
    work: list[tuple[Any, Any, list[int]]] = [(root, _children(root), [1])]
    known = sizes.get
    containers = _CONTAINERS
    while work:
        node, children, acc = work[-1]
        for child in children:
            if type(child) not in containers:
                acc[0] += 1
                continue
            cid = id(child)
            got = known(cid)
            if got is not None:
                acc[0] += got  # at most (children x cap) before the node saturates: no blow-up
            elif cid in active:
                acc[0] += 1
            else:
                active.add(cid)
                work.append((child, _children(child), [1]))
                break
        else:
            work.pop()
            active.discard(id(node))
            total = min(_SIZE_CAP, acc[0])
            sizes[id(node)] = total
            if work:
                work[-1][2][0] += total
    return sizes[id(root)]


def _children(node: Any) -> Any:
    if isinstance(node, tuple):
        return iter(node)
    return chain.from_iterable(node)


def _memo_index(op: int, arg: Any) -> int | None:
    if op in (0x68, 0x71):
        return arg[0]
    if op in (0x6A, 0x72):
        return int.from_bytes(arg, "little")
    return _decimal(arg[0]) if isinstance(_decimal(arg[0]), int) else None


def _decimal(raw: memoryview) -> Any:
    text = bytes(raw[:64]).strip().rstrip(b"L")
    if len(raw) > 64:
        return OPAQUE
    try:
        return int(text)
    except ValueError:
        return OPAQUE


_QUOTED = re.compile(rb"^(['\"])(.*)\1\s*$", re.DOTALL)


def _quoted_string(raw: memoryview) -> Any:
    if len(raw) > MAX_TEXT:
        return OPAQUE
    m = _QUOTED.match(bytes(raw))
    if not m:
        return OPAQUE
    try:
        return codecs.escape_decode(m.group(2))[0].decode("latin-1")
    except ValueError:
        return OPAQUE


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, Blob):
        return "bytes"
    if isinstance(value, Ref):
        return f"import {value.full}"
    if isinstance(value, Call):
        return "call result"
    if isinstance(value, int):
        return "int"
    return "unknown value"


def walk_pickle(
    data: Any, start: int, end: int, allow: Allowlist, *, max_expanded: int = MAX_EXPANDED
) -> PickleWalk:
    """Walk one pickle in ``data[start:end]`` until its STOP (or the first fatal irregularity).

    ``data`` is bytes, a bytearray or an mmap; offsets in the result are absolute in ``data``.
    ``max_expanded`` bounds the materialised size of the loaded object (billion laughs)."""
    walker = _Walker(data, start, end, allow)
    walker.max_expanded = max_expanded
    return walker.run()
