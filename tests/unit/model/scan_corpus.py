"""A corpus of malicious and benign model files, written byte by byte (never executed).

Each malicious sample follows one technique of shared/reference/model-threats.md (IDs A1..E14).
Nothing here unpickles anything: payload pickles are assembled from opcodes, so building the
corpus cannot run them either. Used by tests/unit/model/test_scan_*.py and benchmarks/bench_scan.py.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CMD = "echo torchshield-canary"


# -- opcode builders ---------------------------------------------------------------------
def su(s: str) -> bytes:
    """SHORT_BINUNICODE (or BINUNICODE when long)."""
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b if len(b) < 256 else b"X" + struct.pack("<I", len(b)) + b


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglob(module: str, name: str) -> bytes:
    return su(module) + b"\x94" + su(name) + b"\x94\x93"


def call(callee: bytes, *args: bytes) -> bytes:
    return callee + b"(" + b"".join(args) + b"tR"


def p2(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def p4(body: bytes) -> bytes:
    frame = body + b"."
    return b"\x80\x04\x95" + struct.pack("<Q", len(frame)) + frame


def reduce_payload(module: str, name: str, arg: str = CMD, proto: int = 2) -> bytes:
    """``module.name(arg)`` at the given protocol: GLOBAL for <=3, STACK_GLOBAL for >=4."""
    if proto == 0:
        return glob(module, name) + b"(V" + arg.encode() + b"\ntR."
    if proto == 1:
        return glob(module, name) + b"(X" + struct.pack("<I", len(arg)) + arg.encode() + b"tR."
    if proto <= 3:
        return bytes([0x80, proto]) + glob(module, name) + su(arg) + b"\x85R."
    return bytes([0x80, proto]) + sglob(module, name) + su(arg) + b"\x85R."


def _fixed(name: str, method: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    """A member with a fixed timestamp: the same corpus bytes on every run (xdist compares test ids)."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = method
    return info


