"""A real causal LM behind the gateway: a tiny GPT-2 built from a config (random init, nothing
downloaded) with a byte-level tokenizer made here, fine-tuned until it has memorised one
"training record" holding a phone number. Its prompts are recorded: no PII reaches it; what it
repeats from training is masked and counted; the owner gets placeholders back re-identified,
the predictor does not."""

from __future__ import annotations

import pytest
from gateway_models import ALICE, TRAINING_PHONE, Recorder, note

from torchshield.gateway import Gateway

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

EOS = 256
RECORD = f"客服热线 call {TRAINING_PHONE} now."


class ByteTokenizer:
    """UTF-8 bytes as token ids 0-255, 256 = end of text (the GPT-2 byte level, with no merges)."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def greedy(model, ids: list[int], n: int) -> list[int]:
    """Greedy decoding, written out (generate()'s set-up costs more than this whole model)."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([out[-model.config.n_positions + 1:]])).logits[0, -1].argmax())
            if nxt == EOS:
                break
            out.append(nxt)
    return out[len(ids):]


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = transformers.GPT2Config(vocab_size=257, n_positions=512, n_embd=32, n_layer=1, n_head=2,
                                  bos_token_id=EOS, eos_token_id=EOS, loss_type="ForCausalLM")
    model = transformers.GPT2LMHeadModel(cfg)
    tok = ByteTokenizer()
    ids = torch.tensor([tok.encode(RECORD) + [EOS]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(100):  # memorise the one training record
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    def generate(prompt: str) -> str:
        """The prompt, the model's own continuation of it, then what it says after the record's
        opening words (where the memorised number comes out)."""
        answer = tok.decode(greedy(model, tok.encode(prompt), 4))
        recalled = tok.decode(greedy(model, tok.encode(RECORD[:5]), len(RECORD.encode())))
        return f"{prompt}{answer}\n{RECORD[:5]}{recalled}"

    assert TRAINING_PHONE in generate("hello"), "the tiny model did not memorise its record"
    yield generate
    torch.set_num_threads(threads)


def test_tiny_gpt2_behind_the_gateway(master_key, lm):
    calls = []
    gw = Gateway(None, master_key=master_key, counter=lambda n, labels, a: calls.append((n, labels, a)))
    text = note(ALICE)
    rec = Recorder(lm)
    owner = gw.protect(rec, text, request_id="r1", caller="key-owner", reidentify=True)
    predictor = gw.protect(rec, text, request_id="r2", caller="key-predictor", reidentify=False)
    for seen in rec.inputs:
        assert not any(v in seen for v in ALICE.values())
    assert text in owner.text and not any(v in predictor.text for v in ALICE.values())
    for result in (owner, predictor):
        assert TRAINING_PHONE not in result.text and result.audit.leaks["CN_MOBILE"] >= 1
    assert sum(a for n, _, a in calls if n == "torchshield_gateway_leaks_total") == sum(
        sum(r.audit.leaks.values()) for r in (owner, predictor))
