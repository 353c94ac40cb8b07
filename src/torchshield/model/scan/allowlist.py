"""Which imported names a model file may use, and which ones mean it can run code.

Threat model. Loading a pickle imports every global it names (``find_class`` runs
``__import__`` on the module) and then calls whatever the stream says to call. A name is
therefore judged when it is *imported*, whether or not a later opcode calls it: importing an
unknown module already runs that module's code. Three verdicts:

* **safe** - an exact name from the list below: what ``torch.save`` and NumPy need to rebuild
  tensors and arrays (the same set torch's ``weights_only`` unpickler accepts, plus NumPy's
  array, scalar, dtype and random-state constructors), and names decided one by one to be
  inert (``__future__`` features, ``collections.abc`` classes, value builtins such as ``len``,
  torch's ``ParameterDict``/``ParameterList``). Matching is exact on the full dotted
  name; a prefix never makes a name safe (``torch._utils._rebuild_tensor_v2.__globals__`` is
  not ``torch._utils._rebuild_tensor_v2``).
* **critical** - a name that runs code, reaches the interpreter, the file system, the network,
  another unpickler, or resolves further names (see ``_DANGEROUS_MODULES`` and
  ``_DANGEROUS_NAMES``); also any dunder attribute (``__builtins__``, ``__call__``,
  ``__globals__``...) and any dangerous name reached through an attribute chain
  (``torch._utils.os.system``), including a module's private alias (``random._os.system``).
* **high** - anything else: unknown, so it may run code we cannot see. ``allow`` accepts such
  names (exact names, or ``package.*`` for a whole package); a critical name is accepted only
  when the user names it exactly.

Python 2 names (``__builtin__``, ``commands``, ``cPickle``) are mapped through the same
tables ``pickle`` itself uses (``_compat_pickle``) and the worse verdict wins.
"""

from __future__ import annotations
import __future__

import _compat_pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CRITICAL", "HIGH", "Allowlist", "Verdict"]

CRITICAL = "critical"
HIGH = "high"

_TORCH_STORAGE_TYPES = (
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "ComplexDouble",
    "ComplexFloat",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "QInt32",
    "QInt8",
    "QUInt2x4",
    "QUInt4x2",
    "QUInt8",
    "Short",
)
_TORCH_TENSOR_TYPES = ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
_TORCH_DTYPES = [
    "bfloat16",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bool",
    "complex128",
    "complex32",
    "complex64",
    "float16",
    "float32",
    "float4_e2m1fn_x2",
    "float64",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "int1",
    "int16",
    "int2",
    "int3",
    "int32",
    "int4",
    "int5",
    "int6",
    "int64",
    "int7",
    "int8",
    "qint32",
    "qint8",
    "quint2x4",
    "quint4x2",
    "quint8",
    "uint1",
    "uint16",
    "uint2",
    "uint3",
    "uint32",
    "uint4",
    "uint5",
    "uint6",
    "uint64",
    "uint7",
    "uint8",
    "half",
    "float",
    "double",
    "long",
    "int",
    "short",
    "cfloat",
    "cdouble",
    "chalf",
]
_TORCH_MISC = [
    "per_channel_affine",
    "per_channel_affine_float_qparams",
    "per_channel_symmetric",
    "per_tensor_affine",
    "per_tensor_symmetric",
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "jagged",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "Size",
    "Tensor",
    "device",
]
_TORCH_REBUILD = [
    "_rebuild_device_tensor_from_cpu_tensor",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_nested_tensor",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_wrapper_subclass",
]


# Builtins that compute on values and never resolve a name, open a file or call something the
# stream chose: they call only special methods (__len__, __lt__, __index__...) of objects the
# stream built from names that were judged on their own. Not here: getattr/eval/exec/compile/
# open/__import__/vars/globals (critical), map/filter/iter/next/type/super/property (they call
# or build callables), print/input (I/O).
_INERT_BUILTINS = (
    "len",
    "abs",
    "min",
    "max",
    "sum",
    "round",
    "divmod",
    "ord",
    "chr",
    "bin",
    "oct",
    "hex",
    "sorted",
    "reversed",
    "enumerate",
    "zip",
    "any",
    "all",
    "isinstance",
    "issubclass",
    "callable",
    "hash",
    "id",
    "Ellipsis",
    "NotImplemented",
    "memoryview",
)
# Abstract base classes: importing collections.abc runs nothing new (the interpreter already
# imported it), and calling an ABC raises TypeError. Exact names only: ``Mapping.register`` is not here.
_ABCS = (
    "AsyncGenerator",
    "AsyncIterable",
    "AsyncIterator",
    "Awaitable",
    "Buffer",
    "ByteString",
    "Callable",
    "Collection",
    "Container",
    "Coroutine",
    "Generator",
    "Hashable",
    "ItemsView",
    "Iterable",
    "Iterator",
    "KeysView",
    "Mapping",
    "MappingView",
    "MutableMapping",
    "MutableSequence",
    "MutableSet",
    "Reversible",
    "Sequence",
    "Set",
    "Sized",
    "ValuesView",
)