def torch_zip(
    pickle_bytes: bytes,
    *,
    name: str = "archive/data.pkl",
    deflate: bool = False,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """A torch-style zip checkpoint holding the given data.pkl."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        for member, data in {
            name: pickle_bytes,
            "archive/version": b"3\n",
            "archive/byteorder": b"little",
            **(extra or {}),
        }.items():
            z.writestr(_fixed(member, method), data)
    return buf.getvalue()


def patch_zip(data: bytes, *, flag: int = 0, crc: bool = False, central_name: str | None = None) -> bytes:
    """Tamper with a zip's first member the ways torch tolerates and Python's zipfile does not."""
    out = bytearray(data)
    cd = out.find(b"PK\x01\x02")
    if flag:
        struct.pack_into("<H", out, 6, struct.unpack_from("<H", out, 6)[0] | flag)
        struct.pack_into("<H", out, cd + 8, struct.unpack_from("<H", out, cd + 8)[0] | flag)
    if crc:
        struct.pack_into("<I", out, 14, struct.unpack_from("<I", out, 14)[0] ^ 0xDEADBEEF)
        struct.pack_into("<I", out, cd + 16, struct.unpack_from("<I", out, cd + 16)[0] ^ 0xDEADBEEF)
    if central_name is not None:
        n = struct.unpack_from("<H", out, cd + 28)[0]
        new = central_name.encode()
        assert len(new) == n, "same-length name keeps offsets valid"
        out[cd + 46 : cd + 46 + n] = new
    return bytes(out)


def npy_object(pickle_bytes: bytes) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + pickle_bytes


def legacy(
    payload_main: bytes = b"\x80\x02}q\x00.", *, magic: bytes | None = None, keys: bytes = b"\x80\x02]q\x00."
) -> bytes:
    """torch's legacy stream: magic, protocol, sys_info, main pickle, storage keys, raw data."""
    magic = magic or b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
    proto = b"\x80\x02M\xe9\x03."
    sys_info = b"\x80\x02}q\x00(X\x10\x00\x00\x00protocol_versionq\x01M\xe9\x03u."
    return magic + proto + sys_info + payload_main + keys + struct.pack("<q", 4) + b"\x00" * 16


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def safetensors_raw(header: bytes, data: bytes = b"", declared: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if declared is None else declared) + header + data


# -- the malicious catalogue ----------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    ident: str
    filename: str
    build: Callable[[], bytes]
    expect: str  # "unsafe" (must carry a critical finding naming `callable`), "suspicious", "unreadable"
    callable: str | None = None


def _calls(ident: str, targets: list[str], proto: int = 2) -> list[Sample]:
    out = []
    for target in targets:
        module, _, name = target.rpartition(".")
        if ":" in target:
            module, name = target.split(":")
        out.append(
            Sample(
                f"{ident}-{target}",
                f"{ident}_{target.replace(':', '_')}.pkl",
                lambda m=module, n=name, p=proto: reduce_payload(m, n, proto=p),
                "unsafe",
                f"{module}.{name}",
            )
        )
    return out


def _getattr_chain() -> bytes:
    imp = call(glob("builtins", "__import__"), su("os"))
    fn = call(glob("builtins", "getattr"), imp, su("system"))
    return p2(fn + su(CMD) + b"\x85R")


def _sour_pickles() -> bytes:
    g = call(glob("__builtin__", "globals"))
    get = call(glob("__builtin__", "getattr"), glob("__builtin__", "dict"), su("get"))
    builtins = call(get, g, su("__builtins__"))
    ev = call(glob("__builtin__", "getattr"), builtins, su("eval"))
    return p2(ev + su("1+1") + b"\x85R")


def _memo_obfuscated() -> bytes:
    # D1: decoys pushed and popped; the real operands come from memo slots set far earlier
    body = (
        su("torch")
        + b"\x94"
        + su("LongStorage")
        + b"\x94"
        + su("o" + "s")
        + b"\x94"
        + su("sys" + "tem")
        + b"\x94"
        + b"0000"
        + b"h\x00h\x01\x93"
        + b"0"
        + b"h\x02h\x03\x93"
        + su(CMD)
        + b"\x85R"
    )
    return b"\x80\x04" + body + b"."


def _stack_global_string_ops() -> bytes:
    # D2: protocol-0 STRING and BINSTRING operands feeding STACK_GLOBAL
    return b"\x80\x04S'os'\nU\x06system\x93" + su(CMD) + b"\x85R."


def _type_confusion() -> bytes:
    # D3: bytearray operands (the loader raises; a naive scanner crashes) then the payload
    return b"\x80\x05\x96" + struct.pack("<Q", 2) + b"os" + su("system") + b"\x93" + su(CMD) + b"\x85R."


def _memo_keyerror() -> bytes:
    return b"\x80\x04h\x07" + sglob("os", "system") + su(CMD) + b"\x85R."


def _invalid_utf8() -> bytes:
    return b"\x80\x02c\xff\xfeos\nsystem\n" + su(CMD) + b"\x85R."


def _concatenated() -> bytes:
    return p2(b"}q\x00") + reduce_payload("os", "system")


def _broken_after_payload() -> bytes:
    return reduce_payload("os", "system")[:-1] + b"\xff\xfe garbage"


def _duplicate_proto() -> bytes:
    return b"\x80\x02\x80\x04" + sglob("posix", "system") + su(CMD) + b"\x85R."


def _frame_divergence() -> bytes:
    # D8: BINBYTES claims more bytes than its FRAME holds; the buried opcodes are the payload
    hidden = sglob("os", "system") + su(CMD) + b"\x85R."
    frame = b"B" + struct.pack("<I", len(hidden)) + b"0"
    return b"\x80\x04\x95" + struct.pack("<Q", len(frame)) + frame + hidden


def _reduce_pop() -> bytes:
    return p2(call(glob("os", "system"), su(CMD)) + b"0N")


def _exception_after() -> bytes:
    return p2(call(glob("os", "system"), su(CMD)) + b"0" + call(glob("builtins", "int"), su("not-a-number")))


def _expansion() -> bytes:
    body = b"]q\x00" + (b"(" + b"h\x00" * 400 + b"l" + b"q\x00") * 300
    return p2(body)


def _ext(code: int, width: int) -> bytes:
    op = {1: b"\x82", 2: b"\x83", 4: b"\x84"}[width]
    return p2(op + code.to_bytes(width, "little") + su(CMD) + b"\x85R")


def _builtins_plant() -> bytes:
    # B7: numpy.__builtins__ fetched through an allowlisted module, then BUILD on it
    return p2(glob("numpy", "__builtins__") + b"}q\x00b" + b"0" + call(glob("builtins", "eval"), su("1")))


def _inst_exec() -> bytes:
    return b"(S'print(1)'\ni__builtin__\nexec\n."


def _obj_system() -> bytes:
    return b"\x80\x01(cos\nsystem\nX" + struct.pack("<I", len(CMD)) + CMD.encode() + b"o."


def _newobj_popen() -> bytes:
    return p2(glob("subprocess", "Popen") + su("true") + b"\x85\x81")


def _newobj_ex() -> bytes:
    return b"\x80\x04" + sglob("subprocess", "Popen") + su("true") + b"\x85}\x92."


def _partial(target: bytes, *args: bytes) -> bytes:
    return p2(call(glob("functools", "partial"), target, *args) + b")R")


def _nested_pickle_loads() -> bytes:
    inner = reduce_payload("os", "system")
    return p2(glob("pickle", "loads") + b"C" + bytes([len(inner)]) + inner + b"\x85R")


def _zlib_loads() -> bytes:
    blob = zlib.compress(reduce_payload("os", "system"))
    return p2(
        glob("pickle", "loads")
        + b"("
        + glob("zlib", "decompress")
        + b"C"
        + bytes([len(blob)])
        + blob
        + b"\x85Rt"
        + b"R"
    )


def _setitem_list() -> bytes:
    return p2(b"]q\x00" + su("k") + su("v") + b"s")


def _legacy_eval_magic() -> bytes:
    magic = p2(call(glob("builtins", "eval"), su("0x1950a86a20f9469cfc6c")))
    return legacy(magic=magic, keys=reduce_payload("os", "system"))


def _storage_overflow() -> bytes:
    pid = (
        b"("
        + su("storage")
        + glob("torch", "FloatStorage")
        + su("0")
        + su("cpu")
        + b"J"
        + struct.pack("<i", 1_000_000)
        + b"tQ"
    )
    body = call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        pid,
        b"K\x00",
        b"K\x04\x85",
        b"K\x01\x85",
        b"\x89",
        call(glob("collections", "OrderedDict")),
    )
    return torch_zip(p2(body), extra={"archive/data/0": b"\x00" * 16})


