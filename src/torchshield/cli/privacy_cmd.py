"""`torchshield privacy`: membership-inference audits of trained models, and the budget ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from torchshield.cli.output import JSON_OPTION, emit, fail, progress
from torchshield.crypto.keys import resolve_master_key

__all__ = ["register"]

app = typer.Typer(no_args_is_help=True, help="Privacy: leakage audits and the DP budget ledger.")
ledger_app = typer.Typer(no_args_is_help=True, help="Show and verify the persistent privacy-budget ledger.")
app.add_typer(ledger_app, name="ledger")

LEDGER_OPTION = typer.Option(None, "--ledger", help="Ledger database URL (default: $TORCHSHIELD_LEDGER or "
                                                   "~/.torchshield/privacy-ledger.db).")
LEDGER_KEY_OPTION = typer.Option(None, "--key-file", "-k", help="Master key the ledger's history is chained "
                                                                "under (default $TORCHSHIELD_KEY_FILE / $TORCHSHIELD_KEY).")


@app.command("audit")
def audit(model: Path = typer.Argument(..., help="Trained .tsb bundle (written by 'torchshield train')."),
          members: Path = typer.Option(..., "--members", help="CSV/Parquet rows that were in the training data, "
                                                              "or the very file 'train' read (its split file then "
                                                              "says which rows trained)."),
          non_members: Path = typer.Option(None, "--non-members", help="Rows from the same source NOT trained on "
                                                                       "(default: the training file's held-out rows)."),
          split: Path = typer.Option(None, "--split", help="The split file 'train' wrote (default: "
                                                           "MODEL.split.json beside the bundle, if present)."),
          label: str = typer.Option(None, "--label", help="Label column (default: the one used in training)."),
          shadows: int = typer.Option(4, "--shadows", min=0, help="Shadow models for LiRA (0: no LiRA)."),
          offline: bool = typer.Option(False, "--offline", help="Offline LiRA (OUT shadows only)."),
          key_file: Path = typer.Option(None, "--key-file", help="Master key, if the bundle is encrypted."),
          verify_with: Path = typer.Option(None, "--verify-with", help="Public key the bundle must be signed by."),
          seed: int = typer.Option(0, "--seed", help="Seed for the shadow splits."),
          fail_on_inconsistent: bool = typer.Option(True, help="Exit 1 when the leakage contradicts the claim."),
          as_json: bool = JSON_OPTION) -> None:
    """Measure membership leakage (loss, confidence, LiRA) and compare it with the model's claimed epsilon."""
    from torchshield.privacy.audit import audit_membership
    from torchshield.train.recipe import load_trained, shadow_trainer

    target, manifest = load_trained(model, key=resolve_master_key(key_file=key_file, required=False), verify_with=verify_with)
    (xm, ym), (xn, yn), notes = _audit_rows(model, manifest, members, non_members, split, label)
    claim = manifest.get("privacy") or {}
    with progress("training shadow models", shadows) as advance:
        report = audit_membership(target, (xm, ym), (xn, yn), train_shadow=shadow_trainer(manifest) if shadows else None,
                                  shadows=shadows, offline=offline, claimed_epsilon=claim.get("epsilon"),
                                  claimed_delta=claim.get("delta"), seed=seed, progress=advance)

    def human(console: Any) -> None:
        from rich.table import Table

        table = Table("attack", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "eps lower bound", "seconds")
        for a in report.attacks:
            table.add_row(a.attack, f"{a.auc:.3f}", f"{a.tpr_at_1pct_fpr:.3f}", f"{a.tpr_at_01pct_fpr:.3f}",
                          f"{a.epsilon_lower_bound:.2f}", f"{a.seconds:.1f}")
        console.print(table)
        for note in notes:
            console.print(f"note: {note}", highlight=False, markup=False)
        console.print(report.verdict, highlight=False, markup=False)

    emit({"model": str(model), **report.to_dict(), "rows": notes}, human, as_json=as_json)
    if fail_on_inconsistent and not report.consistent:
        fail(1)


