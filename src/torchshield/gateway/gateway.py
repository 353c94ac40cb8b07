"""``Gateway``: de-identify what goes into a text model, watch what comes out.

Put it in front of any callable ``model(text) -> text`` (a local model, a client of a model served
elsewhere)::

    gw = Gateway("policy.yaml", master_key=key, counter=metrics_hook)
    result = gw.protect(model, text, request_id=rid, caller=key_id, reidentify=role_may_see_pii)
    result.text, result.audit.to_dict()

or, when the serving code calls the model itself, open a request and pass the text both ways::

    with gw.request(request_id=rid, caller=key_id, reidentify=False) as req:
        answer = req.finish(model.generate(req.deidentify(prompt), max_new_tokens=64))

Per request: the text is checked (UTF-8, length), PII is found with ``find_pii`` (the engine
``data find`` uses) and each finding is handled as the policy says (placeholder, a ``data mask``
operator, or refusal). The model's answer is scanned for PII the caller did not send (a leak:
masked, blocked or flagged), then, for a caller allowed to see PII, the stand-ins this request's
vault issued are replaced by the originals. The vault is wiped when the request ends. The audit
record and the counter hook get entity types and counts, never values (see docs/gateway.md for
the threat model).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from torchshield.crypto.keys import MasterKey
from torchshield.data.anonymize import Cell, KeyedContext, Operator
from torchshield.data.pii import find_pii
from torchshield.errors import KeyMaterialError, ShieldError
from torchshield.gateway.errors import GatewayInputError, InputRefused, InputTooLarge, OutputBlocked
from torchshield.gateway.leaks import OwnText, count_types, find_leaks, mask_leaks
from torchshield.gateway.policy import GatewayPolicy, load_gateway_policy
from torchshield.gateway.vault import PLACEHOLDER_LOOKALIKE, RequestVault

__all__ = ["CounterHook", "Gateway", "GatewayAudit", "GatewayBatchResult", "GatewayRequest", "GatewayResult"]

CounterHook = Callable[[str, Mapping[str, str], int], None]
"""``hook(metric_name, labels, amount)``: a Prometheus-style counter increment. Labels are entity
types, actions and reasons, never values. Metric names: ``torchshield_gateway_entities_total``
{type, action}, ``torchshield_gateway_leaks_total`` {type, action},
``torchshield_gateway_reidentified_total`` {type}, ``torchshield_gateway_lookalikes_total`` {},
``torchshield_gateway_refusals_total`` {reason}."""


@dataclass
class GatewayAudit:
    """What happened to one request, for the audit log: types and counts, never values."""

    request_id: str
    caller: str
    reidentify: bool
    texts: int = 0
    input_entities: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    lookalikes: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    leaks: Counter[str] = field(default_factory=Counter)
    leak_action: str = "mask"
    blocked: bool = False
    reidentified: Counter[str] = field(default_factory=Counter)
    vault: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id, "caller": self.caller, "reidentify": self.reidentify,
            "texts": self.texts, "input_entities": dict(sorted(self.input_entities.items())),
            "actions": dict(sorted(self.actions.items())), "lookalikes": self.lookalikes,
            "refused": dict(sorted(self.refused.items())), "leaks": dict(sorted(self.leaks.items())),
            "leak_action": self.leak_action, "blocked": self.blocked,
            "reidentified": dict(sorted(self.reidentified.items())), "vault": self.vault,
        }


@dataclass(frozen=True)
class GatewayResult:
    text: str
    audit: GatewayAudit


@dataclass(frozen=True)
class GatewayBatchResult:
    texts: list[str]
    audit: GatewayAudit


class Gateway:
    """A privacy gateway for text models; one instance serves many requests (thread-safe).

    ``policy`` is a ``data mask`` policy (path, dict, or None for placeholders everywhere) with the
    gateway's additions (see :mod:`torchshield.gateway.policy`). ``master_key`` keys the keyed
    operators and seals conversation vaults. ``counter`` receives counter increments.
    ``max_chars`` and ``on_leak`` override the policy's ``gateway`` section. ``sealed_store`` holds
    sealed conversation vaults (a dict by default; pass a shared mapping for several workers)."""

    def __init__(self, policy: str | Path | Mapping[str, Any] | GatewayPolicy | None = None, *,
                 master_key: MasterKey, counter: CounterHook | None = None, max_chars: int | None = None,
                 on_leak: str | None = None,
                 sealed_store: MutableMapping[tuple[str, str], tuple[bytes, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(master_key, MasterKey):
            raise KeyMaterialError("the gateway needs a MasterKey (torchshield.crypto.keys.read_key_file)")
        pol = load_gateway_policy(policy)
        overrides = {k: v for k, v in (("max_chars", max_chars), ("on_leak", on_leak)) if v is not None}
        if overrides:
            pol = pol.with_settings(**overrides)
        self.policy = pol
        self._master = master_key
        self._keys = KeyedContext(master_key)
        self._counter = counter
        self._sealed = sealed_store if sealed_store is not None else {}
        self._lock = threading.Lock()
        self._clock = clock

    def request(self, *, request_id: str, caller: str, reidentify: bool = False,
                conversation: str | None = None) -> GatewayRequest:
        """Open one request (use it as a context manager: leaving it wipes the vault)."""
        return GatewayRequest(self, request_id=request_id, caller=caller, reidentify=reidentify,
                              conversation=conversation)

    def protect(self, model: Callable[[str], str], text: str | bytes, *, request_id: str, caller: str,
                reidentify: bool = False, conversation: str | None = None) -> GatewayResult:
        """``model(text)`` behind the gateway."""
        with self.request(request_id=request_id, caller=caller, reidentify=reidentify,
                          conversation=conversation) as req, req.audit_on_error():
            answer = req.finish(model(req.deidentify(text)))
            return GatewayResult(answer, req.audit)

    def protect_batch(self, model: Callable[[list[str]], Sequence[str]], texts: Sequence[str | bytes], *,
                      request_id: str, caller: str, reidentify: bool = False) -> GatewayBatchResult:
        """``model(texts) -> answers`` behind the gateway, as one request: if any text is refused
        or any answer blocked, the whole batch is."""
        with self.request(request_id=request_id, caller=caller, reidentify=reidentify) as req, req.audit_on_error():
            safe = req.deidentify_batch(texts)
            answers = list(model(safe))
            if len(answers) != len(safe):
                raise ValueError(f"the batch model returned {len(answers)} answers for {len(safe)} texts")
            return GatewayBatchResult([req.finish(a) for a in answers], req.audit)

    # ---- used by GatewayRequest ----------------------------------------------------------------
    def _count(self, name: str, labels: Mapping[str, str], amount: int = 1) -> None:
        if self._counter is not None and amount:
            self._counter(name, dict(labels), amount)

    def _take_sealed(self, conversation: str, caller: str, request_id: str) -> RequestVault | None:
        with self._lock:
            now = self._clock()
            for k in [k for k, (_, exp) in self._sealed.items() if exp <= now]:
                del self._sealed[k]
            item = self._sealed.pop((conversation, caller), None)
        if item is None:
            return None
        return RequestVault.open(self._master, item[0], conversation=conversation, request_id=request_id,
                                 caller=caller)

    def _put_sealed(self, vault: RequestVault, conversation: str) -> None:
        blob = vault.seal(self._master, conversation=conversation)
        with self._lock:
            self._sealed[(conversation, vault.caller)] = (blob, self._clock() + self.policy.vault_ttl_s)


class GatewayRequest:
    """One request through the gateway: ``deidentify`` each text, ``finish`` each answer.

    The vault is bound to ``request_id`` and ``caller`` (the API key id) and wiped by ``close``
    (or on leaving the ``with`` block, whatever happened); with a ``conversation`` id and a policy
    ``vault_ttl_s`` > 0 it is first sealed for the next turn of the same caller's conversation."""

    def __init__(self, gateway: Gateway, *, request_id: str, caller: str, reidentify: bool,
                 conversation: str | None) -> None:
        for name, value in (("request_id", request_id), ("caller", caller)):
            if not isinstance(value, str) or not value:
                raise GatewayInputError(f"{name}: must be a non-empty string")
        if conversation is not None and (not isinstance(conversation, str) or not conversation):
            raise GatewayInputError("conversation: must be a non-empty string or None")
        self._gw = gateway
        self._policy = gateway.policy
        self._keep = bool(conversation) and self._policy.vault_ttl_s > 0
        self._conversation = conversation
        self.audit = GatewayAudit(request_id=request_id, caller=caller, reidentify=bool(reidentify),
                                  leak_action=self._policy.on_leak)
        vault = gateway._take_sealed(conversation, caller, request_id) if self._keep and conversation else None
        self._vault = vault if vault is not None else RequestVault(request_id=request_id, caller=caller)
        self._own = OwnText()
        self._closed = False

    def __enter__(self) -> GatewayRequest:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def audit_on_error(self) -> Iterator[None]:
        """A ShieldError raised inside carries this request's audit record as ``.audit`` (a refused
        or blocked request is audited too)."""
        try:
            yield
        except ShieldError as exc:
            exc.audit = self.audit  # type: ignore[attr-defined]
            raise

    # ---- in --------------------------------------------------------------------------------------
    def _text(self, value: object) -> str:
        limit = self._policy.max_chars
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if len(raw) > 4 * limit:
                self._refusal("too_large")
                raise InputTooLarge(f"the text is {len(raw)} bytes, over the limit of {limit} characters",
                                    hint="send a shorter text")
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self._refusal("invalid_text")
                raise GatewayInputError(f"the text is not valid UTF-8 (byte {exc.start})",
                                        hint="send UTF-8 encoded text") from None
        if not isinstance(value, str):
            self._refusal("invalid_text")
            raise GatewayInputError(f"the text must be a string, got {type(value).__name__}")
        if len(value) > limit:
            self._refusal("too_large")
            raise InputTooLarge(f"the text is {len(value)} characters, over the limit of {limit}",
                                hint="send a shorter text")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            self._refusal("invalid_text")
            raise GatewayInputError(f"the text holds an unpaired surrogate at character {exc.start}, not valid "
                                    "Unicode", hint="send UTF-8 encoded text") from None
        return value

    def _refusal(self, reason: str) -> None:
        self._gw._count("torchshield_gateway_refusals_total", {"reason": reason})

    def deidentify_batch(self, texts: Sequence[str | bytes]) -> list[str]:
        """``deidentify`` for several texts of one request: all are checked before any is changed,
        and each placeholder tag avoids every text of the batch (not only its own)."""
        self._check_open()
        checked = [self._text(t) for t in texts]
        avoid = "\n".join(checked)
        return [self._deidentify(t, avoid) for t in checked]

    def deidentify(self, text: str | bytes) -> str:
        """The text the model may see: every finding replaced as the policy says.

        Raises InputTooLarge, GatewayInputError or InputRefused (nothing reaches the model)."""
        self._check_open()
        checked = self._text(text)
        return self._deidentify(checked, checked)

    def _deidentify(self, text: str, avoid: str) -> str:
        pol = self._policy
        findings = find_pii(text, min_score=pol.min_score, types=pol.types)
        refused = Counter(f.type for f in findings if pol.action_for(f.type) == "refuse")
        if refused:
            self.audit.refused.update(refused)
            self._refusal("input_refused")
            raise InputRefused(refused)
        tag = self._vault.new_tag(avoid=avoid) if findings else ""
        out: list[str] = []
        pos = 0
        handled: Counter[tuple[str, str]] = Counter()
        for f in findings:
            action = pol.action_for(f.type)
            if action == "placeholder":
                new: str | None = self._vault.placeholder(f.type, f.text, tag)
                name = "placeholder"
            else:
                assert isinstance(action, Operator)
                new = action.apply(f.text, Cell(f.type, None), self._gw._keys)
                name = action.name
                if name == "pseudonymize" and new:
                    self._vault.pseudonym(f.type, f.text, new)
            out += [text[pos:f.start], new or ""]
            pos = f.end
            handled[(f.type, name)] += 1
        out.append(text[pos:])
        for (etype, name), n in sorted(handled.items()):
            self.audit.input_entities[etype] += n
            self.audit.actions[name] += n
            self._gw._count("torchshield_gateway_entities_total", {"type": etype, "action": name}, n)
        safe = "".join(out)
        lookalikes = len(PLACEHOLDER_LOOKALIKE.findall(text))
        self.audit.lookalikes += lookalikes
        self._gw._count("torchshield_gateway_lookalikes_total", {}, lookalikes)
        self._own.add(text)
        self._own.add(safe)
        self.audit.texts += 1
        return safe

    # ---- out -------------------------------------------------------------------------------------
    def finish(self, answer: str) -> str:
        """The answer for the caller: leaks handled by policy, stand-ins re-identified if allowed.

        Raises OutputBlocked (HTTP 451) when the policy blocks leaks and the answer holds one."""
        self._check_open()
        if not isinstance(answer, str):
            raise TypeError(f"the model must return a str, got {type(answer).__name__}")
        pol = self._policy
        self._own.add_stand_ins(self._vault.issued())
        leaks = find_leaks(answer, self._own, protected=self._vault.spans(answer), min_score=pol.min_score,
                           types=pol.types)
        if leaks:
            counts = count_types(leaks)
            self.audit.leaks.update(counts)
            for etype, n in counts.items():
                self._gw._count("torchshield_gateway_leaks_total", {"type": etype, "action": pol.on_leak}, n)
            if pol.on_leak == "block":
                self.audit.blocked = True
                self._refusal("output_blocked")
                raise OutputBlocked(counts)
            if pol.on_leak == "mask":
                answer = mask_leaks(answer, leaks)
        if self.audit.reidentify:
            answer, counts = self._vault.reidentify(answer)
            self.audit.reidentified.update(counts)
            for etype, n in counts.items():
                self._gw._count("torchshield_gateway_reidentified_total", {"type": etype}, n)
        return answer

    # ---- end -------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this gateway request is closed (its vault was wiped)")

    def close(self) -> None:
        """Seal the vault for the conversation's next turn if configured, then wipe it."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._keep and self._conversation and len(self._vault):
                self._gw._put_sealed(self._vault, self._conversation)
                self.audit.vault = "sealed"
            elif len(self._vault):
                self.audit.vault = "wiped"
        except ShieldError:
            self.audit.vault = "wiped"
            raise
        finally:
            self._vault.wipe()
            self._own.clear()