def _polyglot() -> bytes:
    return reduce_payload("os", "system") + torch_zip(p2(b"}"))


def _nested_zip() -> bytes:
    inner = torch_zip(reduce_payload("os", "system"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(_fixed("model/inner.pt"), inner)
    return buf.getvalue()


def _encrypted_like() -> bytes:
    data = torch_zip(bytes(range(256)) * 4)
    return patch_zip(data, flag=0x1)


def malicious() -> list[Sample]:
    s: list[Sample] = []
    for proto in range(6):
        s.append(
            Sample(
                f"A1-os.system-p{proto}",
                f"a1_p{proto}.pkl",
                lambda p=proto: reduce_payload("os", "system", proto=p),
                "unsafe",
                "os.system",
            )
        )
    s += _calls("A1", ["posix.system", "nt.system"])
    s += _calls("A2", ["builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__"])
    s.append(
        Sample(
            "A2-__builtin__.eval-p0",
            "a2_p0.pkl",
            lambda: reduce_payload("__builtin__", "eval", "1", 0),
            "unsafe",
            "__builtin__.eval",
        )
    )
    s.append(Sample("A3-getattr-import", "a3.pkl", _getattr_chain, "unsafe", "builtins.getattr"))
    s.append(Sample("A3-sour-pickles", "a3s.pkl", _sour_pickles, "unsafe", "__builtin__.globals"))
    s.append(
        Sample(
            "A4-dotted",
            "a4.pkl",
            lambda: reduce_payload("builtins", "eval.__call__", "1"),
            "unsafe",
            "builtins.eval.__call__",
        )
    )
    s.append(
        Sample(
            "A4-chain",
            "a4c.pkl",
            lambda: reduce_payload("torch.serialization", "os.system"),
            "unsafe",
            "torch.serialization.os.system",
        )
    )
    s += _calls(
        "A5",
        [
            "subprocess.run",
            "subprocess.Popen",
            "subprocess.check_output",
            "pty.spawn",
            "multiprocessing.util.spawnv_passfds",
            "_posixsubprocess.fork_exec",
        ],
    )
    s += _calls("A6", ["runpy._run_code", "runpy.run_path", "runpy.run_module"])
    s += _calls(
        "A7",
        [
            "bdb:Bdb.run",
            "pdb.run",
            "cProfile.run",
            "cProfile.runctx",
            "profile.run",
            "trace:Trace.runctx",
            "timeit.timeit",
            "doctest.debug_script",
            "code:InteractiveInterpreter.runcode",
            "idlelib.run:MyHandler.runcode",
            "lib2to3.pgen2.grammar:Grammar.loads",
            "numpy.testing._private.utils.runstring",
            "numpy.f2py.crackfortran.getlincoef",
            "_interpreters.run_string",
        ],
    )
    s += _calls(
        "A8",
        [
            "uuid._get_command_stdout",
            "_osx_support._read_output",
            "_aix_support._read_cmd_output",
            "imaplib.IMAP4_stream",
            "pydoc.pipepager",
            "_pyrepl.pager.pipe_pager",
            "test.support.script_helper.assert_python_ok",
            "asyncio.unix_events:_UnixSubprocessTransport._start",
        ],
    )
    s += _calls("A9", ["pip.main", "ensurepip._run_pip", "venv.create"])
    s += _calls(
        "A10",
        [
            "torch.utils.collect_env.run",
            "torch.utils.collect_env.run_and_read_all",
            "torch._inductor.codecache.compile_file",
            "torch.utils.bottleneck.__main__.run_cprofile",
            "torch.jit.unsupported_tensor_ops.execWrapper",
            "torch._dynamo.guards:GuardBuilder.get",
            "torch.fx.experimental.symbolic_shapes:ShapeEnv.evaluate_guards_expression",
        ],
    )
    s += _calls(
        "A11",
        ["mlflow.projects.backend.local._run_entry_point", "pandas.read_csv", "numpy.load", "joblib.load"],
    )
    s += _calls(
        "A12",
        [
            "socket.create_connection",
            "http.client:HTTPSConnection",
            "requests.get",
            "aiohttp:ClientSession",
            "urllib.request.urlopen",
            "webbrowser.open",
            "ssl.get_server_certificate",
        ],
    )
    s += _calls(
        "A13",
        [
            "builtins.open",
            "io.FileIO",
            "_io.FileIO",
            "shutil.rmtree",
            "distutils.file_util.write_file",
            "logging.FileHandler",
        ],
    )
    s += _calls("A14", ["ctypes.CDLL", "_ctypes.dlopen"])
    s += _calls(
        "A15",
        ["types.CodeType", "types.FunctionType", "cloudpickle.cloudpickle._make_function", "marshal.loads"],
    )
    s += _calls("A16", ["sys.exit", "os._exit"])
    s += _calls("B1", ["pkgutil.resolve_name"])
    s.append(
        Sample(
            "B2-pydoc-methodcaller",
            "b2.pkl",
            lambda: p2(
                call(
                    call(glob("operator", "methodcaller"), su("system"), su(CMD)),
                    call(glob("pydoc", "locate"), su("os")),
                )
            ),
            "unsafe",
            "operator.methodcaller",
        )
    )
    s += _calls("B3", ["operator.attrgetter", "operator.itemgetter", "_operator.methodcaller"])
    s.append(
        Sample(
            "B4-partial-system",
            "b4.pkl",
            lambda: _partial(glob("os", "system"), su(CMD)),
            "unsafe",
            "functools.partial",
        )
    )
    s.append(
        Sample(
            "B4-partial-torch.load",
            "b4t.pkl",
            lambda: _partial(glob("torch", "load"), su("other.pt")),
            "unsafe",
            "torch.load",
        )
    )
    s += _calls(
        "B5",
        [
            "importlib.import_module",
            "_frozen_importlib._bootstrap._load",
            "imp.load_source",
            "zipimport:zipimporter",
        ],
    )
    for width in (1, 2, 4):
        s.append(
            Sample(f"B6-EXT{width}", f"b6_{width}.pkl", lambda w=width: _ext(7, w), "unsafe", "<extension 7>")
        )
    s.append(Sample("B7-numpy-builtins", "b7.pkl", _builtins_plant, "unsafe", "numpy.__builtins__"))
    s += _calls(
        "B8",
        [
            "fickling.hook.remove_hook",
            "fickling.hook:deactivate_safe_ml_environment",
            "picklescan.scanner.scan_pickle_bytes",
            "modelscan.modelscan:ModelScan",
        ],
    )
    s.append(Sample("B9-INST-exec", "b9i.pkl", _inst_exec, "unsafe", "__builtin__.exec"))
    s.append(Sample("B9-OBJ-system", "b9o.pkl", _obj_system, "unsafe", "os.system"))
    s.append(Sample("B9-NEWOBJ-Popen", "b9n.pkl", _newobj_popen, "unsafe", "subprocess.Popen"))
    s.append(Sample("B9-NEWOBJ_EX-Popen", "b9x.pkl", _newobj_ex, "unsafe", "subprocess.Popen"))
    s.append(Sample("C1-pickle.loads", "c1.pkl", _nested_pickle_loads, "unsafe", "pickle.loads"))
    s += _calls(
        "C2",
        [
            "torch.utils._config_module:ConfigModule.load_config",
            "torch.utils.data.datapipes.utils.decoder.basichandlers",
        ],
    )
    s.append(Sample("C3-zlib-loads", "c3.pkl", _zlib_loads, "unsafe", "pickle.loads"))
    s.append(
        Sample(
            "C3-b64-eval",
            "c3b.pkl",
            lambda: p2(
                call(
                    glob("builtins", "eval"),
                    call(glob("base64", "b64decode"), su("X19pbXBvcnRfXygnb3MnKQ==")),
                )
            ),
            "unsafe",
            "builtins.eval",
        )
    )
    s.append(Sample("D1-memo-decoys", "d1.pkl", _memo_obfuscated, "unsafe", "os.system"))
    s.append(Sample("D2-string-operands", "d2.pkl", _stack_global_string_ops, "unsafe", "os.system"))
    s.append(Sample("D3-bytearray-operands", "d3.pkl", _type_confusion, "unsafe", "<computed>"))
    s.append(Sample("D3-memo-keyerror", "d3k.pkl", _memo_keyerror, "unsafe", "os.system"))
    s.append(Sample("D4-invalid-utf8", "d4.pkl", _invalid_utf8, "suspicious"))
    s.append(Sample("D5-concatenated", "d5.pkl", _concatenated, "unsafe", "os.system"))
    s.append(Sample("D6-broken-after", "d6.pkl", _broken_after_payload, "unsafe", "os.system"))
    s.append(Sample("D7-duplicate-proto", "d7.pkl", _duplicate_proto, "unsafe", "posix.system"))
    s.append(Sample("D8-frame-divergence", "d8.pkl", _frame_divergence, "unsafe", "os.system"))
    s.append(Sample("D9-reduce-pop", "d9.pkl", _reduce_pop, "unsafe", "os.system"))
    s.append(Sample("D10-exception", "d10.pkl", _exception_after, "unsafe", "os.system"))
    s.append(Sample("D11-expansion", "d11.pkl", _expansion, "suspicious"))
    s.append(
        Sample(
            "E1-wrong-ext",
            "e1.pt",
            lambda: torch_zip(p2(b"}"), extra={"archive/data.txt": reduce_payload("os", "system")}),
            "unsafe",
            "os.system",
        )
    )
    s.append(
        Sample(
            "E1-second-pkl",
            "e1b.pt",
            lambda: torch_zip(p2(b"}"), extra={"archive/extra.pkl": reduce_payload("os", "system", proto=0)}),
            "unsafe",
            "os.system",
        )
    )
    s.append(
        Sample(
            "E1-deflated",
            "e1d.pt",
            lambda: torch_zip(reduce_payload("os", "system"), deflate=True),
            "unsafe",
            "os.system",
        )
    )
    for flag in (0x1, 0x20, 0x40):
        s.append(
            Sample(
                f"E2-flag-{flag:#x}",
                f"e2_{flag}.pt",
                lambda f=flag: patch_zip(torch_zip(reduce_payload("os", "system")), flag=f),
                "unsafe",
                "os.system",
            )
        )
    s.append(
        Sample(
            "E3-crc",
            "e3.pt",
            lambda: patch_zip(torch_zip(reduce_payload("os", "system")), crc=True),
            "unsafe",
            "os.system",
        )
    )
    s.append(
        Sample(
            "E4-central-name",
            "e4.pt",
            lambda: patch_zip(torch_zip(reduce_payload("os", "system")), central_name="archive/data.txt"),
            "unsafe",
            "os.system",
        )
    )
    s.append(
        Sample(
            "E5-tar-wrap",
            "e5.tar",
            lambda: tar_of({"model.pt": torch_zip(reduce_payload("os", "system"))}),
            "unsafe",
            "os.system",
        )
    )
    s.append(Sample("E5-7z", "e5.7z", lambda: b"7z\xbc\xaf\x27\x1c" + b"\x00" * 64, "suspicious"))
    s.append(Sample("E6-encrypted", "e6.pt", _encrypted_like, "suspicious"))
    s.append(Sample("E7-legacy-eval-magic", "e7.pt", _legacy_eval_magic, "unsafe", "builtins.eval"))
    s.append(
        Sample(
            "E8-legacy-tar",
            "e8.tar",
            lambda: tar_of(
                {"sys_info": p2(b"}"), "pickle": reduce_payload("os", "system"), "storages": p2(b"K\x00")}
            ),
            "unsafe",
            "os.system",
        )
    )
    s.append(Sample("E9-polyglot", "e9.pt", _polyglot, "unsafe", "os.system"))
    s.append(Sample("E10-bin-ext", "e10.bin", lambda: reduce_payload("os", "system"), "unsafe", "os.system"))
    s.append(
        Sample(
            "E11-npy-object",
            "e11.npy",
            lambda: npy_object(reduce_payload("ssl", "get_server_certificate")),
            "unsafe",
            "ssl.get_server_certificate",
        )
    )
    s.append(
        Sample(
            "E11-npz-object",
            "e11.npz",
            lambda: _npz_of({"x.npy": npy_object(reduce_payload("os", "system"))}),
            "unsafe",
            "os.system",
        )
    )
    s.append(Sample("E13-setitem-list", "e13.pkl", _setitem_list, "suspicious"))
    s.append(Sample("E13-storage-overflow", "e13s.pt", _storage_overflow, "suspicious"))
    s.append(Sample("nested-zip", "nested.zip", _nested_zip, "unsafe", "os.system"))
    s.append(
        Sample(
            "legacy-payload",
            "legacy_bad.pt",
            lambda: legacy(reduce_payload("os", "system")),
            "unsafe",
            "os.system",
        )
    )
    return s


def _npz_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(_fixed(name), data)
    return buf.getvalue()


def malformed_safetensors() -> dict[str, bytes]:
    """E14: each must be rejected (status unreadable), never reported clean."""
    good = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    return {
        "header-past-end": safetensors_raw(good, b"\x00" * 8, declared=10_000),
        "header-over-cap": safetensors_raw(b"{" + b" " * 16, declared=(200 << 20)),
        "negative-offsets": safetensors_raw(
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}', b"\x00" * 8
        ),
        "overlap": safetensors_raw(
            b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
            b"\x00" * 12,
        ),
        "out-of-range": safetensors_raw(
            b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', b"\x00" * 8
        ),
        "shape-mismatch": safetensors_raw(
            b'{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', b"\x00" * 8
        ),
        "duplicate-keys": safetensors_raw(
            b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
            b"\x00" * 8,
        ),
        "metadata-not-str": safetensors_raw(
            b'{"__metadata__":{"a":1},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\x00" * 8
        ),
        "bad-dtype": safetensors_raw(b'{"w":{"dtype":"X99","shape":[2],"data_offsets":[0,8]}}', b"\x00" * 8),
        "not-json": safetensors_raw(b'{"w": nope}', b""),
    }


def write_all(samples: list[Sample], folder: Path) -> list[tuple[Sample, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for sample in samples:
        path = folder / sample.filename
        path.write_bytes(sample.build())
        out.append((sample, path))
    return out
