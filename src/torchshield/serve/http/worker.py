"""Entry point for uvicorn workers: ``torchshield serve --workers N`` starts N processes that each
build their own :class:`Service` from the JSON configuration in ``TORCHSHIELD_SERVE_CONFIG``
(paths and URLs only).

The master key is resolved once, by the ``serve`` command, before any worker starts (a passphrase
key file is asked for once, not once per worker). The command hands the key to its own workers in
``TORCHSHIELD_SERVE_WORKER_KEY``, an environment variable of the worker processes it spawns (readable
only by the same user, like the key file itself); each worker takes it out of its environment as it
starts, so nothing the worker runs later inherits it."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

__all__ = ["CONFIG_ENV", "WORKER_KEY_ENV", "app_from_env", "worker_key_env"]

CONFIG_ENV = "TORCHSHIELD_SERVE_CONFIG"
WORKER_KEY_ENV = "TORCHSHIELD_SERVE_WORKER_KEY"


def worker_key_env(master: Any) -> str:
    """The value of ``WORKER_KEY_ENV`` that hands ``master`` to the workers."""
    return base64.urlsafe_b64encode(master.secret).decode("ascii")


def _take_worker_key() -> Any:
    from torchshield.crypto.keys import MasterKey

    value = os.environ.pop(WORKER_KEY_ENV, None)
    return MasterKey(base64.urlsafe_b64decode(value)) if value else None


def app_from_env() -> Any:
    from torchshield.serve.http.app import create_app
    from torchshield.serve.service import ServeConfig, Service

    config = ServeConfig.from_dict(json.loads(os.environ[CONFIG_ENV]))
    return create_app(Service.start(config, master=_take_worker_key()))
