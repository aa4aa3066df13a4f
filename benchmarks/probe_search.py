"""Search for a spec whose long-range tasks make a trained model read the far operand.

A research script (not in the wheel), run one candidate at a time:

    python -m benchmarks.probe_search --list
    python -m benchmarks.probe_search qperm-cot v1-cot ...     # or `make search`

Each candidate is a spec TOML and a config (task) in it, a training setup and a seed. The
script generates the data with ``posgen generate`` (once, into ``out/search``), trains a
stock Llama with posgen's own trainer pieces (:mod:`posgen.train.trainer`: ``build_model``,
``lm_tensors``, ``optimizer_and_schedule``, ``epoch_order``, ``predict``; the final
weights are kept, no checkpoint selection), then scores the test split and a
counterfactual probe of it (the definitions of issue 16):

* probe rows: test rows whose far operands are replaced by other tokens, nothing after them
  recomputed. cot: the question x_0 .. x_{j-1}, every token shifted by a random non-zero
  amount mod m. Other tasks: single tokens x_q every ``2(k+1)`` positions (random phase per
  row); a target is probed when one of its far operands was replaced, none of its near
  operands was, and it was not replaced itself.
* far-rule answer: h of the operands as stored in the probe row; local answer: the
  unaltered token. far-reliance = share of probed targets (where the two differ) whose
  argmax prediction is the far-rule answer; local-reliance = share equal to the local
  answer. ID positions [w, L) and OOD [L, L') separately, with per-position buckets.

For cot the script also reports the question-consistency look-back (issue 16's audit, a
research version): per target, the smallest D such that every question consistent with
the transitions visible in x_{t-D} .. x_{t-1} gives the same x_t.

Every run appends one JSON line to ``docs/search/runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "out" / "search"
LOG = ROOT / "docs" / "search" / "runs.jsonl"

MODEL = {"hidden": 128, "heads": 4, "intermediate": 512}
"""The search's model: the cpu preset's 2 layers at hidden 128 (the issue's size)."""


@dataclass(frozen=True)
class Candidate:
    """One search run: data (spec file, config), training overrides, seed, input tagging.

    ``tag``: "" (the standard LM inputs), "value" (the question tokens x_0 .. x_{j-1} get
    ids m + 1 + x: content-addressable) or "slot" (ids m + 1 + i m + x: also their slot i).
    """

    spec: str
    config: str
    epochs: int = 4
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 5549
    tag: str = ""
    note: str = ""


V1, V2 = "task_specs/posgen-v1.toml", "task_specs/posgen-v2.toml"
QPERM = "task_specs/posgen-v3-candidate-qperm.toml"
QPERM_J2 = "task_specs/posgen-v3-candidate-qperm-j2.toml"
SLOT = "task_specs/posgen-v3-candidate-slotperm.toml"
SELECT = "task_specs/posgen-v3-candidate-select.toml"

CANDIDATES: dict[str, Candidate] = {
    "v1-cot": Candidate(V1, "cot", 2, note="official posgen-v1"),
    "v1-semirecursive": Candidate(V1, "semirecursive", 2, note="official posgen-v1"),
    "v2-cot": Candidate(V2, "cot", 3, note="official posgen-v2"),
    "v2-semirecursive": Candidate(V2, "semirecursive", 3, note="official posgen-v2"),
    "qperm-cot": Candidate(QPERM, "cot", 4, note="far_perm m17 k3 j1"),
    "qperm-cot-tag": Candidate(
        QPERM, "cot", 4, tag="value", note="far_perm, question tokens get their own ids"
    ),
    "qperm-cot-long": Candidate(QPERM, "cot", 10, note="far_perm, 10 epochs"),
    "qperm-cot-tag-long": Candidate(
        QPERM, "cot", 10, tag="value", note="far_perm, question ids of its own, 10 epochs"
    ),
    "qperm-cot-tag-4l": Candidate(
        QPERM,
        "cot",
        4,
        overrides={"layers": 4},
        tag="value",
        note="far_perm, question ids of its own, 4 layers",
    ),
    "qperm-cot-tag-seed2": Candidate(
        QPERM, "cot", 4, seed=4955, tag="value", note="far_perm, question ids, 2nd seed"
    ),
    "qperm-cot-big": Candidate(
        QPERM,
        "cot",
        4,
        overrides={"layers": 4, "hidden": 256, "heads": 8, "intermediate": 1024},
        note="far_perm, 4 layers hidden 256",
    ),
    "qperm-j2-cot": Candidate(QPERM_J2, "cot", 4, note="far_perm m17 k3 j2"),
    "qperm-semirecursive": Candidate(QPERM, "semirecursive", 4, note="far_perm m17 k3 j1"),
    "slotperm-cot": Candidate(SLOT, "cot", 4, note="slot_perm m17 k3 j3"),
    "slotperm-cot-tag": Candidate(
        SLOT, "cot", 4, tag="slot", note="slot_perm, question tokens get slot-specific ids"
    ),
    "slotperm-semirecursive": Candidate(SLOT, "semirecursive", 4, note="slot_perm m17 k3 j3"),
    "select-cot-tag": Candidate(
        SELECT, "cot", 4, tag="slot", note="select_perm m17 k3 j16, slot-specific question ids"
    ),
    "select-cot-tag-long": Candidate(
        SELECT, "cot", 8, tag="slot", note="select_perm j16, slot-specific question ids, 8 epochs"
    ),
}


# --- data --------------------------------------------------------------------------------
def dataset(candidate: Candidate) -> Path:
    """The candidate's data folder, generated with ``posgen generate`` when missing or when
    this posgen no longer reads it."""
    from posgen.store.manifest import DamagedDataset, read_manifest

    out = DATA / f"{Path(candidate.spec).stem}-{candidate.config}"
    try:
        read_manifest(out)
        current = True
    except (FileNotFoundError, DamagedDataset):  # missing, or written by an older posgen
        current = False
    if not current:
        cmd = [sys.executable, "-m", "posgen", "generate", "--spec", str(ROOT / candidate.spec),
               "--task", candidate.config, "--out", str(out), "--overwrite", "-q"]  # fmt: skip
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out


# --- probe -------------------------------------------------------------------------------
def probe_rows(spec: Any, tokens: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Counterfactual probe of ``tokens`` (issue 16): altered rows, probed mask, answers.

    Returns ``rows`` (altered copy), ``probed`` (bool, ``(rows, L' - w)``: targets whose far
    operands were altered and near operands not), ``far`` (far-rule answers, recomputed
    from the altered rows) and ``local`` (the unaltered targets).
    """
    from posgen.generator import expected_targets
    from posgen.tasks import dependency_matrix

    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9E0BE]))
    m, w, k, j = spec.modulus, spec.window, spec.near, spec.far
    n, length = tokens.shape
    rows = tokens.astype(np.int64).copy()
    altered = np.zeros((n, length), dtype=bool)
    if spec.task == "cot":
        altered[:, :j] = True
    else:
        spacing = 2 * (k + 1)
        phase = rng.integers(0, spacing, size=n)
        altered[:] = (np.arange(length)[None, :] - phase[:, None]) % spacing == 0
    shift = rng.integers(1, m, size=(n, length))
    rows[altered] = (rows[altered] + shift[altered]) % m
    deps = dependency_matrix(spec.task, length, k, j)  # (L' - w, w): far, then near
    far_hit = altered[:, deps[:, :j]].any(axis=2)
    near_hit = altered[:, deps[:, j:]].any(axis=2)
    probed = far_hit & ~near_hit & ~altered[:, w:]
    return {
        "rows": rows,
        "probed": probed,
        "far": expected_targets(spec, rows).astype(np.int64),
        "local": tokens[:, w:].astype(np.int64),
    }


def buckets(spec: Any) -> dict[str, tuple[int, int]]:
    """Position ranges reported: the first target, early ID, late ID, ID, OOD."""
    w, L, Lp = spec.window, spec.train_length, spec.test_lengths[0]
    return {"t=w": (w, w + 1), "w<t<w+8": (w + 1, w + 8), "w+8<=t<L": (w + 8, L),
            "id": (w, L), "ood": (L, Lp)}  # fmt: skip


def reliance(spec: Any, probe: dict[str, np.ndarray], predicted: np.ndarray) -> dict[str, Any]:
    """far-/local-reliance per bucket on probed targets where the two answers differ."""
    w = spec.window
    pred = predicted[:, w:]
    differ = probe["probed"] & (probe["far"] != probe["local"])
    out: dict[str, Any] = {}
    for name, (lo, hi) in buckets(spec).items():
        mask = differ[:, lo - w : hi - w]
        count = int(mask.sum())
        p = pred[:, lo - w : hi - w][mask]
        out[name] = {
            "probed": count,
            "far": float((p == probe["far"][:, lo - w : hi - w][mask]).mean()) if count else None,
            "local": float((p == probe["local"][:, lo - w : hi - w][mask]).mean())
            if count
            else None,
        }
    return out


def accuracy(spec: Any, tokens: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Teacher-forced accuracy per bucket, plus ID accuracy where the far start moved."""
    from posgen.tasks import far_start

    w = spec.window
    right = predicted[:, w:] == tokens[:, w:]
    out: dict[str, Any] = {
        name: float(right[:, lo - w : hi - w].mean()) for name, (lo, hi) in buckets(spec).items()
    }
    if spec.far and spec.task != "cot":
        t = np.arange(w, tokens.shape[1])
        starts = far_start(spec.task, t, spec.near, spec.far)
        moved = np.concatenate([[True], starts[1:] != starts[:-1]])
        id_pos = t < spec.train_length
        out["id_far_moved"] = float(right[:, moved & id_pos].mean())
        out["id_far_kept"] = float(right[:, ~moved & id_pos].mean())
    return out


def question_lookback(spec: Any, tokens: np.ndarray, max_questions: int = 5000) -> Any:
    """cot's question-consistency look-back D per target, summarised (None if too big).

    D(t) = smallest D >= k such that every question q consistent with every transition
    x_s = h(q, x_{s-k} .. x_{s-1}) with s in [max(w, t - D + k), t) gives the same
    h(q, x_{t-k} .. x_{t-1}); D = t when even all earlier transitions leave it open
    (then only reading the question decides x_t).
    """
    from posgen.tasks import get_op

    m, w, k, j = spec.modulus, spec.window, spec.near, spec.far
    if spec.task != "cot" or m**j > max_questions or j == 0:
        return None
    op = get_op(spec.op)
    questions = np.array(np.unravel_index(np.arange(m**j), (m,) * j))  # (j, Q)
    q_count = questions.shape[1]
    length = tokens.shape[1]
    positions = length - w
    found = np.empty((tokens.shape[0], positions), dtype=np.int64)
    for r, row in enumerate(tokens.astype(np.int64)):
        near = np.stack([row[w - k + i : w - k + i + positions] for i in range(k)])  # (k, P)
        operands = np.concatenate(
            [
                np.repeat(questions[:, :, None], positions, axis=2),
                np.broadcast_to(near[:, None, :], (k, q_count, positions)),
            ]
        ).reshape(j + k, -1)
        answer = op.apply(operands, m, spec.op_key, far=j).reshape(q_count, positions)
        consistent = answer == row[w:][None, :]
        for p in range(positions):
            alive = np.ones(q_count, dtype=bool)
            depth = w + p  # t: nothing visible decides it
            for s in range(p, -1, -1):  # s = p: no transition yet (D = k)
                values = answer[alive, p]
                if values.size and (values == values[0]).all():
                    depth = k + (p - s)
                    break
                if s > 0:
                    alive &= consistent[:, s - 1]
            found[r, p] = depth
    t = np.arange(w, length)
    summary: dict[str, Any] = {}
    for name, mask in (("id", t < spec.train_length), ("ood", t >= spec.train_length)):
        d = found[:, mask]
        summary[name] = {
            "share_le_k+2": float((d <= k + 2).mean()),
            "median": float(np.median(d)),
            "p90": float(np.percentile(d, 90)),
            "share_needs_question": float((d == t[mask][None, :]).mean()),
        }
    return summary


# --- training ----------------------------------------------------------------------------
def tag_vocab(spec: Any, tag: str) -> int:
    """Embedding rows the inputs need with ``tag``."""
    return spec.modulus + 1 + {"": 0, "value": spec.modulus, "slot": spec.far * spec.modulus}[tag]


def tagged(ids: Any, spec: Any, tag: str) -> Any:
    """Input ids with the question tokens x_0 .. x_{j-1} given their own ids (see Candidate)."""
    if not tag:
        return ids
    out = ids.clone()
    for i in range(spec.far):
        out[:, 1 + i] += spec.modulus + 1 + (i * spec.modulus if tag == "slot" else 0)
    return out


def run(name: str, candidate: Candidate) -> dict[str, Any]:
    """Generate, train, probe and score one candidate; returns its log record."""
    import torch

    from posgen.train.config import preset
    from posgen.train.trainer import (
        RunData,
        build_model,
        epoch_order,
        lm_tensors,
        optimizer_and_schedule,
        predict,
    )

    torch.set_num_threads(1)
    data = dataset(candidate)
    run_data = RunData.load(data, candidate.config)
    spec = run_data.train.spec
    config = preset("cpu", epochs=candidate.epochs, **{**MODEL, **candidate.overrides})
    started = time.perf_counter()
    model = build_model(config, run_data.train, "rope", candidate.seed)
    if candidate.tag:
        model.resize_token_embeddings(tag_vocab(spec, candidate.tag), mean_resizing=False)
    device = torch.device("cpu")
    train = lm_tensors(run_data.train)
    val_ids = lm_tensors(run_data.validation)["input_ids"]
    train["input_ids"] = tagged(train["input_ids"], spec, candidate.tag)
    val_ids = tagged(val_ids, spec, candidate.tag)
    rows = train["input_ids"].shape[0]
    total = math.ceil(rows / config.batch_size) * config.epochs
    total = min(total, config.max_steps or total)  # smoke runs: overrides={"max_steps": n}
    optimizer, schedule = optimizer_and_schedule(model, config, total)
    model.train()
    history = []
    for epoch, order in enumerate(epoch_order(rows, config.epochs, candidate.seed), 1):
        losses = []
        for start in range(0, rows, config.batch_size):
            if schedule.last_epoch >= total:
                break
            batch = order[start : start + config.batch_size]
            loss = model(input_ids=train["input_ids"][batch], labels=train["labels"][batch]).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        val = predict(model, val_ids, config.eval_batch_size, device, spec.modulus)
        w = spec.window
        val_acc = float((val[:, w:] == run_data.validation.tokens[:, w:]).mean())
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_id": val_acc,
                        "seconds": round(time.perf_counter() - started, 1)})  # fmt: skip
        print(f"[{name}] epoch {epoch}: loss {history[-1]['loss']:.3f} val ID {val_acc:.3f} "
              f"({history[-1]['seconds']} s)", flush=True)  # fmt: skip
    train_seconds = time.perf_counter() - started
    tokens = run_data.test.tokens.astype(np.int64)
    test_ids = lm_tensors(run_data.test)["input_ids"]
    probe = probe_rows(spec, tokens, candidate.seed)
    probe_ids = torch.from_numpy(
        np.concatenate([np.full((tokens.shape[0], 1), spec.modulus), probe["rows"]], axis=1)
    )
    test_ids, probe_ids = (
        tagged(test_ids, spec, candidate.tag),
        tagged(probe_ids, spec, candidate.tag),
    )
    predicted = predict(model, test_ids, config.eval_batch_size, device, spec.modulus)
    probe_pred = predict(model, probe_ids, config.eval_batch_size, device, spec.modulus)
    saved = DATA / "predictions" / f"{name}.npz"  # to rescore without retraining
    saved.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(saved, test=predicted, probe=probe_pred, probe_rows=probe["rows"])
    record = {
        "name": name,
        "spec": candidate.spec,
        "spec_id": spec.spec_id,
        "config": candidate.config,
        "task": spec.task,
        "op": spec.op,
        "m": spec.modulus,
        "k": spec.near,
        "j": spec.far,
        "L": spec.train_length,
        "L_test": spec.test_lengths[0],
        "pe": "rope",
        "tag": candidate.tag,
        "train": {k: v for k, v in config.model_dump().items() if k != "seeds"},
        "seed": candidate.seed,
        "epochs": candidate.epochs,
        "parameters": model.num_parameters(),
        "train_seconds": round(train_seconds, 1),
        "history": history,
        "accuracy": accuracy(spec, tokens, predicted),
        "reliance": reliance(spec, probe, probe_pred),
        "lookback": question_lookback(spec, tokens[:100]),
        "note": candidate.note,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return record


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def table(records: list[dict[str, Any]]) -> str:
    """The runs as a Markdown table, one line per run, in log order."""
    head = ("| run | spec (task) | op, m, k, j | model | epochs | seed | train s | ID acc "
            "| OOD acc | far-rel ID | far-rel OOD | local-rel ID | local-rel OOD | far-rel t=w "
            "| ID acc t=w | ID acc far moved / kept "
            "| look-back ID: share <= k+2, median |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        acc, rel, tr, lb = r["accuracy"], r["reliance"], r["train"], r.get("lookback")
        tag = r.get("tag", "value" if r.get("tag_question") else "")
        model = f"{tr['layers']}L h{tr['hidden']}" + (f" +{tag} tag" if tag else "")
        moved = (
            f"{acc['id_far_moved']:.3f} / {acc['id_far_kept']:.3f}"
            if "id_far_moved" in acc
            else "n/a"
        )
        look = "n/a" if not lb else f"{lb['id']['share_le_k+2']:.2f}, {lb['id']['median']:.0f}"
        cells = [r["name"], f"{Path(r['spec']).stem} ({r['config']})",
                 f"{r['op']}, {r['m']}, {r['k']}, {r['j']}", model, r["epochs"], r["seed"],
                 f"{r['train_seconds']:.0f}", acc["id"], acc["ood"], rel["id"]["far"],
                 rel["ood"]["far"], rel["id"]["local"], rel["ood"]["local"], rel["t=w"]["far"],
                 acc["t=w"], moved, look]  # fmt: skip
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="candidates to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the candidates")
    parser.add_argument("--log", type=Path, default=LOG, help="JSON-lines file to append to")
    parser.add_argument("--table", type=Path, help="print the runs of this log as a table")
    parser.add_argument("--out", type=Path, help="with --table: replace the table in this file")
    args = parser.parse_args(argv)
    if args.table:
        records = [json.loads(line) for line in args.table.read_text().splitlines() if line]
        # the far-read map (benchmarks.far_read_map) logs its runs here too, with no spec
        text = table([r for r in records if "spec" in r])
        if args.out is None:
            sys.stdout.write(text)
            return 0
        doc = args.out.read_text()
        begin, end = "<!-- search table -->\n", "<!-- end search table -->"
        if begin not in doc or end not in doc:
            print(f"error: {args.out} has no {begin.strip()} ... {end} markers", file=sys.stderr)
            return 2
        before, rest = doc.split(begin, 1)
        after = rest.split(end, 1)[1]
        args.out.write_text(before + begin + text + end + after)
        return 0
    if args.list:
        for name, c in CANDIDATES.items():
            print(f"{name:24} {c.spec} [{c.config}] epochs {c.epochs} {c.note}")
        return 0
    unknown = [n for n in args.names if n not in CANDIDATES]
    if unknown:
        print(f"error: unknown candidate(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    for name in args.names or list(CANDIDATES):
        record = run(name, CANDIDATES[name])
        args.log.parent.mkdir(parents=True, exist_ok=True)
        with args.log.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        acc, rel = record["accuracy"], record["reliance"]
        print(f"[{name}] ID {acc['id']:.3f} OOD {acc['ood']:.3f} | far-reliance ID "
              f"{rel['id']['far']} OOD {rel['ood']['far']} | local ID {rel['id']['local']} "
              f"OOD {rel['ood']['local']} | {record['train_seconds']} s", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
