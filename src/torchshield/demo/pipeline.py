"""The demo's pipeline: the life of one model, step by step, on generated data.

Each step is a small function ``(DemoState) -> summary``. A step whose capability is missing
raises StepSkipped with the reason; a step that fails is recorded and the pipeline goes on,
so the report still shows everything that did run. Steps that need a failed step's output skip
themselves (``DemoState.need``)."""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from torchshield.demo import data_steps, model_steps, ops_steps
from torchshield.demo.state import DemoState, StepResult, StepSkipped
from torchshield.errors import InputError

if TYPE_CHECKING:
    from torchshield.nn.loop import ProgressFactory

__all__ = ["MARKER", "STEPS", "run_demo"]

MARKER = ".torchshield-demo"

Step = Callable[[DemoState], str]
STEPS: tuple[tuple[str, str, Step], ...] = (
    ("generate", "Generate a synthetic patient table (Chinese + English PII)", data_steps.generate),
    ("mask", "Scan for PII and mask it", data_steps.scan_and_mask),
    ("kanon", "k-anonymise and split train/test", data_steps.kanon),
    ("train", "Train a non-private and a DP model", model_steps.train),
    ("membership", "Membership-inference audit of both", model_steps.membership_audit),
    ("harden", "Evaluate robustness and harden (PGD adversarial training)", model_steps.harden),
    ("watermark", "Watermark the model", model_steps.watermark),
    ("protect", "Encrypt and sign the bundle", model_steps.protect),
    ("serve", "Serve on loopback: allowed and refused calls", ops_steps.serve),
    ("audit", "Verify the audit chain", ops_steps.audit_chain),
    ("backup", "Back up and restore the artifacts", ops_steps.backup_restore),
    ("report", "Write the assessment report", ops_steps.report),
)


def _prepare(out: Path) -> None:
    """The demo writes into an empty folder, or replaces an earlier demo's output (marked)."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise InputError(
                f"--out: {out} is not empty and was not made by the demo",
                hint="choose a new folder; the demo replaces only its own earlier output",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("output of `torchshield demo`; the next run replaces this folder\n")


def _run_step(state: DemoState, step_id: str, title: str, fn: Step) -> StepResult:
    t0 = time.perf_counter()
    try:
        summary, status = fn(state), "ok"
    except StepSkipped as exc:
        summary, status = str(exc), "skipped"
    except Exception as exc:  # noqa: BLE001 - a failed step is reported, the rest of the life goes on
        summary, status = f"{type(exc).__name__}: {exc}", "failed"
        state.facts.setdefault("tracebacks", {})[step_id] = traceback.format_exc(limit=6)
    return StepResult(step_id, title, status, summary, time.perf_counter() - t0)


def run_demo(
    out: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: ProgressFactory | None = None,
    on_start: Callable[[int, str], None] | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> DemoState:
    import torch

    # Absolute from here on: the training configs the demo writes resolve their paths against
    # their own folder, so a relative --out (make demo's "demo-output") would be doubled.
    out = Path(out).resolve()
    _prepare(out)
    state = DemoState(out=out, quick=quick, seed=seed, progress=progress)
    t0 = time.perf_counter()
    # The demo's models are small MLPs: intra-op threads only add synchronisation cost (badly so
    # on a busy 2-core machine), so run single-threaded and restore the setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (step_id, title, fn) in enumerate(STEPS):
            if on_start is not None:
                on_start(i, title)
            result = _run_step(state, step_id, title, fn)
            state.results.append(result)
            if on_step is not None:
                on_step(result)
    finally:
        torch.set_num_threads(threads)
        for cleanup in state.cleanups:
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - shutting down; the results are what matter
                state.facts.setdefault("cleanup_errors", []).append(f"{type(exc).__name__}: {exc}")
    state.facts["seconds"] = round(time.perf_counter() - t0, 1)
    _finish(state)
    return state


def _finish(state: DemoState) -> None:
    """Write summary.json, and put the step table into the report (which ran before the end)."""
    from torchshield.assess import write_report

    steps = [r.to_dict() for r in state.results]
    facts = {k: v for k, v in state.facts.items() if k != "tracebacks"}
    summary = {
        "quick": state.quick,
        "seconds": state.facts["seconds"],
        "steps": steps,
        "facts": facts,
        "files": {
            k: str(v.relative_to(state.out)) for k, v in state.files.items() if v.is_relative_to(state.out)
        },
    }
    (state.out / "summary.json").write_text(
        json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n"
    )
    report = state.live.get("report")
    if report is not None:
        report.extra["demo"] = {"quick": state.quick, "seconds": state.facts["seconds"], "steps": steps}
        write_report(report, state.out / "report")