def _safe_names() -> frozenset[str]:
    names = {
        "collections.OrderedDict",
        "collections.Counter",
        "collections.defaultdict",
        "collections.deque",
        "builtins.set",
        "builtins.frozenset",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.slice",
        "builtins.range",
        "builtins.bytes",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.str",
        "builtins.object",
        "_codecs.encode",
        "copyreg._reconstructor",
        "__future__._Feature",
        "datetime.datetime",
        "datetime.date",
        "datetime.timedelta",
        "datetime.timezone",
        "decimal.Decimal",
        "fractions.Fraction",
        "torch._tensor._rebuild_from_type_v2",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch.storage._TypedStorage",
        # containers of Parameters, rebuilt by copyreg._reconstructor + BUILD of plain state; torch's
        # own classes whose unpickling runs no code from the file (textual-inversion embeddings in
        # Stable Diffusion checkpoints hold a ParameterDict)
        "torch.nn.ParameterDict",
        "torch.nn.ParameterList",
        "torch.nn.modules.container.ParameterDict",
        "torch.nn.modules.container.ParameterList",
        "torch._utils._rebuild_storage_from_bytes",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
    }
    names.update(f"torch._utils.{n}" for n in _TORCH_REBUILD)
    names.update(f"builtins.{n}" for n in _INERT_BUILTINS)
    names.update(f"__future__.{n}" for n in __future__.all_feature_names)
    names.update(f"{m}.{n}" for m in ("collections.abc", "_collections_abc") for n in _ABCS)
    names.update(f"torch.{n}" for n in _TORCH_DTYPES + _TORCH_MISC)
    for prefix in ("torch", "torch.cuda"):
        names.update(f"{prefix}.{t}Storage" for t in _TORCH_STORAGE_TYPES)
        names.update(f"{prefix}.{t}Tensor" for t in _TORCH_TENSOR_TYPES)
    for prefix in ("torch.sparse", "torch.cuda.sparse"):
        names.update(f"{prefix}.{t}Tensor" for t in _TORCH_TENSOR_TYPES if t != "Bool")
    return frozenset(names)


SAFE_NAMES = _safe_names()

# Whole modules (and everything under them) whose names mean code execution, process or file
# access, the network, foreign functions, a second unpickler, or a resolver of further names.
_DANGEROUS_MODULES = frozenset(
    [
        "os",
        "posix",
        "nt",
        "posixpath",
        "ntpath",
        "subprocess",
        "_posixsubprocess",
        "pty",
        "pipes",
        "commands",
        "popen2",
        "runpy",
        "importlib",
        "_frozen_importlib",
        "_frozen_importlib_external",
        "_imp",
        "imp",
        "zipimport",
        "pkgutil",
        "pydoc",
        "socket",
        "_socket",
        "ssl",
        "http",
        "urllib",
        "urllib2",
        "urllib3",
        "requests",
        "aiohttp",
        "httpx",
        "ftplib",
        "smtplib",
        "telnetlib",
        "poplib",
        "imaplib",
        "nntplib",
        "xmlrpc",
        "socketserver",
        "webbrowser",
        "ctypes",
        "_ctypes",
        "cffi",
        "marshal",
        "pickle",
        "_pickle",
        "cPickle",
        "pickletools",
        "dill",
        "cloudpickle",
        "joblib",
        "shelve",
        "dbm",
        "pip",
        "ensurepip",
        "venv",
        "virtualenv",
        "setuptools",
        "distutils",
        "pkg_resources",
        "shutil",
        "tempfile",
        "glob",
        "fileinput",
        "sys",
        "code",
        "codeop",
        "bdb",
        "pdb",
        "cProfile",
        "profile",
        "trace",
        "timeit",
        "doctest",
        "idlelib",
        "lib2to3",
        "_interpreters",
        "interpreters",
        "concurrent",
        "multiprocessing",
        "_multiprocessing",
        "asyncio",
        "threading",
        "_thread",
        "signal",
        "_signal",
        "resource",
        "types",
        "gc",
        "inspect",
        "_osx_support",
        "_aix_support",
        "_pyrepl",
        "test",
        "unittest",
        "platform",
        "sysconfig",
        "mlflow",
        "fickling",
        "picklescan",
        "modelscan",
        "modelaudit",
        "keras",
        "tensorflow",
        "jax",
        "IPython",
        # found by the peers' corpora (issue 21): each runs a callable or code it is handed
        "_xxsubinterpreters",  # run_string
        "_xxinterpchannels",
        "_interpchannels",
        "_interpqueues",
        "pexpect",  # spawn / run a command
        "ptyprocess",
        "sh",
        "plumbum",
        "invoke",
        "fabric",
        "paramiko",
        "psutil",  # psutil.Popen
        "tkinter",  # Tcl eval reaches exec
        "_tkinter",
        "atexit",  # register(callable): runs it at exit
        "weakref",  # finalize / ref callbacks run a callable when an object dies
        "_weakref",
        "sched",  # scheduler.enter(..., action)
        "contextlib",  # ExitStack.callback, closing, contextmanager
        "contextvars",  # Context.run(callable)
        "_contextvars",
        "sqlite3",  # create_function, executescript, enable_load_extension
        "_sqlite3",
        "compileall",  # compiles (and can import) arbitrary paths
        "py_compile",
    ]
)

