"""Issue 27, classes 3 and 11: ``posgen results`` checks a run's probe scores as it checks
its test scores, and reads ``results.json`` strictly.

The probe scores live in each run's ``results.json`` (:class:`RunRecord.probe_scores`):
far- and local-reliance must be the shares their counts say, the curve, ID, OOD, overall
and buckets must add up, and the report must be of this run's spec id, config, ``probe``
split and shape; a record without them names the field. Strictly: no number written as a
string, no ``true`` for a number, no key twice, no best epoch past the epochs trained, no
zeroed data checksum. Each case is one ``error:`` line naming the run's file and the field
(exit 1), and nothing is written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


RECORD = "results.json"


@pytest.fixture
def run(trained_runs) -> Path:
    """One finished cot run (never changed: the tests copy it)."""
    return trained_runs / "rope-1"


def edit(*path: str | int, value: object = None, drop: bool = False):
    """A change of the record: ``path`` set to ``value`` (or removed)."""

    def change(body: dict) -> None:
        target = body
        for key in path[:-1]:
            target = target[key]
        if drop:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


def probe(*path: str | int, value: object = None, drop: bool = False):
    return edit("probe_scores", *path, value=value, drop=drop)


def swap_curves(body: dict) -> None:
    """Another run's probe scores: the far and local counts of the curve swapped."""
    curve = body["probe_scores"]["curve"]
    curve["far"], curve["local"] = curve["local"], curve["far"]
    curve["far_reliance"], curve["local_reliance"] = curve["local_reliance"], curve["far_reliance"]


def far_everywhere(body: dict) -> None:
    """Far-reliance 1 next to counts that say otherwise, in every region."""
    for region in ("id", "ood", "overall"):
        body["probe_scores"][region]["far_reliance"] = 1.0


def scores_as_probe_scores(body: dict) -> None:
    """The test split's report in the probe's place."""
    body["probe_scores"] = dict(body["scores"])


def counted_past_rows(body: dict) -> None:
    curve = body["probe_scores"]["curve"]
    curve["counted"][0] = body["probe_scores"]["rows"] + 1


def shorter_curve(body: dict) -> None:
    curve = body["probe_scores"]["curve"]
    for key in curve:
        curve[key] = curve[key][:-2]


def bucket_moved(body: dict) -> None:
    body["probe_scores"]["buckets"][0]["stop"] += 1


# case -> (the change, the field the error line names)
PROBE_CASES = {
    "far-reliance 0.99 next to counts that say otherwise": (
        probe("id", "far_reliance", value=0.99),
        "probe_scores.id.far_reliance",
    ),
    "OOD far-reliance not far / counted": (
        probe("ood", "far_reliance", value=0.5),
        "probe_scores.ood.far_reliance",
    ),
    "overall local-reliance not local / counted": (
        probe("overall", "local_reliance", value=0.75),
        "probe_scores.overall",
    ),
    "far-reliance 1 everywhere": (far_everywhere, "far_reliance"),
    "far-reliance null with targets counted": (
        probe("id", "far_reliance", value=None),
        "probe_scores.id.far_reliance",
    ),
    "far count past the counted targets": (probe("id", "far", value=10**6), "probe_scores.id"),
    "ID counts not the curve's": (probe("id", "counted", value=3), "probe_scores.id"),
    "OOD counts not the curve's": (probe("ood", "local", value=0), "probe_scores.ood"),
    "fewer probed than counted": (probe("overall", "probed", value=1), "probe_scores.overall"),
    "probed 10^400": (probe("overall", "probed", value=10**400), "probe_scores.overall"),
    "a curve point's far count changed": (
        probe("curve", "far", 3, value=5),
        "probe_scores.curve[7]",
    ),
    "a curve point counts more targets than rows": (counted_past_rows, "probe_scores.curve[4]"),
    "a negative far count": (probe("curve", "far", 0, value=-1), "probe_scores.curve[4]"),
    "the curve cut short": (shorter_curve, "probe_scores.curve"),
    "a bucket's counts not the curve's": (probe("buckets", 0, "far", value=4), "buckets[4, 16)"),
    "a bucket moved": (bucket_moved, "probe_scores.buckets"),
    "a bucket's OOD flag wrong": (probe("buckets", 0, "ood", value=True), "buckets[4, 16).ood"),
    "another run's probe scores (far and local swapped)": (swap_curves, "probe_scores"),
    "another spec id": (probe("spec_id", value="0123456789abcdef"), "probe_scores.spec_id"),
    "another config": (probe("config", value="recursive"), "probe_scores.config"),
    "another split (test)": (probe("split", value="test"), "probe_scores.split"),
    "another split (probe_512)": (probe("split", value="probe_512"), "probe_scores.split"),
    "no split": (probe("split", value=None), "probe_scores.split"),
    "another length": (probe("length", value=64), "probe_scores.length"),
    "another row count": (probe("rows", value=9), "probe_scores.rows"),
    "another modulus": (probe("modulus", value=23), "probe_scores.modulus"),
    "another OOD boundary": (probe("ood_boundary", value=32), "probe_scores.ood_boundary"),
    "the test scores in the probe's place": (scores_as_probe_scores, "probe_scores"),
    "probe scores missing": (edit("probe_scores", drop=True), "probe_scores: Field required"),
    "probe scores null": (edit("probe_scores", value=None), "probe_scores"),
}

