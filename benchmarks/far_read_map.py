"""Issue 28's far-read map: when does a trained model read the far operand?

A research script (not in the wheel). The runs are ordinary ``posgen sweep`` runs of the
grids ``grids/far-read-*.toml`` (``make far-read``), trained with ``probe_every = 1`` so that
every epoch's log holds the far-reliance of the weights of that epoch on the probe split.
This script reads the finished run folders through posgen's checked reader
(:func:`posgen.train.run_record.read_run`) and

* upserts one JSON line per run into ``docs/search/runs.jsonl`` (key ``run``: the sweep's run
  hash; the issue-17 lines already there are kept), with the training settings, the test and
  probe figures and the per-epoch history;
* renders the map (one line per setting) and the far-reliance curve of the best setting
  between the ``<!-- far-read map -->`` markers of ``docs/validity.md``.

    python -m benchmarks.far_read_map runs/far-read runs/far-read-qperm ...

Every figure in the map is read from a line of the log, and every line names its run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "docs" / "search" / "runs.jsonl"
DOC = ROOT / "docs" / "validity.md"
SUMMARY = ROOT / "posgen" / "card" / "far_read.json"
BEGIN, END = "<!-- far-read map -->\n", "<!-- end far-read map -->"
PASSES = 0.2
"""The far-reliance whose first crossing (ID, per epoch) the map reports."""
READS = 0.5
"""The issue's bar: a setting whose ID far-reliance reaches it reads the far operand."""


def record_line(folder: Path) -> dict[str, Any]:
    """The log line of one finished run folder (``results.json`` + ``metrics.jsonl``)."""
    from posgen.train import METRICS
    from posgen.train.run_record import read_run

    record = read_run(folder)
    history = []
    for text in (folder / METRICS).read_text().splitlines():
        epoch = json.loads(text)
        history.append(
            {
                "epoch": epoch["epoch"],
                "loss": epoch["train_loss"],
                "val_id": epoch.get("val_id_accuracy"),
                "far_id": epoch.get("far_reliance_id"),
                "far_ood": epoch.get("far_reliance_ood"),
                "seconds": epoch["seconds"],
            }
        )
    spec, train, probe = record.spec, record.train, record.probe_scores
    passes = next((h["epoch"] for h in history if (h["far_id"] or 0) > PASSES), None)
    return {
        "run": folder.name,
        "folder": _relative(folder),
        "name": f"map-{Path(record.data.folder).name}-{record.data.config}"
        + ("-qids" if train.question_ids else "")
        + f"-wd{train.weight_decay:g}-lr{train.lr:g}-e{train.epochs}-s{record.seed}",
        "issue": 28,
        "finished": True,
        "spec_id": spec.spec_id,
        "dataset": Path(record.data.folder).name,
        "config": record.data.config,
        "op": spec.op,
        "m": spec.modulus,
        "k": spec.near,
        "j": spec.far,
        "pe": record.position_encoding.label,
        "seed": record.seed,
        "train": train.model_dump(mode="json"),
        "epochs": train.epochs,
        "best_epoch": record.best_epoch,
        "train_seconds": record.train_seconds,
        "accuracy": {"id": record.scores.id.accuracy, "ood": record.scores.ood.accuracy},
        "reliance": {
            part: {
                "far": getattr(probe, part).far_reliance,
                "local": getattr(probe, part).local_reliance,
                "counted": getattr(probe, part).counted,
            }
            for part in ("id", "ood")
        }
        if probe is not None
        else None,
        "first_epoch_far_id_over_0.2": passes,
        "max_far_id": max((h["far_id"] or 0.0 for h in history), default=None),
        "history": history,
    }


