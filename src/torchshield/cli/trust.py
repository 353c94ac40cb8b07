"""Whether a command may import the model code a bundle names: ``--pubkey`` and ``--allow-factory``.

A bundle of a user's own architecture (``model protect --factory pkg.module:function``) is rebuilt
by importing that function, so opening it runs code the bundle names. ``open_model`` does that only
for a bundle whose signature it verified or a factory allowed by name; every command that rebuilds
such a model takes these two options, so the refusal's hint (``--pubkey`` / ``--allow-factory``)
names options that exist on the command that printed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from torchshield.errors import about

__all__ = ["ALLOW_FACTORY_OPTION", "PUBKEY_OPTION", "Trust", "trust"]

PUBKEY_OPTION = typer.Option(None, "--pubkey", "-p", help="Require the bundle to be signed by this public key "
                                                          "(then the model code it names is trusted).")
ALLOW_FACTORY_OPTION = typer.Option([], "--allow-factory", help="Import this model factory (package.module:function, "
                                    "'pkg.*' for a package) for an unsigned bundle that names one.")


@dataclass(frozen=True)
class Trust:
    """The arguments ``open_model`` takes to decide on a bundle's code."""

    verify_with: Any = None
    allow_factories: tuple[str, ...] = ()

    def kwargs(self) -> dict[str, Any]:
        return {"verify_with": self.verify_with, "allow_factories": self.allow_factories}


def trust(pubkey: Path | None, allow_factory: list[str] | None) -> Trust:
    """Load ``--pubkey`` (a bad file is exit 2 naming the option) before any other work."""
    verify_with = None
    if pubkey is not None:
        from torchshield.crypto.signing import load_public_key

        with about("--pubkey"):
            verify_with = load_public_key(pubkey)
    return Trust(verify_with, tuple(allow_factory or ()))
