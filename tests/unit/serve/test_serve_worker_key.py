"""``serve --workers N`` resolves the master key once: the workers get it from the command, never
from the key file (a passphrase key file would otherwise be asked for once per worker)."""

from __future__ import annotations

import json
import os

from torchshield.crypto.keys import MasterKey
from torchshield.serve.http.worker import CONFIG_ENV, WORKER_KEY_ENV, app_from_env, worker_key_env
from torchshield.serve.service import ServeConfig


def test_a_worker_uses_the_handed_key_and_takes_it_out_of_its_environment(tmp_path, monkeypatch, master_key):
    config = ServeConfig(db_url=f"sqlite:///{tmp_path / 'shield.db'}",
                         key_file=str(tmp_path / "absent.key"))  # reading it would fail: it does not exist
    monkeypatch.setenv(CONFIG_ENV, json.dumps(config.to_dict()))
    monkeypatch.setenv(WORKER_KEY_ENV, worker_key_env(master_key))
    app = app_from_env()
    service = app.state.service
    try:
        assert WORKER_KEY_ENV not in os.environ
        assert service._master.same_as(master_key)
    finally:
        service.close()


def test_the_handed_value_round_trips_and_is_not_the_key_file_format(master_key):
    import base64

    value = worker_key_env(master_key)
    assert MasterKey(base64.urlsafe_b64decode(value)).same_as(master_key)
    assert "torchshield-key" not in value
