"""Privacy gateway: added latency on a 1 KB mixed Chinese/English prompt with ~8 entities (issue 19).

Measured in one process, pinned to one core (``os.sched_setaffinity``, the same as ``taskset -c 0``),
interleaved rounds with the order rotated, medians:

  * ``bare``       the model callable alone (an echo: the cost of the model itself is not the point)
  * ``find_pii``   the detector once over the prompt (the floor under any de-identification)
  * ``find_pii_answer``  the detector over the de-identified answer (the leak scan's floor)
  * ``gateway``    ``Gateway.protect`` for a caller allowed to see PII: de-identify, call, leak
                   scan of the answer, re-identify, wipe
  * ``predictor``  the same for a caller without that right (no re-identification)

The added latency is ``gateway - bare``. The gateway runs the detector twice (on the prompt and on
the answer), so ``find_pii + find_pii_answer`` is its floor; the rest is the gateway's own work.

LLM Guard (``Anonymize`` + ``Deanonymize``) is not measured: its Anonymize scanner loads a
transformers NER model (and spaCy models for Chinese) from the model hub when it starts, which
cannot be reached from this workplace, and we do not download weights at run time.

    taskset -c 0 .venv/bin/python benchmarks/bench_gateway.py [--rounds 30] [--per-round 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from torchshield.crypto.keys import generate_master_key
from torchshield.data.pii import find_pii
from torchshield.gateway import Gateway


def _cn_id(body17: str) -> str:
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body17 + "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights, strict=True)) % 11]


def prompt_1kb() -> str:
    """About 1 KB (UTF-8) of a clinical note in Chinese and English with 8 identifiers."""
    core = (f"患者张伟，男，身份证号{_cn_id('11010519900307457')}，联系电话13812345678，"
            "住址北京市朝阳区建国路88号。主诉：反复咳嗽两周，夜间加重，无发热。"
            "Referred by Dr. Mary Johnson; please email the discharge summary to mary.johnson@example.com "
            "and copy the ward clerk. Billing: card 6222021234567890128, SSN on file 078-05-1120. "
            "既往史：高血压五年，规律服药。过敏史：青霉素过敏。"
            "Plan: chest X-ray, CBC, follow-up in two weeks. 家属李娜陪同就诊，已告知注意事项。")
    text = core
    filler = " The patient was advised to rest, drink fluids and return if symptoms worsen. 请按时复诊。"
    while len((text + filler).encode()) <= 1024:
        text += filler
    return text


def run(rounds: int, per_round: int) -> dict[str, object]:
    text = prompt_1kb()
    gw = Gateway(None, master_key=generate_master_key())

    def bare() -> None:
        (lambda t: "Answer: " + t)(text)

    def detect() -> None:
        find_pii(text)

    with gw.request(request_id="r", caller="k") as req:
        answer = "Answer: " + req.deidentify(text)

    def detect_answer() -> None:
        find_pii(answer)

    def owner() -> None:
        gw.protect(lambda t: "Answer: " + t, text, request_id="r", caller="k", reidentify=True)

    def predictor() -> None:
        gw.protect(lambda t: "Answer: " + t, text, request_id="r", caller="k", reidentify=False)

    variants = {"bare": bare, "find_pii": detect, "find_pii_answer": detect_answer, "gateway": owner,
                "predictor": predictor}
    for fn in variants.values():  # warm-up (regex compilation, lexicons)
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = variants[name]
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    audit = gw.protect(lambda t: "Answer: " + t, text, request_id="r", caller="k").audit
    return {
        "prompt_bytes": len(text.encode()), "entities": sum(audit.input_entities.values()),
        "entity_types": dict(sorted(audit.input_entities.items())), "median_ms": med,
        "added_ms_owner": med["gateway"] - med["bare"], "added_ms_predictor": med["predictor"] - med["bare"],
        "gateway_own_ms": med["gateway"] - med["find_pii"] - med["find_pii_answer"],
        "samples_per_variant": rounds * per_round, "cpus": sorted(os.sched_getaffinity(0)),
        "llm_guard": "not measured (its Anonymize scanner downloads NER/spaCy models at start-up; no hub access)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--cpu", type=int, default=0, help="core to pin to (like taskset -c N)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    res = run(args.rounds, args.per_round)
    if args.json:
        print(json.dumps(res, indent=2, ensure_ascii=False))
        return
    print(f"prompt: {res['prompt_bytes']} bytes, {res['entities']} entities {res['entity_types']}; "
          f"pinned to cpus {res['cpus']}; {res['samples_per_variant']} samples each")
    for name, ms in res["median_ms"].items():  # type: ignore[union-attr]
        print(f"  {name:16} median {ms:8.3f} ms")
    print(f"added latency (gateway - bare): owner {res['added_ms_owner']:.3f} ms, "
          f"predictor {res['added_ms_predictor']:.3f} ms  (issue goal: <= 2 ms)")
    print(f"gateway's own work (gateway - find_pii - find_pii_answer): {res['gateway_own_ms']:.3f} ms")
    print(f"LLM Guard: {res['llm_guard']}")


if __name__ == "__main__":
    main()
