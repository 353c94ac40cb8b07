"""The serving core without a web framework: configuration, and one object that answers
"who is this caller and may it do this?" for every request.

``Service`` wires the database, key store, Casbin authorizer, rate limiter, audit writer,
extraction monitor and model registry together. The HTTP layer (``serve.http``) only
translates its answers to status codes; tests and other front ends can use it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from torchshield.errors import AccessDenied
from torchshield.serve.access.keys import ApiKey, KeyStore
from torchshield.serve.audit import AuditLog, AuditWriter
from torchshield.serve.metrics import ServeMetrics
from torchshield.serve.monitor import ExtractionMonitor, MonitorConfig
from torchshield.serve.policy import CREATES, Scope, may, may_manage
from torchshield.serve.ratelimit import DbRateLimiter, Limit, MemoryRateLimiter, RateDecision
from torchshield.serve.rbac import GLOBAL, Authorizer

__all__ = ["Decision", "ServeConfig", "Service"]

log = logging.getLogger("torchshield.serve")

MONITOR_GATHER_S = 0.05  # how long the monitor lets observations gather before it takes them
MONITOR_CHUNK = 64  # inputs per vectorized pass; the thread yields between passes


@dataclass(frozen=True)
class ServeConfig:
    """Everything a worker needs to start; JSON-able so several uvicorn workers share it."""

    db_url: str = "sqlite:///shield.db"
    bundles: tuple[str, ...] = ()
    key_file: str | None = None
    # Public keys (.pub files) of the signers whose bundles are served; anything else is refused
    # at start and on reload unless allow_unsigned, the named opt-out (logged at every load).
    trusted_signers: tuple[str, ...] = ()
    allow_unsigned: bool = False
    body_limit: int = 1 << 20
    rate_per_s: float = 50.0
    burst: int = 100
    rate_store: str = "memory"  # "memory" (per worker) or "db" (shared)
    # The longest one request may hold the event loop for its model (ServedModel.calibrate_inline);
    # 0 sends every predict to a worker thread.
    loop_budget_ms: float = 0.5
    # Concurrent requests for one model share a forward pass (serve/batching.py); False: each
    # request's forward runs alone.
    batching: bool = True
    output: str | None = None  # force one output mode for every model
    monitor: dict[str, Any] = field(default_factory=dict)
    # Privacy-gateway policy files (the data mask format plus its gateway section) for text models'
    # predict and generate: {model name: file}, "*" for every text model without its own.
    privacy_policies: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServeConfig:
        d = dict(d)
        d["bundles"] = tuple(d.get("bundles", ()))
        d["trusted_signers"] = tuple(d.get("trusted_signers", ()))
        return cls(**d)


@dataclass(frozen=True)
class Decision:
    """The outcome of :meth:`Service.check`: ``status`` 200 means allowed."""

    status: int
    reason: str
    key: ApiKey | None = None
    retry_after: int = 0
    # decided on a cached key row read under this key revision (PostgreSQL): the request's audit
    # commit must be guarded by it (KeyStore.authenticate_cached); None: decided on a fresh read
    provisional: int | None = None

    @property
    def allowed(self) -> bool:
        return self.status == 200


class Service:
    def __init__(self, config: ServeConfig, *, master: Any, registry: Any, db: Any) -> None:
        self.config = config
        self._master = master
        self.db = db
        self.registry = registry
        self.keys = KeyStore(db, master)
        self.authz = Authorizer(db)
        self.audit = AuditLog(db, master)
        self.audit_writer = AuditWriter(self.audit)
        self.monitor = ExtractionMonitor(MonitorConfig(**config.monitor))
        self.metrics = ServeMetrics()
        # The monitor runs on its own thread, after the answer: its statistics (a Shapiro-Wilk test
        # every few queries) are not the caller's to wait for, and an alert is not a verdict.
        self._observations: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._monitor_thread = threading.Thread(target=self._monitor_loop, name="torchshield-monitor", daemon=True)
        self._monitor_thread.start()
        self.limiter = DbRateLimiter(db) if config.rate_store == "db" else MemoryRateLimiter()
        self.gateways = self._gateways(config, master)
        self.started = time.time()

    def _gateways(self, config: ServeConfig, master: Any) -> dict[str, Any]:
        if not config.privacy_policies:
            return {}
        from torchshield.gateway import Gateway

        return {name: Gateway(file, master_key=master, counter=self.metrics.gateway)
                for name, file in config.privacy_policies.items()}

    def gateway_for(self, model: str) -> Any:
        """The privacy gateway of ``model``: its own policy, else the one for every model, else None."""
        return self.gateways.get(model, self.gateways.get("*"))

    def may_see_pii(self, key: ApiKey, model: str) -> bool:
        """Whether answers to ``key`` carry its PII back (the ``pii.reidentify`` row of serve.policy)."""
        return may(key.role, Scope.of(key.models), "pii.reidentify", model)

    @contextlib.contextmanager
    def gateway_request(self, ctx: Any, key: ApiKey, model: str) -> Iterator[Any]:
        """One gateway request for a text request of ``key`` on ``model``: its audit dict (types
        and counts, never values) goes into the request's audit record, refused or not."""
        import uuid

        req = self.gateway_for(model).request(request_id=uuid.uuid4().hex, caller=key.key_id,
                                   reidentify=self.may_see_pii(key, model))
        try:
            with req:
                yield req
        finally:
            ctx.detail = {**ctx.detail, "gateway": req.audit.to_dict()}

    def text_hook(self, ctx: Any, key: ApiKey | None, model: str) -> Any:
        """For predict on a text model: de-identify the batch before it is tokenised."""
        if self.gateway_for(model) is None or key is None:
            return None

        def deidentify(texts: list[str]) -> list[str]:
            with self.gateway_request(ctx, key, model) as req:
                return req.deidentify_batch(texts)

        return deidentify

    @classmethod
    def start(cls, config: ServeConfig, *, master: Any = None, registry: Any = None) -> Service:
        """Open the database (failing loudly if it is down or read-only) and load every bundle."""
        from torchshield.crypto.keys import resolve_master_key
        from torchshield.serve.db import open_database

        master = master or resolve_master_key(key_file=config.key_file)
        if registry is None:
            registry = cls.load_models(config, master)
        db = open_database(config.db_url)
        db.start_checkpointer()
        return cls(config, master=master, registry=registry, db=db)

    @staticmethod
    def load_models(config: ServeConfig, master: Any) -> Any:
        """Load and verify every bundle of ``config`` (SignatureError if one is not trusted)."""
        from torchshield.serve.models import ModelRegistry, OutputPolicy, TrustPolicy

        trust = TrustPolicy.from_files(config.trusted_signers, allow_unsigned=config.allow_unsigned)
        if config.allow_unsigned:
            log.warning("--allow-unsigned: bundles are served whoever signed them (trusted signers: %s)",
                        trust.describe())
        override = OutputPolicy(mode=config.output) if config.output else None
        registry = ModelRegistry.from_bundles(list(config.bundles), master=master, output=override, trust=trust)
        for m in registry.models():
            m.forwards.batching = config.batching
        return registry

    def reload_models(self) -> list[str]:
        """Load every bundle again (they may have been replaced on disk) under the same trust
        policy, and swap the new models in only if all of them load and verify: a bundle that
        is unsigned or foreign-signed is refused (SignatureError) and the models served until
        now stay. Returns the names now served."""
        registry = self.load_models(self.config, self._master)
        for name in registry.names():
            registry.get(name).calibrate_inline(self.config.loop_budget_ms / 1e3)
        self.registry = registry  # one reference swap: a request sees the old or the new registry
        log.info("models reloaded: %s", ", ".join(registry.names()))
        return registry.names()

    def close(self) -> None:
        self._observations.put(None)
        self._monitor_thread.join(timeout=10)
        self.audit_writer.close()
        self.db.dispose()

    def authenticate(self, token: str | None) -> ApiKey | None:
        """The caller's active key; also brings the policy cache up to the database revision."""
        key, revision = self.keys.authenticate_with_revision(token)
        if key is not None:
            self.authz.sync(revision)
        return key

    def check(self, token: str | None, domain: str, obj: str, act: str, *, model_exists: bool = True) -> Decision:
        """Authenticate, authorize and rate-limit one request.

        ``model_exists=False`` (an unknown model name) yields 404 only for callers whose role
        spans every model; everyone else gets the same 403 as for a model outside their scope."""
        return self._decide(self.authenticate(token), domain, obj, act, model_exists)

    async def check_async(self, token: str | None, domain: str, obj: str, act: str, *,
                          model_exists: bool = True, fresh: bool = False, count: bool = True) -> Decision:
        """:meth:`check` on the event loop, for PostgreSQL (the key read is a coroutine; a policy
        reload, rare, runs on a worker thread). The decision may rest on this worker's copy of
        the key's row (``Decision.provisional``: see :meth:`KeyStore.authenticate_cached`);
        ``fresh``: read the row first. ``count=False``: a decision taken again for the same
        request does not charge its rate limit twice."""
        key, revision, from_cache = await self.keys.authenticate_cached(token, fresh=fresh)
        provisional = revision if from_cache else None
        if key is not None and revision != self.authz.revision:
            await asyncio.to_thread(self.authz.sync, revision)
        d = self._decide(key, domain, obj, act, model_exists, count=count)
        return d if provisional is None else replace(d, provisional=provisional)

    def _decide(self, key: ApiKey | None, domain: str, obj: str, act: str, model_exists: bool, *,
                count: bool = True) -> Decision:
        if key is None:
            return Decision(401, "missing, unknown, expired or revoked API key")
        if not self.authz.allowed(key.key_id, domain, obj, act):
            if not model_exists and self.authz.allowed(key.key_id, GLOBAL, obj, act):
                return Decision(404, "no such model", key)
            return Decision(403, f"role {key.role} may not {act} {obj}" + ("" if domain == GLOBAL else
                                                                          " on this model"), key)
        if not model_exists:
            return Decision(404, "no such model", key)
        if not count:
            return Decision(200, "allowed", key)
        rate = self.rate_limit(key)
        if not rate.allowed:
            return Decision(429, "rate limit exceeded", key, rate.retry_after)
        return Decision(200, "allowed", key)

    def rate_limit(self, key: ApiKey) -> RateDecision:
        limit = Limit(rate=key.rate_per_s or self.config.rate_per_s, burst=key.burst or self.config.burst)
        return self.limiter.hit(key.key_id, limit)

    # ---- key management: the table of serve.policy, nothing else -----------------------
    @staticmethod
    def is_manager(key: ApiKey) -> bool:
        """Whether ``key`` may reach key management at all (its role creates some keys)."""
        return may(key.role, Scope.of(key.models), "keys.create")

    @staticmethod
    def may_manage(manager: ApiKey, role: str, models: Iterable[str]) -> bool:
        """Whether ``manager`` may create, list or revoke a key of ``role`` for ``models``."""
        return may_manage(manager.role, Scope.of(manager.models), role, Scope.of(models))

    def require_manager(self, key: ApiKey) -> None:
        if not self.is_manager(key):
            raise AccessDenied(f"role {key.role} may not manage keys")

    def authorize_new_key(self, manager: ApiKey, role: str, models: Iterable[str]) -> None:
        """Raise :class:`AccessDenied` unless ``manager`` may create a ``role`` key for ``models``."""
        if not self.may_manage(manager, role, models):
            made = ", ".join(sorted(CREATES[manager.role])) or "no"
            raise AccessDenied(f"role {manager.role} may create {made} keys, for models within its own "
                               "scope only")

    def manageable(self, manager: ApiKey, keys: Iterable[ApiKey]) -> list[ApiKey]:
        return [k for k in keys if self.may_manage(manager, k.role, k.models)]

    def observe_later(self, key: ApiKey, inputs: Any, labels: Any) -> None:
        """Queue a batch for the extraction monitor (see :meth:`observe`) without waiting for it."""
        self._observations.put((key, inputs, labels))

    def monitor_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every observation queued so far is processed (tests, shutdown)."""
        done = threading.Event()
        self._observations.put(done)
        return done.wait(timeout)

    def _monitor_loop(self) -> None:
        """Take what queued in the last ``MONITOR_GATHER_S`` and feed it per key in vectorized
        passes of ``MONITOR_CHUNK`` inputs: one wake-up per burst instead of per request, and
        short slices of work (the thread yields between passes), so that the monitor never holds
        the interpreter long enough to show in a request's latency."""
        self.monitor.warm_up()  # SciPy takes seconds to import: not in a request
        try:  # background work must not take the other core: NumPy's BLAS, one thread (process-wide)
            from threadpoolctl import threadpool_limits

            threadpool_limits(1, user_api="blas")
        except ImportError:  # pragma: no cover - the serve extra installs it
            pass
        while (first := self._observations.get()) is not None:
            time.sleep(MONITOR_GATHER_S)
            items, stop = [first], False
            while True:
                try:
                    item = self._observations.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                items.append(item)
            self._observe_all(items)
            if stop:
                return

    def _observe_all(self, items: list[Any]) -> None:
        import numpy as np

        run: list[tuple[ApiKey, Any, Any]] = []

        def flush() -> None:
            if run:
                key = run[0][0]
                inputs = np.concatenate([np.asarray(x).reshape(len(x), -1) for _, x, _ in run])
                labels = [v for _, _, lab in run for v in lab]
                try:
                    for i in range(0, len(inputs), MONITOR_CHUNK):
                        self.observe(key, inputs[i:i + MONITOR_CHUNK], labels[i:i + MONITOR_CHUNK])
                        time.sleep(0)  # let request threads have the interpreter between chunks
                except Exception:  # noqa: BLE001 - a monitoring failure must not stop monitoring
                    log.exception("the extraction monitor failed on a batch of key %s", key.key_id)
                run.clear()

        for item in items:
            if isinstance(item, threading.Event):  # a monitor_idle marker: everything before it is done
                flush()
                item.set()
                continue
            if run and (item[0].key_id != run[0][0].key_id or np.shape(item[1])[1:] != np.shape(run[0][1])[1:]):
                flush()  # consecutive batches of one key and input shape go together
            run.append(item)
        flush()

    def observe(self, key: ApiKey, inputs: Any, labels: Any) -> list[Any]:
        """Feed a batch to the extraction monitor now; alerts go to the log and the audit chain."""
        alerts = self.monitor.observe(key.key_id, inputs, labels)
        for a in alerts:
            log.warning("extraction alert %s for key %s: %s", a.kind, a.key_id, a.detail)
            self.metrics.alert(a.kind)
            self.audit_writer.write({"action": "monitor.alert", "key_id": a.key_id, "decision": "alert",
                                      "reason": a.kind, "detail": a.detail, "status": 0})
        return alerts