# Single names in modules that are otherwise allowed or merely unknown.
_DANGEROUS_NAMES = frozenset(
    [
        "builtins.eval",
        "builtins.exec",
        "builtins.compile",
        "builtins.getattr",
        "builtins.setattr",
        "builtins.delattr",
        "builtins.__import__",
        "builtins.open",
        "builtins.breakpoint",
        "builtins.input",
        "builtins.globals",
        "builtins.locals",
        "builtins.vars",
        "builtins.apply",
        "builtins.execfile",
        "builtins.file",
        "builtins.reload",
        "builtins.exit",
        "builtins.quit",
        "builtins.help",
        "io.open",
        "io.FileIO",
        "io.open_code",
        "io.BufferedReader",
        "io.BufferedWriter",
        "io.TextIOWrapper",
        "_io.open",
        "_io.FileIO",
        "_io.open_code",
        "uuid._get_command_stdout",
        "uuid._popen",
        "logging.FileHandler",
        "logging.config",
        "logging.handlers.RotatingFileHandler",
        "logging.handlers.SocketHandler",
        "logging.handlers.HTTPHandler",
        "operator.attrgetter",
        "operator.itemgetter",
        "operator.methodcaller",
        "operator.call",
        "_operator.attrgetter",
        "_operator.itemgetter",
        "_operator.methodcaller",
        "_operator.call",
        "functools.partial",
        "functools.partialmethod",
        "functools.reduce",
        "functools.wraps",
        "_functools.partial",
        "_functools.reduce",
        "copyreg.add_extension",
        "copyreg._extension_registry",
        "copyreg.__newobj_ex__",
        "torch.load",
        "torch.serialization.load",
        "torch.storage._load_from_bytes",
        "torch.hub",
        "torch.package",
        "torch.jit.load",
        "torch.jit.unsupported_tensor_ops",
        "torch.jit._serialization",
        "torch.jit.frontend",
        "torch.jit._script",
        "torch.utils.collect_env",
        "torch._inductor",
        "torch.utils.bottleneck",
        "torch._dynamo",
        "torch.fx",
        "torch.utils._config_module",
        "torch.utils.data.datapipes",
        "torch.utils.cpp_extension",
        "torch._C._jit",
        "torch.compile",
        "torch.ops",
        "torch.library",
        "torch.distributed",
        "torch.multiprocessing",
        "torch.utils.data.datapipes.utils.decoder",
        "torch.backends",
        "numpy.load",
        "numpy.loadtxt",
        "numpy.genfromtxt",
        "numpy.fromfile",
        "numpy.save",
        "numpy.savez",
        "numpy.testing",
        "numpy.f2py",
        "numpy.lib.npyio",
        "numpy.lib.format",
        "numpy.distutils",
        "numpy.ctypeslib",
        "numpy.__builtins__",
        "pandas.read_pickle",
        "pandas.read_csv",
        "pandas.read_json",
        "pandas.read_html",
        "pandas.read_parquet",
        "pandas.eval",
        "pandas.io",
        "sklearn.utils._joblib",
        "zlib.decompress",
        "bz2.decompress",
        "lzma.decompress",
        "base64.b64decode",
        "base64.b32decode",
        "base64.b85decode",
        "codecs.decode",
        "codecs.open",
        "_codecs.decode",
        "string.Template",
        # PyYAML's loaders that construct arbitrary Python objects (!!python/object/apply)
        "yaml.load",
        "yaml.load_all",
        "yaml.unsafe_load",
        "yaml.unsafe_load_all",
        "yaml.full_load",
        "yaml.full_load_all",
        "yaml.Loader",
        "yaml.UnsafeLoader",
        "yaml.FullLoader",
        "yaml.loader",
        "yaml.constructor",
        "yaml.cyaml",
        "yaml.CLoader",
        "yaml.CUnsafeLoader",
        "yaml.CFullLoader",
    ]
)

