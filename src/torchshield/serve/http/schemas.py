"""The shapes of request bodies and queries, validated before any route logic runs.

Every field is type- and range-checked (strict types: ``"burst": "x"`` or ``[1]`` is refused,
not coerced), unknown fields are refused, and a failure is a 422 whose message names the field.
Numbers are bounded so that nothing reaches the database that it cannot store (a 23-digit
``after_seq``) or that defeats a limit (``rate_per_s: 1e400`` is infinity)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from torchshield.serve.access.keys import MAX_BURST, MAX_RATE, parse_duration, valid_model_name
from torchshield.serve.policy import GLOBAL, role_names

__all__ = ["CreateKeyBody", "GenerateBody", "MAX_SEQ", "first_problem", "valid_since"]

MAX_SEQ = (1 << 63) - 1  # a BIGINT: the largest sequence number the audit log can hold


class CreateKeyBody(BaseModel):
    """``POST /v1/keys``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: str
    models: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=lambda: [GLOBAL], max_length=256)
    name: Annotated[str, Field(max_length=200)] = ""
    expires: Annotated[str, Field(max_length=12)] | None = None
    rate_per_s: Annotated[float, Field(gt=0, le=MAX_RATE, allow_inf_nan=False)] | None = None
    burst: Annotated[int, Field(ge=1, le=MAX_BURST)] | None = None

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in role_names():
            raise ValueError(f"unknown role; choose one of {', '.join(role_names())}")
        return v

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one model name, or [\"*\"] for every model")
        if (GLOBAL in v and len(set(v)) > 1) or not all(m == GLOBAL or valid_model_name(m) for m in v):
            raise ValueError("model names are letters, digits, '.', '_' and '-' (or '*' alone)")
        return sorted(set(v))

    @field_validator("expires")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_duration(v)
            except Exception:  # noqa: BLE001 - the one message below names the field
                raise ValueError("not a duration; use e.g. 90m, 12h, 30d or 4w") from None
        return v

    @property
    def expires_in(self) -> float | None:
        return parse_duration(self.expires) if self.expires else None


class GenerateBody(BaseModel):
    """``POST /v1/models/{name}/generate``: one prompt; the model's own caps apply on top."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: Annotated[str, Field(min_length=1, max_length=16384)]
    max_new_tokens: Annotated[int, Field(ge=1, le=1024)] = 32


def valid_since(value: str | None) -> str | None:
    """``since`` of ``GET /v1/audit``: an ISO date or time, or ValueError."""
    if value is not None:
        datetime.fromisoformat(value)
    return value


def first_problem(errors: list[dict[str, Any]] | ValidationError) -> str:
    """One line naming the first invalid field and what is wrong with it (no input echoed)."""
    errs = errors.errors() if isinstance(errors, ValidationError) else errors
    if not errs:
        return "request parameters are invalid"
    e = errs[0]
    loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
    field = ".".join(loc) or "body"
    msg = str(e.get("msg", "is invalid")).removeprefix("Value error, ")
    if e.get("type") == "extra_forbidden":
        msg = "is not a known field"
    return f"{field}: {msg}"[:300]
