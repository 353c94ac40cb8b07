"""Entry point for uvicorn workers: ``torchshield serve --workers N`` starts N processes that each
build their own :class:`Service` from the JSON configuration in ``TORCHSHIELD_SERVE_CONFIG``
(paths and URLs only; the master key comes from the key file or the inherited environment)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["CONFIG_ENV", "app_from_env"]

CONFIG_ENV = "TORCHSHIELD_SERVE_CONFIG"


def app_from_env() -> Any:
    from torchshield.serve.http.app import create_app
    from torchshield.serve.service import ServeConfig, Service

    config = ServeConfig.from_dict(json.loads(os.environ[CONFIG_ENV]))
    return create_app(Service.start(config))
