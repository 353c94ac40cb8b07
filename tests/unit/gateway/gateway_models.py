"""Stand-in models and sample PII for the gateway tests (imported by them; not a test module).

The sample values are chosen to be unambiguous for any reasonable detector (checksummed IDs and
cards, full e-mail addresses, mobile numbers) so that these tests check the gateway, not the
recognisers another engineer is tuning."""

from __future__ import annotations


def cn_id(body17: str) -> str:
    """GB 11643 check digit, computed here independently of torchshield's validators."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body17 + "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights)) % 11]


def luhn(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


ALICE = {  # caller A's patient note: Chinese and English identifiers
    "CN_RESIDENT_ID": cn_id("11010519900307457"),
    "CN_MOBILE": "13812345678",
    "EMAIL": "john.smith@example.com",
    "BANK_CARD": luhn("622202123456789012"),
}
BOB = {
    "CN_RESIDENT_ID": cn_id("31010419851122123"),
    "CN_MOBILE": "15987654321",
    "EMAIL": "mary.jones@example.org",
}
TRAINING_PHONE = "13900139000"  # a number the "fine-tuned" model memorised; never in any request


def note(p: dict[str, str]) -> str:
    return (f"患者身份证号{p['CN_RESIDENT_ID']}，手机{p['CN_MOBILE']}。"
            f"Please email the summary to {p['EMAIL']}."
            + (f" 银行卡 {p['BANK_CARD']}。" if "BANK_CARD" in p else ""))


class Recorder:
    """Wraps a model and records every text it receives (what the model could learn or print)."""

    def __init__(self, model):
        self.model = model
        self.inputs: list[str] = []

    def __call__(self, text):
        self.inputs.append(text)
        return self.model(text)

    def batch(self, texts):
        self.inputs.extend(texts)
        return [self.model(t) for t in texts]


def echo(text: str) -> str:
    return "Answer: " + text


def mutate(text: str) -> str:
    """Echo, but the way a real model mangles things: brackets changed, sentences reordered."""
    parts = [p for p in text.replace("<", "[").replace(">", "]").split("。") if p]
    return "Summary: " + "。".join(reversed(parts))


class Memorising:
    """A model that remembers every prompt it saw (across requests) and, when asked, prints the
    placeholders of earlier requests and a phone number from its training data."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, text: str) -> str:
        earlier = " | ".join(self.seen)
        self.seen.append(text)
        return f"{text} || earlier: {earlier} || from training: call {TRAINING_PHONE}"

