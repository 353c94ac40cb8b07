"""Apache Spark as the engine of ``data scan`` and ``data mask`` (``--engine spark``).

The driver reads the table with the one table reader (``tabular.io.iter_chunks``: the same format
and encoding detection, the same errors naming the line), sends each chunk to Spark as one
partition, and gets back, in order, what the task computed on it: the masked chunk and its change
counts, or a chunk's scan counts. It writes the output itself, through ``atomic_output``: the
file appears only when every partition succeeded, and a failure anywhere leaves no output.
Detection and the operators are the single-process code, run on the executors' Python workers;
so, for the same key, the output is the single-process output, byte for byte.

Why chunks from the driver rather than ``spark.read.csv``: Spark's CSV reader knows neither
GB18030 line numbers nor our strict decoding, and its rows come back in partitions we would have to
re-order and re-type to stay byte-identical. Masking costs ~0.4 ms per row of CPU; reading and
writing cost ~100x less, so one driver keeps dozens of executor cores busy.

What crosses into Spark: the policy (no key), the subkeys the policy's keyed operators use (see
``keys``; never the master key), both in one broadcast, and the rows. For sessions this module
starts, ``spark.io.encryption.enabled`` is on, so broadcast blocks and the rows spilled to the
Spark temp directory are encrypted with a per-application key; the UI is off and the driver binds
127.0.0.1. A task never raises through Spark: it returns a ShieldError's class and message (no
values, no traceback), so Spark's logs carry no cell of the table and no key."""

from __future__ import annotations

import functools
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import torchshield.errors as errors
from torchshield.errors import InputError, MissingDependencyError, ShieldError

__all__ = ["SparkEngine", "local_conf"]

S = TypeVar("S")
R = TypeVar("R")


def local_conf(workers: int, *, local: bool = True) -> dict[str, str]:
    """Spark settings for a session this module starts: quiet, encrypted temp files, and for a
    local master a driver bound to 127.0.0.1 (a cluster's executors must reach the driver, so
    there the cluster's own address settings apply)."""
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.io.encryption.enabled": "true",
        "spark.sql.shuffle.partitions": str(max(1, workers)),
        "spark.python.worker.reuse": "true",
        "spark.log.level": "ERROR",
    }
    if local:
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                     "spark.default.parallelism": str(max(1, workers))})
    return conf