LAX_CASES = {
    "a string accuracy": (
        edit("scores", "id", "accuracy", value="0.5"),
        "scores.id.accuracy: a string",
    ),
    "a string accuracy that is the right ratio": (
        lambda body: body["scores"]["id"].update(accuracy=str(body["scores"]["id"]["accuracy"])),
        "scores.id.accuracy: a string",
    ),
    "a string count": (
        lambda body: body["scores"]["id"].update(correct=str(body["scores"]["id"]["correct"])),
        "scores.id.correct: a string",
    ),
    "a string far-reliance": (
        lambda body: body["probe_scores"]["id"].update(
            far_reliance=str(body["probe_scores"]["id"]["far_reliance"])
        ),
        "probe_scores.id.far_reliance: a string",
    ),
    "seed true": (edit("seed", value=True), "seed: a boolean"),
    "epochs a string": (edit("train", "epochs", value="1"), "train.epochs"),
    "best_epoch 999 of 1": (edit("best_epoch", value=999), "best_epoch: 999"),
    "best_epoch 2 of 1": (edit("best_epoch", value=2), "best_epoch: 2"),
    "zeroed data checksums": (
        lambda body: body["data"]["files"].update(dict.fromkeys(body["data"]["files"], "0" * 64)),
        "data.files",
    ),
    "a data checksum not hex": (
        lambda body: body["data"]["files"].update(dict.fromkeys(body["data"]["files"], "x" * 64)),
        "data.files",
    ),
    "no data files": (edit("data", "files", value={}), "data.files"),
}

RAW_CASES = {
    "a key twice (seed)": (
        lambda text: text.replace('\n  "seed": ', '\n  "seed": 7,\n  "seed": ', 1),
        "the key 'seed' is repeated",
    ),
    "a key twice (inside the probe scores)": (
        lambda text: text.replace('"far_reliance": ', '"far_reliance": 1.0, "far_reliance": ', 1),
        "the key 'far_reliance' is repeated",
    ),
    "NaN best epoch": (lambda text: text.replace('"best_epoch": 1,', '"best_epoch": NaN,'), "JSON"),
    "UTF-16": (lambda text: text.encode("utf-16"), "JSON"),
}


def damaged_copy(run: Path, tmp_path: Path, change) -> Path:
    bad = tmp_path / "runs" / "bad"
    shutil.copytree(run, bad)
    text = (bad / RECORD).read_text()
    if isinstance(change, tuple):  # a change of the text
        changed = change[0](text)
        (bad / RECORD).write_bytes(changed if isinstance(changed, bytes) else changed.encode())
    else:
        body = json.loads(text)
        change(body)
        (bad / RECORD).write_text(json.dumps(body, indent=2))
    return bad


CASES = {
    **{f"class 3: {case}": value for case, value in PROBE_CASES.items()},
    **{f"class 11: {case}": value for case, value in LAX_CASES.items()},
    **{f"class 11: {case}": ((change,), field) for case, (change, field) in RAW_CASES.items()},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_record_that_does_not_add_up_is_one_line_naming_the_file_and_the_field(
    assert_clean_error, cli, recorded, run, tmp_path, case
):
    change, field = CASES[case]
    bad = damaged_copy(run, tmp_path, change)
    out, js = tmp_path / "R.md", tmp_path / "r.json"
    result = cli("results", tmp_path / "runs", "--out", out, "--json", js)
    with recorded("damage", case):
        assert_clean_error(result, 1, str(bad / RECORD), field)
        assert not out.exists()
        assert not js.exists()


def test_the_record_as_written_is_read_and_its_far_reliance_shown(cli, recorded, run, tmp_path):
    shutil.copytree(run, tmp_path / "runs" / "good")
    out, js = tmp_path / "R.md", tmp_path / "r.json"
    result = cli("results", tmp_path / "runs", "--out", out, "--json", js)
    with recorded("damage", "class 3: the record as written"):
        assert result.exit_code == 0, result.output
        cell = json.loads(js.read_text())["ds"]["tasks"]  # the data folder's name
        record = json.loads((run / RECORD).read_text())["probe_scores"]
        assert cell["cot"]["rope"]["far_id_mean"] == record["id"]["far_reliance"]
        assert cell["cot"]["rope"]["far_n"] == 1