_DUNDER = re.compile(r"^__\w+__$")
_HARMLESS_DUNDER_MODULES = frozenset({"__main__", "__future__", "__builtin__", "__mp_main__", "__torch__"})
_RENAMED = {"__builtin__": "builtins"}


@dataclass(frozen=True)
class Verdict:
    """How an imported name is judged: severity None means allowed."""

    severity: str | None
    reason: str


def _compat_names(module: str, name: str) -> list[tuple[str, str]]:
    """The name as written plus what Python 3's pickle turns a Python 2 name into."""
    out = [(module, name)]
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped:
        out.append(mapped)
    elif module in _compat_pickle.IMPORT_MAPPING:
        out.append((_compat_pickle.IMPORT_MAPPING[module], name))
    return out


def _dangerous(full: str) -> str | None:
    """The rule a dotted name breaks, looking at every dotted prefix of it."""
    parts = full.split(".")
    for i in range(1, len(parts) + 1):
        head = ".".join(parts[:i])
        if head in _DANGEROUS_NAMES:
            return head
        if i == 1 and head in _DANGEROUS_MODULES:
            return head
    return None


class Allowlist:
    """Judges ``module.name`` pairs; ``allow`` widens the safe set for this scan only."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            if entry.endswith(".*"):
                prefixes.append(entry[:-1])
            else:
                exact.add(entry)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._cache: dict[tuple[str, str], Verdict] = {}

    def allowed_by_user(self, full: str) -> bool:
        return full in self._exact

    def judge(self, module: str, name: str) -> Verdict:
        key = (module, name)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._judge(module, name)
            self._cache[key] = verdict
        return verdict

    def _judge(self, module: str, name: str) -> Verdict:
        verdicts = [self._judge_one(mod, nm) for mod, nm in _compat_names(module, name)]
        for verdict in verdicts:
            if verdict.severity == CRITICAL:
                return verdict
        for verdict in verdicts:
            if verdict.severity is None:
                return verdict
        return verdicts[0]

    def _judge_one(self, module: str, name: str) -> Verdict:
        full = f"{module}.{name}"
        if full in self._exact:
            return Verdict(None, "allowed by --allow")
        if full in SAFE_NAMES:
            return Verdict(None, "allowlisted: rebuilds tensors or arrays, or runs no code")
        mod_parts = module.split(".")
        if any(_DUNDER.match(p) and p not in _HARMLESS_DUNDER_MODULES for p in mod_parts) or any(
            _DUNDER.match(p) for p in name.split(".")
        ):
            return Verdict(CRITICAL, "reaches a dunder attribute (interpreter internals)")
        canon = ".".join([_RENAMED.get(mod_parts[0], mod_parts[0]), *mod_parts[1:], name])
        parts = canon.split(".")
        # the module path as a whole, then every attribute chain inside the name part; a private
        # alias of a module (random._os, tempfile._shutil) is judged as the module it names
        for start in (0, *range(len(mod_parts), len(parts))):
            chain = parts[start:]
            rule = _dangerous(".".join(chain))
            if rule is None and start > 0 and chain[0].startswith("_") and chain[0].strip("_"):
                rule = _dangerous(".".join([chain[0].lstrip("_"), *chain[1:]]))
            if rule is not None:
                how = "" if start == 0 else " through an attribute chain"
                return Verdict(CRITICAL, f"can run code or touch the system ({rule}){how}")
        if any(full.startswith(p) for p in self._prefixes):
            return Verdict(None, "allowed by --allow")
        return Verdict(HIGH, "not needed by PyTorch/NumPy checkpoints; loading imports and may run it")
