"""Issue 17, finding 7: the service serves only bundles signed by a trusted key (verified with
the bundle loader's ``verify_with``), at start-up and on reload; ``allow_unsigned`` is the named,
logged opt-out."""

from __future__ import annotations

import logging
import shutil

import pytest
from serve_harness import make_bundle, make_service, make_signer

from torchshield.errors import SignatureError
from torchshield.serve.models import TrustPolicy, load_bundle_model


@pytest.fixture
def mallory(tmp_path):
    folder = tmp_path / "mallory"
    folder.mkdir()
    return make_signer(folder)


def _trust(tmp_path, **kw):
    return TrustPolicy.from_files([str(make_signer(tmp_path)[1])], **kw)


def test_trusted_signer_is_served_and_described(tmp_path, master_key):
    from torchshield.crypto.signing import fingerprint, load_public_key

    p = make_bundle(tmp_path / "digits.tsb", master_key)
    m = load_bundle_model(p, master=master_key, trust=_trust(tmp_path))
    fp = fingerprint(load_public_key(make_signer(tmp_path)[1]))
    assert m.describe()["signature"] == {"signer": fp, "trusted": True}


def test_unsigned_bundle_is_refused_by_default(tmp_path, master_key):
    p = make_bundle(tmp_path / "digits.tsb", master_key, sign=False)
    for trust in (None, _trust(tmp_path)):
        with pytest.raises(SignatureError, match="not signed") as exc:
            load_bundle_model(p, master=master_key, trust=trust)
        assert "digits.tsb" in exc.value.message and "--trust" in exc.value.hint


def test_foreign_signed_bundle_is_refused(tmp_path, master_key, mallory):
    p = make_bundle(tmp_path / "digits.tsb", master_key, sign_with=mallory[0])
    with pytest.raises(SignatureError, match="not a trusted signer"):
        load_bundle_model(p, master=master_key, trust=_trust(tmp_path))


def test_several_trusted_signers(tmp_path, master_key, mallory):
    a = make_bundle(tmp_path / "digits.tsb", master_key)
    b = make_bundle(tmp_path / "iris.tsb", master_key, name="iris", sign_with=mallory[0])
    trust = TrustPolicy.from_files([str(make_signer(tmp_path)[1]), str(mallory[1])])
    assert [load_bundle_model(x, master=master_key, trust=trust).trusted for x in (a, b)] == [True, True]


def test_tampered_signed_bundle_is_refused(tmp_path, master_key):
    """Unencrypted, so the attacker can change a weight byte in place: the signature covers the data."""
    p = make_bundle(tmp_path / "digits.tsb", None)
    data = bytearray(p.read_bytes())
    data[-20] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(Exception) as exc:
        load_bundle_model(p, trust=_trust(tmp_path))
    from torchshield.errors import CheckFailed

    assert isinstance(exc.value, CheckFailed)


def test_allow_unsigned_serves_unverified_and_says_so(tmp_path, master_key, mallory, caplog):
    unsigned = make_bundle(tmp_path / "digits.tsb", master_key, sign=False)
    foreign = make_bundle(tmp_path / "iris.tsb", master_key, name="iris", sign_with=mallory[0])
    trust = _trust(tmp_path, allow_unsigned=True)
    with caplog.at_level(logging.WARNING, logger="torchshield.serve"):
        models = [load_bundle_model(x, master=master_key, trust=trust) for x in (unsigned, foreign)]
    assert [m.describe()["signature"]["trusted"] for m in models] == [False, False]
    assert caplog.text.count("UNVERIFIED BUNDLE") == 2


def test_service_refuses_at_start_and_on_reload(tmp_path, master_key, mallory):
    from torchshield.serve.service import ServeConfig, Service

    svc = make_service(tmp_path, master_key)
    try:
        served = svc.registry
        digits = tmp_path / "digits.tsb"
        good = digits.read_bytes()
        make_bundle(digits, master_key, seed=7, sign_with=mallory[0])  # replaced by a foreign-signed one
        with pytest.raises(SignatureError):
            svc.reload_models()
        assert svc.registry is served  # still serving what was verified
        with pytest.raises(SignatureError):  # and a fresh start refuses it
            Service.start(ServeConfig(db_url=f"sqlite:///{tmp_path / 'other.db'}", bundles=(str(digits),),
                                      trusted_signers=svc.config.trusted_signers), master=master_key)
        shutil.copyfile(tmp_path / "iris.tsb", tmp_path / "spare.tsb")
        digits.write_bytes(good)
        assert svc.reload_models() == ["digits", "iris"] and svc.registry is not served
    finally:
        svc.close()


def test_cli_serve_needs_trust_or_the_named_opt_out(tmp_path, key_file, mallory, capsys):
    from torchshield.cli.app import run
    from torchshield.crypto.keys import read_key_file

    p = make_bundle(tmp_path / "digits.tsb", read_key_file(key_file))
    db = f"sqlite:///{tmp_path / 'shield.db'}"
    assert run(["serve", str(p), "--db", db, "--key-file", str(key_file)]) == 2
    assert "--trust" in capsys.readouterr().err
    assert run(["serve", str(p), "--db", db, "--key-file", str(key_file), "--trust", str(mallory[1])]) == 1
    assert "not a trusted signer" in capsys.readouterr().err
