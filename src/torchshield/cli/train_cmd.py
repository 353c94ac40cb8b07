"""`torchshield train CONFIG`: train a model from a YAML file and write a signed .tsb bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from torchshield.cli.output import JSON_OPTION, STATE, emit, err_console, progress

__all__ = ["register", "train"]


def train(config: Path = typer.Argument(..., help="YAML training config (model, data, optimizer, epochs, "
                                                  "output, optional privacy/adversarial/watermark; task: "
                                                  "sequence-classification or causal-lm fine-tunes a Hugging "
                                                  "Face model on text, adapter: lora trains adapters only)."),
          as_json: bool = JSON_OPTION) -> None:
    """Train a model from CONFIG; with a privacy: section, with DP-SGD to that (epsilon, delta)."""
    from torchshield.train.config import load_config
    from torchshield.train.run import train_from_config

    cfg = load_config(config)
    key = None
    if cfg.watermark and cfg.output.key_file is None:  # the mark's key, resolved once here at the edge
        from torchshield.crypto.keys import resolve_master_key

        key = resolve_master_key(required=True)

    def on_epoch(event) -> None:  # noqa: ANN001
        if not as_json and not STATE.quiet:
            eps = f"  epsilon {event.extra['epsilon']:.3f}" if "epsilon" in event.extra else ""
            err_console.print(f"epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}{eps}", highlight=False)

    result = train_from_config(cfg, progress=None if as_json else progress, on_epoch=on_epoch, key=key)

    def human(console) -> None:  # noqa: ANN001
        for msg in result.messages:
            console.print(f"note: {msg}", highlight=False, markup=False)
        m = result.metrics
        console.print(f"wrote {result.bundle}", highlight=False)
        test = f"{m['test']['accuracy']:.4f}" if m["test"] else "n/a (no test split)"
        what = "next-token accuracy" if "perplexity" in (m["train"] or {}) else "accuracy"
        console.print(f"{what}: train {m['train']['accuracy']:.4f}  test {test}")
        if "perplexity" in (m["train"] or {}):
            test_ppl = f"{m['test']['perplexity']:.2f}" if m["test"] else "n/a"
            console.print(f"perplexity: train {m['train']['perplexity']:.2f}  test {test_ppl}")
        if result.privacy:
            p = result.privacy
            console.print(f"privacy: epsilon {p['epsilon']:.4f} (target {p['target_epsilon']}) delta {p['delta']:g} "
                          f"[{p['accountant']}], noise {p['noise_multiplier']:.4f}, sample rate "
                          f"{p['sample_rate']:.4g}, {p['steps']} steps, mode {p['mode']}", highlight=False,
                          markup=False)
            for r in p.get("releases") or []:
                console.print(f"released with DP: {r['what']} = {r['value']} (epsilon {r['epsilon']:g}, included "
                              "above)", highlight=False, markup=False)
            if p.get("insecure_seed_for_tests"):
                console.print(f"WARNING: {p['warning']}", highlight=False, markup=False)

    emit(result.to_dict(), human, as_json=as_json)


def register(root: typer.Typer) -> None:
    root.command("train", help="Train a model from a YAML config and write a signed .tsb bundle; with task: "
                              "fine-tune a Hugging Face model on text (LoRA with adapter:).")(train)
