"""Dynamic batching (serve/batching.py): concurrent requests share a forward, each gets exactly
its own rows, failures reach every member of a batch, and a batched row's answer equals the
unbatched one on real token models (right padding with the model's pad id and a zero mask)."""

from __future__ import annotations

import threading

import pytest
import torch

from torchshield.serve.batching import ForwardQueue, merge_inputs
from torchshield.serve.inputs import TokenBatch


class Gate:
    """A forward that holds its first call until released, so that others queue meanwhile."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return x * 2 + 1


def _run_concurrently(q: ForwardQueue, gate: Gate, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The first input enters the forward; the others queue behind it; then the gate opens."""
    out: list[torch.Tensor | None] = [None] * len(inputs)

    def call(i: int) -> None:
        out[i] = q.run(inputs[i])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert gate.entered.wait(30)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, len(inputs))]
    for t in rest:
        t.start()
    deadline = 30.0
    while len(q._queue) < len(rest) and deadline > 0:  # every other caller is queued behind the first
        threading.Event().wait(0.01)
        deadline -= 0.01
    assert len(q._queue) == len(rest)
    gate.release.set()
    for t in [first, *rest]:
        t.join(30)
    return out  # type: ignore[return-value]


def test_queued_requests_share_one_forward_and_get_their_own_rows():
    gate = Gate()
    q = ForwardQueue(gate, max_rows=64)
    inputs = [torch.full((i + 1, 3), float(i)) for i in range(6)]  # 1..6 rows, distinct values
    out = _run_concurrently(q, gate, inputs)
    for x, y in zip(inputs, out, strict=True):
        assert torch.equal(y, x * 2 + 1)
    assert gate.calls == [1, 2 + 3 + 4 + 5 + 6]  # the first alone, then everything queued in one forward
    assert (q.forwards, q.requests) == (2, 6)


def test_max_rows_splits_batches_and_no_batching_runs_each_alone():
    gate = Gate()
    q = ForwardQueue(gate, max_rows=5)
    inputs = [torch.full((2, 1), float(i)) for i in range(5)]  # 2 rows each: at most two per batch
    out = _run_concurrently(q, gate, inputs)
    assert all(torch.equal(y, x * 2 + 1) for x, y in zip(inputs, out, strict=True))
    assert gate.calls == [2, 4, 4]

    gate = Gate()
    q = ForwardQueue(gate, max_rows=64, batching=False)
    out = _run_concurrently(q, gate, inputs)
    assert all(torch.equal(y, x * 2 + 1) for x, y in zip(inputs, out, strict=True))
    assert gate.calls == [2, 2, 2, 2, 2]


def test_a_failed_forward_fails_every_request_of_its_batch_and_the_next_one_works():
    gate = Gate()
    state = {"fail": True}

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = gate(x)
        if len(gate.calls) == 2 and state["fail"]:
            raise RuntimeError("model broke")
        return y

    q = ForwardQueue(forward, max_rows=64)
    errors: list[BaseException] = []
    inputs = [torch.ones(1, 2) * i for i in range(4)]

    def call(i: int) -> None:
        try:
            q.run(inputs[i])
        except RuntimeError as exc:
            errors.append(exc)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert gate.entered.wait(30)
    rest = [threading.Thread(target=call, args=(i,)) for i in range(1, 4)]
    for t in rest:
        t.start()
    while len(q._queue) < 3:
        threading.Event().wait(0.01)
    gate.release.set()
    for t in [first, *rest]:
        t.join(30)
    assert len(errors) == 3 and all("model broke" in str(e) for e in errors)  # the batch of three, not the first
    state["fail"] = False
    assert torch.equal(q.run(torch.ones(1, 2)), torch.ones(1, 2) * 3)


def test_try_run_never_waits():
    gate = Gate()
    q = ForwardQueue(gate, max_rows=64)
    t = threading.Thread(target=q.run, args=(torch.ones(1, 1),))
    t.start()
    assert gate.entered.wait(30)
    assert q.try_run(torch.ones(1, 1)) is None  # a forward is running: the loop goes to a thread
    gate.release.set()
    t.join(30)
    assert torch.equal(q.try_run(torch.ones(1, 1)), torch.full((1, 1), 3.0))
    with q.exclusive():
        assert q.try_run(torch.ones(1, 1)) is None


def test_token_batches_are_right_padded_with_the_pad_id():
    a = TokenBatch(torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 1]]))
    b = TokenBatch(torch.tensor([[8, 9, 0]]), torch.tensor([[1, 1, 0]]))  # padded by its own tokenize
    c = TokenBatch(torch.tensor([[4]]), torch.tensor([[1]]))
    m = merge_inputs([c, a, b], pad_id=0)
    assert m.ids.tolist() == [[4, 0, 0], [5, 6, 7], [8, 9, 0]]
    assert m.mask.tolist() == [[1, 0, 0], [1, 1, 1], [1, 1, 0]]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_batched_rows_answer_as_they_would_alone(tmp_path, kind):
    """Texts of different lengths batched together: each row's logits equal its own unbatched
    forward (float rounding), and the served answer is the same."""
    pytest.importorskip("transformers")
    import byom_models as bm
    from serve_harness import make_signer

    from torchshield.crypto.keys import generate_master_key
    from torchshield.model.loading import protect_model
    from torchshield.serve.models import TrustPolicy, load_bundle_model

    master = generate_master_key()
    priv, pub = make_signer(tmp_path)
    (bm.tiny_bert if kind == "bert" else bm.tiny_gpt2)(tmp_path / kind)
    protect_model(tmp_path / kind, tmp_path / f"{kind}.tsb", key=master, sign_with=priv)
    m = load_bundle_model(tmp_path / f"{kind}.tsb", master=master, trust=TrustPolicy.from_files([str(pub)]))
    texts = ["the cat", "a good model is secure data", "dog", "the text token is bad and the data is good"]
    alone = [m.validate({"text": [t]}) for t in texts]
    merged = merge_inputs(alone, pad_id=m.io.pad_id)
    assert merged.ids.shape[1] == max(x.ids.shape[1] for x in alone) > min(x.ids.shape[1] for x in alone)
    together = m._logits(merged)
    for i, x in enumerate(alone):
        torch.testing.assert_close(together[i:i + 1], m._logits(x), rtol=1e-5, atol=1e-5)
    answers = [m.predict(x) for x in alone]
    m.forwards.batching = True
    gate = threading.Barrier(len(alone))
    got: list = [None] * len(alone)

    def call(i: int) -> None:
        gate.wait(30)
        got[i] = m.predict(alone[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(alone))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [g["predictions"] for g in got] == [a["predictions"] for a in answers]
