"""Checks a running torchshield service from the outside, as a client would see it: transport
security, that anonymous calls are refused, that the given key works and is rate limited, and
that the audit chain verifies.

The API key given is used only for these requests and never written to the report. The rate
limit probe sends at most ``RATE_PROBE`` cheap authenticated requests."""

from __future__ import annotations

from urllib.parse import urlsplit

from torchshield.assess.context import AssessContext
from torchshield.assess.findings import FAIL, PASS, SKIPPED, WARN, Section

__all__ = ["RATE_PROBE", "check_serving"]

RATE_PROBE = 300
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def check_serving(ctx: AssessContext) -> Section:
    s = Section("serving", "Serving configuration")
    url = ctx.inputs.endpoint
    if not url:
        s.skip(
            "no service endpoint was given", "pass --endpoint URL --api-key KEY to check a running service"
        )
        return s
    import httpx

    parts = urlsplit(url)
    base = url.rstrip("/")
    s.metrics["endpoint"] = (
        f"{parts.scheme}://{parts.hostname}:{parts.port}"
        if parts.port
        else f"{parts.scheme}://{parts.hostname}"
    )
    _tls(s, parts.scheme, parts.hostname or "")
    with httpx.Client(base_url=base, timeout=ctx.inputs.endpoint_timeout_s) as client:
        try:
            health = client.get("/healthz")
        except httpx.HTTPError as exc:
            s.add(
                "reachable",
                FAIL,
                f"the service did not answer ({type(exc).__name__})",
                "check the URL and that the service is running",
            )
            return s
        s.add(
            "reachable",
            PASS if health.status_code == 200 else WARN,
            f"/healthz answered {health.status_code}",
        )
        anon = client.get("/v1/models")
        if anon.status_code == 401:
            s.add("auth", PASS, "calls without an API key are refused (401)")
        else:
            s.add(
                "auth",
                FAIL,
                f"an anonymous call to /v1/models got {anon.status_code}",
                "start the service with security on (API keys required)",
            )
        token = ctx.inputs.api_key
        if not token:
            s.add(
                "api-key",
                SKIPPED,
                "no API key was given, so the authenticated checks did not run",
                "pass --api-key (an auditor or admin key checks the audit chain too)",
            )
            return s
        headers = {"Authorization": f"Bearer {token}"}
        try:
            _authenticated(s, client, headers)
        except httpx.HTTPError as exc:  # a finding, not a crash: the service stopped answering midway
            s.add(
                "reachable",
                FAIL,
                f"the service stopped answering during the checks ({type(exc).__name__}, "
                f"timeout {ctx.inputs.endpoint_timeout_s:g} s)",
                "check the service's health and load; raise --endpoint-timeout for a slow service",
            )
    return s


def _tls(s: Section, scheme: str, host: str) -> None:
    if scheme == "https":
        s.add("tls", PASS, "the endpoint uses TLS")
    elif host in _LOOPBACK:
        s.add(
            "tls",
            WARN,
            "plain HTTP on loopback: fine on one machine, not across a network",
            "put a TLS-terminating proxy in front before exposing it",
        )
    else:
        s.add(
            "tls",
            FAIL,
            f"plain HTTP to {host}: keys and inputs travel in clear",
            "serve behind TLS (https://) only",
        )


def _signed_models(s: Section, models: list) -> None:
    """Served bundles signed by a trusted key: the service reports, per model it lets this key
    see, whether the bundle's signature was verified against a key given with ``serve --trust``."""
    sigs = {m.get("name"): m.get("signature") for m in models if isinstance(m, dict)}
    if not sigs or any(not isinstance(v, dict) for v in sigs.values()):
        s.add("signed-models", SKIPPED, "the service does not say who signed its models (or shows none to this key)",
              "use a torchshield service that verifies signatures (serve --trust signer.pub)")
        return
    untrusted = sorted(str(n) for n, v in sigs.items() if not v.get("trusted"))
    s.metrics["signers"] = {str(n): v.get("signer") for n, v in sigs.items()}
    if untrusted:
        s.add("signed-models", FAIL, f"served bundles not signed by a trusted key: {', '.join(untrusted)}",
              "sign the bundles and start the service with --trust signer.pub, without --allow-unsigned")
    else:
        s.add("signed-models", PASS, f"served bundles signed by a trusted key ({len(sigs)} of {len(sigs)})")


def _authenticated(s: Section, client, headers: dict[str, str]) -> None:
    models = client.get("/v1/models", headers=headers)
    if models.status_code != 200:
        s.add("api-key", FAIL, f"the API key given was refused ({models.status_code})", "check the key")
        return
    s.metrics["models"] = [m.get("name") for m in models.json().get("models", [])]
    s.add("api-key", PASS, f"the API key is accepted (it may use {len(s.metrics['models'])} of the models)")
    _signed_models(s, models.json().get("models", []))
    audit = client.get("/v1/audit/verify", headers=headers)
    if audit.status_code == 200:
        doc = audit.json()
        s.metrics["audit"] = {
            k: doc.get(k) for k in ("ok", "records", "head_seq", "first_bad", "reason") if k in doc
        }
        if doc.get("ok"):
            s.add("audit-chain", PASS, f"the audit hash chain verifies ({doc.get('records', '?')} records)")
        else:
            s.add(
                "audit-chain",
                FAIL,
                f"the audit chain is broken: {doc.get('reason', 'verification failed')}",
                "treat the log as tampered; investigate from the first bad record",
            )
    else:
        s.add(
            "audit-chain",
            SKIPPED,
            f"this key may not verify the audit log ({audit.status_code})",
            "use an auditor or admin key to check the chain",
        )
    for n in range(1, RATE_PROBE + 1):
        r = client.get("/v1/models", headers=headers)
        if r.status_code == 429:
            s.metrics["rate_limited_after"] = n
            s.add(
                "rate-limit",
                PASS,
                f"requests are rate limited (429 after {n} quick calls, "
                f"Retry-After {r.headers.get('retry-after', '?')} s)",
            )
            return
    s.add(
        "rate-limit",
        WARN,
        f"{RATE_PROBE} quick calls were all answered: no rate limit was hit",
        "set a per-key rate and burst (torchshield access create --rate ... --burst ...)",
    )
