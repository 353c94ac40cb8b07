"""The gateway's public surface: a sorted ``__all__`` that resolves, errors in the one tree with an
HTTP status for the serving layer, and a light import that pulls in no web or metrics library."""

from __future__ import annotations

import subprocess
import sys

import torchshield.gateway as gateway
from torchshield.errors import InputError, PolicyError


def test_all_is_sorted_and_resolves():
    assert gateway.__all__ == sorted(gateway.__all__)
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None


def test_errors_carry_exit_codes_and_http_statuses():
    cases = {gateway.GatewayInputError: (InputError, 2, 400), gateway.InputTooLarge: (InputError, 2, 413),
             gateway.InputRefused: (PolicyError, 3, 422), gateway.OutputBlocked: (PolicyError, 3, 451)}
    for cls, (base, code, status) in cases.items():
        assert issubclass(cls, base) and cls.exit_code == code and cls.http_status == status


def test_import_is_light_and_does_not_reach_up():
    code = ("import sys, torchshield.gateway;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pandas', 'fastapi', 'prometheus_client',"
            " 'transformers') or m.startswith(('torchshield.serve', 'torchshield.cli'))];"
            "print(','.join(sorted(bad)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