def unfinished_line(sweep: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The log line of a run of ``sweep`` stopped before its end (``finished: false``): its
    settings from ``sweep.json`` and its epochs from the checkpoint's log; test and probe
    figures exist only for finished runs. None when it has no checkpoint."""
    checkpoint = sweep / "work" / run["job"] / "checkpoint.pt"
    if not checkpoint.is_file():
        return None
    import io

    import torch

    # a checkpoint of the posgen that wrote it: the first torch.save'd object in the file
    saved = torch.load(io.BytesIO(checkpoint.read_bytes()), weights_only=False, map_location="cpu")
    log = json.loads(saved["position"]["log"])
    label, train = run["pe"], run["train"]
    history = [
        {
            "epoch": epoch["epoch"],
            "loss": epoch["train_loss"],
            "val_id": epoch.get(f"val_id_accuracy/{label}"),
            "far_id": epoch.get(f"far_reliance_id/{label}"),
            "far_ood": epoch.get(f"far_reliance_ood/{label}"),
            "seconds": epoch["seconds"],
        }
        for epoch in log
    ]
    passes = next((h["epoch"] for h in history if (h["far_id"] or 0) > PASSES), None)
    return {
        "run": run["key"],
        "folder": _relative(checkpoint.parent),
        "finished": False,
        "name": f"map-{run['dataset']}-{run['config']}"
        + ("-qids" if train.get("question_ids") else "")
        + f"-wd{train['weight_decay']:g}-lr{train['lr']:g}-e{train['epochs']}-s{run['seed']}",
        "issue": 28,
        "spec_id": run["spec_id"],
        "dataset": run["dataset"],
        "config": run["config"],
        "pe": label,
        "seed": run["seed"],
        "train": train,
        "epochs": train["epochs"],
        "epochs_done": len(history),
        "train_seconds": log[-1]["train_seconds"] if log else None,
        "accuracy": None,
        "reliance": None,
        "first_epoch_far_id_over_0.2": passes,
        "max_far_id": max((h["far_id"] or 0.0 for h in history), default=None),
        "history": history,
    }


def _relative(folder: Path) -> str:
    """``folder`` relative to the repository when inside it (``runs/far-read/runs/<hash>``)."""
    try:
        return str(folder.resolve().relative_to(ROOT))
    except ValueError:
        return str(folder)


def upsert(lines: list[dict[str, Any]], log: Path) -> list[dict[str, Any]]:
    """The log with ``lines`` replacing earlier lines of the same run (others kept, in order)."""
    text = log.read_text() if log.exists() else ""
    old = [json.loads(line) for line in text.splitlines() if line]
    new = {line["run"]: line for line in lines}
    kept = [line for line in old if line.get("run") not in new]
    return kept + sorted(new.values(), key=lambda line: line["name"])


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def render(records: list[dict[str, Any]]) -> str:
    """The map (issue-28 lines of the log) and the best setting's curve, as Markdown."""
    runs = [r for r in records if r.get("issue") == 28]
    head = (
        "| setting | data (task) | question ids | wd | lr | epochs | seed | ID acc | OOD acc "
        "| far-rel ID | far-rel OOD | kept unaltered ID | kept unaltered OOD "
        "| max far-rel ID (epoch) | first epoch far-rel ID > 0.2 | train min | run |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        tr, rel, acc = r["train"], r["reliance"] or {}, r["accuracy"] or {}
        best = max(r["history"], key=lambda h: h["far_id"] or 0.0)
        cells = [
            r["name"],
            f"{r['dataset']} ({r['config']})",
            "yes" if tr["question_ids"] else "no",
            f"{tr['weight_decay']:g}",
            f"{tr['lr']:g}",
            r["epochs"]
            if r.get("finished", True)
            else f"{r['epochs_done']} of {r['epochs']} (stopped)",
            r["seed"],
            acc.get("id"),
            acc.get("ood"),
            rel.get("id", {}).get("far"),
            rel.get("ood", {}).get("far"),
            rel.get("id", {}).get("local"),
            rel.get("ood", {}).get("local"),
            f"{_f(best['far_id'])} ({best['epoch']})",
            r["first_epoch_far_id_over_0.2"] or "never",
            f"{(r['train_seconds'] or 0) / 60:.0f}",
            f"`{r['run']}`",
        ]
        lines.append("| " + " | ".join(_f(c) for c in cells) + " |")
    if not runs:
        return "\n".join(lines) + "\n"
    finished = [r for r in runs if r.get("finished", True)] or runs
    top = max(finished, key=lambda r: (r["reliance"] or {}).get("id", {}).get("far") or 0.0)
    lines += [
        "",
        "Far-reliance ID per epoch of every setting (the weights of that epoch on the probe "
        f"split; chance is about 1/m). Highest kept far-reliance: `{top['name']}`.",
        "",
        "| epoch | " + " | ".join(r["name"].removeprefix("map-") for r in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for epoch in range(1, max(len(r["history"]) for r in runs) + 1):
        cells = [epoch] + [
            r["history"][epoch - 1]["far_id"] if epoch <= len(r["history"]) else None for r in runs
        ]
        lines.append("| " + " | ".join(_f(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the cards say of the search (:func:`posgen.card.far_read_sentence`)."""
    runs = [r for r in records if r.get("issue") == 28]
    if not runs:
        return {"runs": 0}
    top = max(runs, key=lambda r: r["max_far_id"] or 0.0)
    return {
        "runs": len(runs),
        "tasks": sorted(
            {
                f"{r['dataset']}/{r['config']}"
                + (" (question ids)" if r["train"]["question_ids"] else "")
                for r in runs
            }
        ),
        "layers": sorted({r["train"]["layers"] for r in runs}),
        "hidden": sorted({r["train"]["hidden"] for r in runs}),
        "weight_decays": sorted({r["train"]["weight_decay"] for r in runs}),
        "lrs": sorted({r["train"]["lr"] for r in runs}),
        "max_epochs": max(r["epochs"] for r in runs),
        "max_far_id": top["max_far_id"],
        "max_far_id_run": top["name"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweeps", nargs="*", type=Path, help="sweep folders (their runs/)")
    parser.add_argument("--log", type=Path, default=LOG)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--summary", type=Path, default=SUMMARY)
    args = parser.parse_args(argv)
    from posgen.train import is_run

    folders = sorted(
        run for sweep in args.sweeps for run in (sweep / "runs").glob("*") if is_run(run)
    )
    lines = [record_line(folder) for folder in folders]
    done = {line["run"] for line in lines}
    for sweep in args.sweeps:
        for run in json.loads((sweep / "sweep.json").read_text())["runs"]:
            if run["key"] not in done and (line := unfinished_line(sweep, run)) is not None:
                lines.append(line)
    records = upsert(lines, args.log)
    args.log.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    doc = args.doc.read_text()
    if BEGIN not in doc or END not in doc:
        print(f"error: {args.doc} has no {BEGIN.strip()} ... {END} markers", file=sys.stderr)
        return 2
    before, rest = doc.split(BEGIN, 1)
    args.doc.write_text(before + BEGIN + render(records) + END + rest.split(END, 1)[1])
    text = json.dumps(summary(records), indent=1, sort_keys=True) + "\n"
    args.summary.write_text(text)
    print(f"{len(folders)} runs -> {args.log}, map in {args.doc}, summary in {args.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
