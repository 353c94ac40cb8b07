"""The serving core stays web-free (only serve.http imports FastAPI) and its exports are sorted."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys

MODULES = ["torchshield.serve", "torchshield.serve.access", "torchshield.serve.audit", "torchshield.serve.db",
           "torchshield.serve.models", "torchshield.serve.monitor", "torchshield.serve.ratelimit",
           "torchshield.serve.rbac", "torchshield.serve.service", "torchshield.serve.http", "torchshield.serve.policy",
           "torchshield.serve.metrics", "torchshield.serve.db_errors", "torchshield.serve.http.paths",
           "torchshield.serve.http.routes", "torchshield.serve.http.context", "torchshield.serve.http.schemas",
           "torchshield.crypto.chain"]


def test_exports_sorted_and_resolve():
    for name in MODULES:
        mod = importlib.import_module(name)
        assert mod.__all__ == sorted(mod.__all__), name
        assert all(getattr(mod, n) is not None for n in mod.__all__)


def test_core_does_not_import_fastapi_or_torch():
    code = ("import sys, torchshield.serve, torchshield.cli.app;"
            "print(','.join(m for m in ('fastapi', 'starlette', 'uvicorn', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_db_modules_do_not_import_each_other():
    """db.py opens db_async lazily for PostgreSQL; db_async never reaches back into db."""
    root = pathlib.Path(importlib.import_module("torchshield.serve").__file__).parent
    assert "torchshield.serve.db " not in (root / "db_async.py").read_text().replace("torchshield.serve.db_", "")
    assert "from torchshield.serve.db import" not in (root / "db_async.py").read_text()


def test_only_http_package_mentions_fastapi():
    root = pathlib.Path(importlib.import_module("torchshield.serve").__file__).parent
    users = {p.relative_to(root).parts[0] for p in root.rglob("*.py") if "import fastapi" in p.read_text()
             or "from fastapi" in p.read_text()}
    assert users <= {"http"}