class SparkEngine:
    """Runs a task on chunks of a table in Spark, returning results in input order.

    ``workers`` sets ``local[workers]`` when no ``master`` is given; ``master`` is any Spark master
    URL (``spark://host:7077``, ``yarn``, ``local[8]``), whose executors need torchshield installed.
    ``session`` uses an existing SparkSession (never stopped here). The session starts on the first
    task, so bad input found before it (policy, columns, key) costs no JVM start."""

    name = "spark"

    def __init__(self, *, workers: int = 2, master: str | None = None, session: Any = None,
                 conf: Mapping[str, str] | None = None) -> None:
        if workers < 1:
            raise InputError("--workers must be at least 1")
        self.workers = workers
        self.master = master or f"local[{workers}]"
        self._session = session
        self._owned = False
        self._conf = {**local_conf(workers, local=self.master.startswith("local")), **(conf or {})}

    def describe(self) -> dict[str, Any]:
        sc = self._session.sparkContext if self._session is not None else None
        return {"name": self.name, "master": sc.master if sc is not None else self.master,
                "parallelism": sc.defaultParallelism if sc is not None else self.workers}

    def session(self) -> Any:
        if self._session is None:
            self._session = self._start()
        return self._session

    def _start(self) -> Any:
        try:
            with warnings.catch_warnings():  # pyspark warns about pandas 3 on import; RDD tasks do not use its pandas layer
                warnings.simplefilter("ignore", FutureWarning)
                from pyspark.sql import SparkSession
        except ImportError:
            raise MissingDependencyError("pyspark", "cluster") from None
        if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
            raise InputError("the Spark engine needs a Java 17+ runtime and none was found",
                             hint="install one (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
        existing = SparkSession.getActiveSession()
        if existing is not None:
            return existing  # someone else's session: use it, never stop it
        # In local mode the executors' Python must be this interpreter (with torchshield and
        # pandas), and Spark's launcher must not go looking for a routable address: both are read
        # from the environment when the JVM starts, so they are set for that moment only and
        # restored afterwards. A cluster's executors keep the Python their cluster configures.
        saved = {k: os.environ.get(k) for k in ("PYSPARK_PYTHON", "SPARK_LOCAL_IP")}
        if self.master.startswith("local"):
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        try:
            builder = SparkSession.builder.master(self.master).appName("torchshield-data")
            for name, value in self._conf.items():
                builder = builder.config(name, value)
            with warnings.catch_warnings():  # the same pandas-3 warning, from pyspark's own lazy imports
                warnings.simplefilter("ignore", FutureWarning)
                session = builder.getOrCreate()
        except Exception as exc:  # noqa: BLE001 - py4j/pyspark raise several types when the JVM cannot start
            raise InputError(f"could not start Spark ({type(exc).__name__})",
                             hint="check the Java runtime (java -version: 17 or later) and the master URL") from None
        finally:
            for var, old in saved.items():
                if old is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = old
        session.sparkContext.setLogLevel("ERROR")
        self._owned = True
        return session

    def map_chunks(self, task: Callable[[S, Any], R], shared: S, chunks: Iterable[Any]) -> Iterator[R]:
        """``task(shared, chunk)`` for every chunk, run on the executors, yielded in input order.

        ``task`` must be a module-level function (workers import it by name). ``shared`` travels
        once, as a broadcast. Chunks go in waves of ``2 x parallelism`` partitions, so the driver
        holds at most one wave and its results in memory."""
        sc = self.session().sparkContext
        bc = sc.broadcast(shared)
        wave = 2 * max(1, sc.defaultParallelism)
        func = functools.partial(_guarded, task, bc)
        try:
            batch: list[Any] = []
            for chunk in chunks:
                batch.append(chunk)
                if len(batch) == wave:
                    yield from _unwrap(_run_wave(sc, func, batch))
                    batch = []
            if batch:
                yield from _unwrap(_run_wave(sc, func, batch))
        finally:
            bc.destroy()

    def close(self) -> None:
        """Stop the session if this engine started it."""
        if self._owned and self._session is not None:
            self._session.stop()
        self._session = None
        self._owned = False

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_wave(sc: Any, func: Callable[[Any], Any], batch: list[Any]) -> list[Any]:
    """One Spark job, one partition per chunk. Task errors come back as values (``_guarded``);
    what still raises here is the engine's own failure (a lost executor, a worker killed for memory)."""
    try:
        return list(sc.parallelize(batch, len(batch)).map(func).collect())
    except Exception as exc:  # noqa: BLE001 - py4j wraps every JVM-side failure; its text may quote a row
        raise ShieldError(f"the Spark job failed ({type(exc).__name__})",
                          hint="see the Spark executor logs; no output was written") from None


def _guarded(task: Callable[[Any, Any], Any], bc: Any, chunk: Any) -> tuple[str, Any]:
    """Runs on an executor: the task's result, or its failure as (class name, message) only."""
    try:
        return "ok", task(bc.value, chunk)
    except ShieldError as exc:
        return "error", (type(exc).__name__, exc.message, exc.hint)
    except Exception as exc:  # noqa: BLE001 - reported by type only: a message could quote a cell
        return "error", ("ShieldError", f"a Spark task failed ({type(exc).__name__})", None)


def _unwrap(results: list[tuple[str, Any]]) -> Iterator[Any]:
    for status, value in results:
        if status != "ok":
            name, message, hint = value
            cls = getattr(errors, name, ShieldError)
            if not (isinstance(cls, type) and issubclass(cls, ShieldError)):
                cls = ShieldError
            raise _rebuild(cls, message, hint)
        yield value


def _rebuild(cls: type[ShieldError], message: str, hint: str | None) -> ShieldError:
    exc = ShieldError.__new__(cls)
    ShieldError.__init__(exc, message, hint=hint)
    return exc