def _audit_rows(model: Path, manifest: dict[str, Any], members: Path, non_members: Path | None, split: Path | None,
                label: str | None) -> tuple[Any, Any, list[str]]:
    """Members and non-members; rows of the training file are labelled by the split ``train`` recorded."""
    from torchshield.errors import InputError
    from torchshield.nn.split import read_split, split_path
    from torchshield.train.recipe import read_rows

    recorded = split or (split_path(model) if split_path(model).is_file() else None)
    doc = read_split(recorded) if recorded is not None else None
    xm, ym = read_rows(members, manifest, label=label)
    notes: list[str] = []
    if doc is not None and doc.describes(members):
        if len(doc.trained) != len(ym):
            raise InputError(f"--split: {recorded} describes {len(doc.trained)} rows, {members} has {len(ym)}")
        mask = _torch_mask(doc.trained)
        notes.append(f"members: the {int(mask.sum())} rows of {members.name} that trained the model ({recorded.name})")
        if non_members is None or non_members.resolve() == members.resolve():
            notes.append(f"non-members: the {int((~mask).sum())} held-out rows of {members.name}")
            return (xm[mask], ym[mask]), (xm[~mask], ym[~mask]), notes
        return (xm[mask], ym[mask]), read_rows(non_members, manifest, label=label), notes
    if non_members is None:
        raise InputError("--non-members is required unless --members is the training file itself and its split "
                         "file is found", hint=f"pass --non-members, or --split {split_path(model).name}")
    if doc is not None:
        notes.append(f"{members.name} is not the file in {recorded.name}: every row of it is taken as a member")
    return (xm, ym), read_rows(non_members, manifest, label=label), notes


def _torch_mask(trained: Any) -> Any:
    import torch

    return torch.from_numpy(trained.copy())


@ledger_app.command("show")
def ledger_show(dataset: str = typer.Argument(None, help="Data file (CSV/Parquet) or data set id; all if omitted."),
                ledger: str = LEDGER_OPTION, key_file: Path = LEDGER_KEY_OPTION,
                as_json: bool = JSON_OPTION) -> None:
    """Budgets, spend, and every charge: who, when, what, how much."""
    from torchshield.privacy.ledger import Ledger

    book = Ledger(ledger, key=resolve_master_key(key_file=key_file))
    ids = [(_dataset_id(dataset, book), "")] if dataset else book.dataset_ids()
    doc = []
    for dataset_id, name in ids:
        b = book.budget(dataset_id)
        doc.append({"dataset_id": dataset_id, "name": name,
                    "budget": {"epsilon": b.epsilon, "delta": b.delta},
                    "spent": {"epsilon": b.spent_epsilon, "delta": b.spent_delta},
                    "remaining": {"epsilon": b.remaining_epsilon, "delta": b.remaining_delta},
                    "entries": [e.to_dict() for e in book.entries_for(dataset_id)]})

    def human(console: Any) -> None:
        from rich.table import Table

        for d in doc:
            console.print(f"data set {d['dataset_id'][:16]} {d['name']}: spent epsilon {d['spent']['epsilon']:g} of "
                          f"{d['budget']['epsilon']:g}, delta {d['spent']['delta']:g} of {d['budget']['delta']:g}",
                          highlight=False, markup=False)
            table = Table("#", "when (UTC)", "who", "query", "mechanism", "epsilon", "delta", "status")
            for e in d["entries"]:
                q = e["plan"]
                what = " ".join(str(q[k]) for k in ("query", "column", "q") if k in q)
                table.add_row(str(e["seq"]), e["ts"][:19], e["actor"], what, e["mechanism"], f"{e['epsilon']:g}",
                              f"{e['delta']:g}", e["status"])
            console.print(table)

    emit(doc, human, as_json=as_json)


@ledger_app.command("verify")
def ledger_verify(ledger: str = LEDGER_OPTION, key_file: Path = LEDGER_KEY_OPTION,
                  as_json: bool = JSON_OPTION) -> None:
    """Check every data set's hash chain; exit 1 if history was edited or removed."""
    from torchshield.privacy.ledger import Ledger

    book = Ledger(ledger, key=resolve_master_key(key_file=key_file))
    problems = {d: book.verify(d) for d, _ in book.dataset_ids()}
    bad = {d: p for d, p in problems.items() if p}
    emit({"ok": not bad, "datasets": len(problems), "problems": bad},
         lambda c: c.print("ledger intact" if not bad else f"ledger damaged: {bad}", markup=False), as_json=as_json)
    if bad:
        fail(1)


def _dataset_id(dataset: str, book: Any) -> str:
    p = Path(dataset)
    if p.is_file():
        from torchshield.data.tabular.io import read_table
        from torchshield.privacy.queries import fingerprint

        return fingerprint(read_table(p, typed=True))
    matches = [d for d, _ in book.dataset_ids() if d.startswith(dataset)]
    if len(matches) != 1:
        from torchshield.errors import InputError

        raise InputError(f"no single data set matches {dataset!r} in the ledger",
                         hint="give the data file or a longer id prefix")
    return matches[0]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="privacy", help="Privacy: leakage audits and the DP budget ledger.")
