"""The policy file (data mask's format plus the gateway's operators and section) and the vault
kept sealed between the turns of one caller's conversation."""

from __future__ import annotations

import re

import pytest
from gateway_models import ALICE, BOB, Memorising, note

from torchshield.crypto.keys import generate_master_key
from torchshield.data.anonymize import load_policy
from torchshield.errors import InputError, IntegrityError, KeyMaterialError, WrongKeyError
from torchshield.gateway import Gateway, load_gateway_policy
from torchshield.gateway.vault import RequestVault

POLICY = """version: 1
min_score: 0.6
default: placeholder
entities:
  CN_RESIDENT_ID: refuse
  EMAIL: {operator: mask, keep_last: 4}
gateway:
  max_chars: 5000
  on_leak: block
  vault_ttl_s: 30
"""


def test_policy_file_with_gateway_operators_and_section(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY, encoding="utf-8")
    pol = load_gateway_policy(path)
    assert (pol.max_chars, pol.on_leak, pol.vault_ttl_s, pol.min_score) == (5000, "block", 30.0, 0.6)
    assert pol.action_for("CN_RESIDENT_ID") == "refuse" and pol.action_for("PERSON") == "placeholder"
    assert pol.action_for("EMAIL").name == "mask"
    assert load_gateway_policy(None).action_for("BANK_CARD") == "placeholder"
    # Without `default`, a data mask file means what it means for data mask: replace by <TYPE>.
    assert load_gateway_policy({"entities": {"EMAIL": "hash"}}).action_for("PERSON").name == "replace"
    # The gateway operators are the gateway's own: data mask refuses them, loudly.
    with pytest.raises(InputError, match="unknown operator 'placeholder'"):
        load_policy({"default": "placeholder"})


@pytest.mark.parametrize(("policy", "field"), [
    ({"gateway": {"max_char": 5}}, "gateway.max_char: unknown field"),
    ({"gateway": {"max_chars": 0}}, "gateway.max_chars"),
    ({"gateway": {"max_chars": True}}, "gateway.max_chars"),
    ({"gateway": {"on_leak": "drop"}}, "gateway.on_leak"),
    ({"gateway": {"vault_ttl_s": -1}}, "gateway.vault_ttl_s"),
    ({"gateway": ["on_leak"]}, "gateway: must be a mapping"),
    ({"entities": {"PERSON": {"operator": "placeholder", "n": 1}}}, "entities.PERSON: unknown option(s) n"),
    ({"entities": {"NAME": "placeholder"}}, "entities.NAME: unknown entity type"),
    ({"default": {"operator": "refuse", "why": "x"}}, "default: unknown option(s) why"),
    ({"unknown": 1}, "unknown: unknown field"),
])
def test_policy_mistakes_name_the_field(policy, field):
    with pytest.raises(InputError) as info:
        load_gateway_policy(policy, name="p.yaml")
    assert field in str(info.value) and str(info.value).startswith("p.yaml: ")


def test_policy_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_gateway_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        load_gateway_policy(bad)


def test_gateway_needs_a_master_key_and_overrides_are_validated(master_key):
    with pytest.raises(KeyMaterialError):
        Gateway(None, master_key=b"\x00" * 32)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="on_leak"):
        Gateway(None, master_key=master_key, on_leak="ignore")
    assert Gateway(POLICY_DICT, master_key=master_key, max_chars=10).policy.max_chars == 10


POLICY_DICT = {"default": "placeholder", "gateway": {"vault_ttl_s": 60}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_conversation_vault_is_sealed_between_turns_for_the_same_caller_only(master_key):
    clock, store = Clock(), {}
    gw = Gateway(POLICY_DICT, master_key=master_key, clock=clock, sealed_store=store)
    model = Memorising()  # prints earlier turns' placeholders
    t1 = gw.protect(model, note(ALICE), request_id="t1", caller="key-a", reidentify=True, conversation="c1")
    assert t1.audit.vault == "sealed" and list(store) == [("c1", "key-a")]
    blob = store[("c1", "key-a")][0]
    assert all(v.encode() not in blob for v in ALICE.values())
    t2 = gw.protect(model, "继续。", request_id="t2", caller="key-a", reidentify=True, conversation="c1")
    assert all(v in t2.text for v in ALICE.values())  # turn 1's placeholders, printed in turn 2, map back
    # Another caller naming the same conversation gets nothing of it.
    t3 = gw.protect(model, "继续。", request_id="t3", caller="key-b", reidentify=True, conversation="c1")
    assert not any(v in t3.text for v in ALICE.values())
    # The TTL runs from the last turn; after it, the sealed vault is gone.
    clock.now += 61
    t4 = gw.protect(model, "继续。", request_id="t4", caller="key-a", reidentify=True, conversation="c1")
    assert not any(v in t4.text for v in ALICE.values())
    assert store == {}  # the expired vault was swept; turn 4 issued nothing to keep


def test_without_a_ttl_a_conversation_keeps_nothing(master_key):
    gw = Gateway(None, master_key=master_key)
    model = Memorising()
    gw.protect(model, note(ALICE), request_id="t1", caller="k", reidentify=True, conversation="c")
    t2 = gw.protect(model, "继续。", request_id="t2", caller="k", reidentify=True, conversation="c")
    assert not any(v in t2.text for v in ALICE.values())
    assert len(re.findall(r"<[A-Z_]+_\d+_[a-z]{8}>", t2.text)) == len(ALICE)


def test_a_sealed_vault_opens_only_in_its_own_conversation_caller_and_key(master_key):
    v = RequestVault(request_id="r", caller="key-a")
    tag = v.new_tag(avoid="")
    token = v.placeholder("CN_MOBILE", BOB["CN_MOBILE"], tag)
    v.pseudonym("PERSON", "王建国", "李明")
    blob = v.seal(master_key, conversation="c1")
    back = RequestVault.open(master_key, blob, conversation="c1", request_id="r2", caller="key-a")
    assert back.reidentify(f"{token} 李明") == (f"{BOB['CN_MOBILE']} 王建国", {"CN_MOBILE": 1, "PERSON": 1})
    assert back.placeholder("CN_MOBILE", BOB["CN_MOBILE"], "zzzzzzzz") == token  # same value, same stand-in
    with pytest.raises(IntegrityError):
        RequestVault.open(master_key, blob, conversation="c2", request_id="r", caller="key-a")
    with pytest.raises(IntegrityError):
        RequestVault.open(master_key, blob, conversation="c1", request_id="r", caller="key-b")
    with pytest.raises(WrongKeyError):
        RequestVault.open(generate_master_key(), blob, conversation="c1", request_id="r", caller="key-a")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(IntegrityError):
        RequestVault.open(master_key, bytes(tampered), conversation="c1", request_id="r", caller="key-a")


def test_a_blob_moved_to_another_callers_slot_does_not_open(master_key):
    store: dict = {}
    gw = Gateway(POLICY_DICT, master_key=master_key, sealed_store=store)
    gw.protect(Memorising(), note(ALICE), request_id="t1", caller="key-a", reidentify=True, conversation="c")
    store[("c", "key-b")] = store.pop(("c", "key-a"))
    with pytest.raises(IntegrityError):
        gw.protect(Memorising(), "hi", request_id="t2", caller="key-b", reidentify=True, conversation="c")
