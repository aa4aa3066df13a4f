"""Data cards: front matter `datasets` accepts, facts equal to the manifest and the files, what
each task measures, and the official cards in data_cards/ (run `make cards`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import posgen
import posgen.card
from posgen import write_dataset
from posgen.card import (
    config_section,
    dependency_diagram,
    measures_section,
    render_card,
    seeding_section,
)
from posgen.scoring.reliance import measure_sentence, measure_sentences
from posgen.spec import BenchmarkSpec, TaskSpec
from posgen.store.manifest import DamagedDataset, Manifest, read_manifest
from posgen.tasks import TASKS
from posgen.validate import validate


def test_front_matter_has_the_hub_fields_and_one_config_per_task(header_of, small_dataset):
    header = header_of((small_dataset / "README.md").read_text())
    assert header["pretty_name"] == "POSGEN (small)"
    assert (header["license"], header["task_categories"]) == ("mit", ["text-generation"])
    assert header["size_categories"] == ["n<1K"]  # 3 x 190 rows
    assert "length-generalization" in header["tags"]
    configs = {c["config_name"]: c for c in header["configs"]}
    assert list(configs) == [name for task in TASKS for name in (task, f"{task}-probe")]
    assert configs["recursive"].get("default") is True  # first in the spec
    assert not any(c.get("default") for c in header["configs"][1:])
    splits = [f["split"] for f in configs["cot"]["data_files"]]
    assert splits == ["train", "validation", "test", "test_128"]
    probe_splits = [f["split"] for f in configs["cot-probe"]["data_files"]]
    assert probe_splits == ["probe", "probe_128"]
    without_folder = header_of(render_card(read_manifest(small_dataset)))
    assert "dataset_info" not in without_folder
    assert without_folder["configs"] == header["configs"]


def test_the_worked_example_is_the_first_train_row_and_its_target_adds_up(oracle, small_dataset):
    manifest = read_manifest(small_dataset)
    card = render_card(manifest)
    for name, entry in manifest.configs.items():
        spec = entry.spec.canonical()
        first = pq.read_table(small_dataset / entry.splits["train"].files[0].path)
        row = first.column("tokens")[0].as_py()
        section = card.split(f"### `{name}`")[1]
        shown = re.search(r"x_0\.\.x_(\d+) = ([\d ]+)\n", section)
        t = int(shown.group(1))
        assert [int(v) for v in shown.group(2).split()] == row[: t + 1]
        values = re.search(rf"x_{t} = \(.*?\) mod 17 = \(([\d + ]+)\) mod 17", section).group(1)
        far = oracle.far_positions(spec["task"], t, spec["near"], spec["far"])
        expected = [row[p] for p in far] + row[t - spec["near"] : t]
        assert [int(v) for v in values.split(" + ")] == expected
        assert sum(expected) % 17 == row[t]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(("near", "far"), [(3, 1), (2, 3), (1, 0)])
def test_the_dependency_picture_marks_exactly_the_operands_of_each_target(oracle, task, near, far):
    for line in dependency_diagram(task, near, far, length=30).splitlines()[2:]:
        t, marks = int(re.match(r"t = (\d+)", line).group(1)), line[10:]
        assert (len(marks), marks[t]) == (t + 1, "x")
        far_marks = sorted(set(oracle.far_positions(task, t, near, far)))
        assert [p for p, c in enumerate(marks) if c == "F"] == far_marks
        assert [p for p, c in enumerate(marks) if c == "n"] == list(range(t - near, t))


def test_a_window_too_wide_to_draw_is_described_not_drawn():
    spec = TaskSpec(task="recursive", near=49, train_length=64, test_length=[96], train_size=2,
                    val_size=1, test_size=1)  # fmt: skip
    said = config_section("wide", spec)
    assert said.endswith("(The window w = 50 is too wide to draw.)")
    assert "Which earlier positions" not in said


def test_an_unvalidated_card_says_so_and_has_every_other_section(small_dataset):
    manifest = read_manifest(small_dataset)
    card = render_card(manifest)
    for text in ["**Not validated.**", 'load_dataset("path/to/this/folder", "recursive")',
                 "streaming=True", "hit[:, w:L].mean()", "hit[:, L:].mean()",
                 "Configs with `disjoint` seeding differ from the authors' code",
                 "@inproceedings{wang2024resonance", "2403.00071"]:  # fmt: skip
        assert text in card, text
    assert "Baselines" not in card
    assert "Configs with `paper` seeding" not in card
    scores = {"cot": {"copy_previous": {"id_accuracy": 0.0588, "ood_accuracy": 0.05}}}
    assert "| cot | copy_previous | 0.0588 | 0.0500 |" in render_card(manifest, baselines=scores)
    paper = seeding_section([TaskSpec(task="cot", seeding="paper")])
    assert "every validation row begins with a training row" in paper
    assert "disjoint" not in paper.split("\n", 2)[2].split("`")[0]


def test_a_validated_card_holds_the_manifest_facts_and_the_audit_and_no_timings(small_dataset):
    manifest, report = read_manifest(small_dataset), validate(small_dataset)
    card = render_card(manifest, report, root=small_dataset)
    timed = report.model_copy(update={"seconds": 12.3456789})
    again = Manifest.model_validate_json(manifest.to_json())
    assert card == render_card(again, timed, root=small_dataset)
    assert "12.3456789" not in card and "12.3457" not in card and "Not validated" not in card
    assert f"`{manifest.benchmark.spec_id}`" in card
    assert all(f"`{entry.spec_id}`" in card for entry in manifest.configs.values())
    for name, _, splits in manifest.hf_configs():
        for split, info in splits.items():
            w, L, n = info.seed_window, info.ood_boundary, info.length
            ood = f"[{L}, {n})" if n > L else "none"
            row = f"| {name} | {split} | {info.rows:,} | {n:,} | {w:,} | [{w}, {L}) | {ood} |"
            assert row in card
            for f in info.files:
                row = f"| {f.path} | {f.rows:,} | {f.first_id:,} | {f.bytes:,} | `{f.sha256}` |"
                assert row in card
    # 3 configs x 4 splits x 6 kinds, 3 configs x 2 probe splits x (integrity, probe), + 1
    assert "**Validated: all 85 checks passed**" in card
    assert "| window | 12 | 0 | 0 |" in card
    facts = report.facts["cot"]["test"]
    assert (
        f"| cot | test | 20 | 96 | 4 | {facts['max_lookback']} | 0 | test_128: 0, train: 0, "
        f"validation: 0 | {facts['target_balance_max_tv']:.4f} |" in card
    )


def test_a_failed_validation_is_shown_with_the_failing_checks(breaks, small_dataset, small_copy):
    breaks["hygiene"](small_copy)  # the first train file repeats a row (not its id's: window)
    failed_report = validate(small_copy)
    card = render_card(read_manifest(small_dataset), failed_report)
    failed = [c for c in failed_report.checks if not c.ok]
    assert [(c.check, c.config, c.split) for c in failed] == [
        ("window", "recursive", "train"),
        ("hygiene", "recursive", "train"),
    ]
    assert "**Validation FAILED: 2 of 85 checks failed**" in card
    for check in failed:
        assert f"| {check.check} | recursive | train | {check.failures} | {check.message} |" in card
    assert f"| hygiene | 11 | 1 | {failed[1].failures} |" in card


def with_columns(change):
    """Damage that rewrites a file as ``change(table)`` (its schema's metadata kept)."""

    def damage(path: Path) -> None:
        table = pq.read_table(path)
        pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)

    return damage


def _first_row_short(table: pa.Table) -> pa.Table:
    rows = table["tokens"].to_pylist()
    rows[0] = rows[0][:-1]  # the rows the manifest lists, not their tokens
    return table.set_column(1, "tokens", pa.array(rows, table.schema.field("tokens").type))


CARD_DAMAGE = {
    # case: (the split of cot whose first file is damaged, the damage, whether the manifest
    #        records the new bytes, what the refusal says as a regex ({path}: the file's path))
    "a file cut short": ("validation", lambda path: path.write_bytes(path.read_bytes()[:-10]),
        False, r"validation-\d{5}-of-\d{5}\.parquet: [\d,]+ bytes"),
    "a missing file": ("validation", Path.unlink, False, "missing"),
    "an extra probe column": ("probe_128",
        with_columns(lambda t: t.append_column("label", pa.array([0] * len(t)))), True,
        "{path}: columns "),
    "a row one token short": ("test", with_columns(_first_row_short), True,
        r"{path}: [\d,]+ tokens, not \d+ rows of 96"),
    "large_list tokens": ("test", with_columns(lambda t: t.set_column(1, "tokens",
        t["tokens"].cast(pa.large_list(pa.uint8())))), True, "{path}: columns "),
}  # fmt: skip


def test_a_card_of_a_one_row_split_whose_row_is_short_says_1_row(record_files, tmp_path):
    spec = TaskSpec(task="cot", train_size=1, val_size=1, test_size=1)
    write_dataset(BenchmarkSpec(name="one", configs={"cot": spec}), tmp_path / "d")
    entry = read_manifest(tmp_path / "d").configs["cot"].splits["test"].files[0]
    with_columns(_first_row_short)(tmp_path / "d" / entry.path)
    record_files(tmp_path / "d", entry.path)
    with pytest.raises(DamagedDataset, match="255 tokens, not 1 row of 256"):
        posgen.card.write_card(tmp_path / "d")


@pytest.mark.parametrize("case", list(CARD_DAMAGE))
def test_a_card_is_refused_for_files_unlike_the_manifest_naming_the_file_changing_nothing(
    cli, record_files, small_copy, case
):
    split, damage, recorded, said = CARD_DAMAGE[case]
    entry = read_manifest(small_copy).configs["cot"].splits[split].files[0]
    damage(small_copy / entry.path)
    if recorded:
        record_files(small_copy, entry.path)
    written = (small_copy / "README.md").read_text()
    pattern = said.replace("{path}", re.escape(str(small_copy / entry.path)))
    with pytest.raises(DamagedDataset, match=pattern) as caught:
        posgen.card.write_card(small_copy)
    assert caught.value.headline == f"{small_copy} is damaged; nothing was changed"
    result = cli("card", small_copy, "--no-validate")  # the command: exit 1, one damage report
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "is damaged" in result.output and re.search(pattern, result.output), result.output
    assert (small_copy / "README.md").read_text() == written


def test_a_card_that_is_a_link_is_refused_and_an_edited_one_rerendered(
    assert_clean_error, cli, small_copy, tmp_path
):
    mine = tmp_path / "mydoc.md"
    mine.write_text("mine\n")
    written = (small_copy / "README.md").read_text()
    (small_copy / "README.md").unlink()
    assert posgen.card.write_card(small_copy).read_text() == written  # rerendered from the folder
    (small_copy / "README.md").unlink()
    (small_copy / "README.md").symlink_to(mine)
    result = cli("card", small_copy, "--no-validate")
    assert_clean_error(result, 2, "README.md is a link", "remove the link")
    assert mine.read_text() == "mine\n"
    (small_copy / "README.md").unlink()  # a card sending cot's test split to recursive's files
    edited = written.replace("path: data/cot/test-*", "path: data/recursive/test-*")
    (small_copy / "README.md").write_text(edited)
    assert cli("validate", small_copy, "--config", "cot").exit_code == 1
    assert "(validated)" in cli("card", small_copy).output
    assert "path: data/cot/test-*" in (small_copy / "README.md").read_text()


def test_a_pipe_in_the_cards_place_is_replaced_by_the_card_never_written_into(cli, small_copy):
    """Written into, a pipe with no reader would block for ever (one is held open here)."""
    card = small_copy / "README.md"
    written = card.read_text()
    card.unlink()
    os.mkfifo(card)
    reader = os.open(card, os.O_RDONLY | os.O_NONBLOCK)
    try:
        result = cli("card", small_copy, "--no-validate")
    finally:
        os.close(reader)
    assert result.exit_code == 0, result.output
    assert card.is_file() and card.read_text() == written


def test_configs_named_like_yaml_values_or_default_or_of_uint16_load_as_the_card_claims(
    header_of, tmp_path
):
    names = ["null", "2001-12-14", "1_000", "default"]  # datasets takes "default" as default
    configs = {
        name: TaskSpec(task="cot", train_size=8, val_size=4, test_size=4, seed=seed)
        for seed, name in enumerate(names)
    }
    configs["1_000"] = TaskSpec(task="cot", modulus=300, train_size=8, val_size=4, test_size=4)
    write_dataset(BenchmarkSpec(name="odd", configs=configs), tmp_path / "odd")
    header = header_of((tmp_path / "odd" / "README.md").read_text())
    wide = next(info for info in header["dataset_info"] if info["config_name"] == "1_000")
    assert wide["features"][1] == {"name": "tokens", "list": "uint16"}  # m = 300
    loaded = datasets.load_dataset(str(tmp_path / "odd"), "1_000", split="test")
    assert np.asarray(loaded[0]["tokens"]).max() < 300
    defaults = [c["config_name"] for c in header["configs"] if c.get("default")]
    assert defaults == ["default"]
    assert datasets.get_dataset_config_names(str(tmp_path / "odd"))[::2] == names
    for config in header["configs"]:
        loaded = datasets.load_dataset(str(tmp_path / "odd"), config["config_name"])
        assert list(loaded) == [f["split"] for f in config["data_files"]]
    default = datasets.load_dataset(str(tmp_path / "odd"), "default")["train"]["tokens"]
    assert datasets.load_dataset(str(tmp_path / "odd"))["train"]["tokens"] == default
    for verify in (True, False):
        assert posgen.load(tmp_path / "odd", verify=verify)["train"]["tokens"] == default
        handle = posgen.Dataset.open(tmp_path / "odd")
        assert handle.load(verify=verify)["train"]["tokens"] == default


def test_dataset_info_is_read_from_the_files_in_the_form_datasets_serializes(
    header_of, small_dataset
):
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    from posgen.store.formats import probe_schema, row_schema

    ours = header_of((small_dataset / "README.md").read_text())["dataset_info"]
    files = {config: splits for config, _, splits in read_manifest(small_dataset).hf_configs()}
    infos = {}
    for block in ours:
        config, splits = block["config_name"], SplitDict()
        for split in block["splits"]:
            splits.add(SplitInfo(**split))
            listed = files[config][split["name"]].files
            tables = [pq.read_table(small_dataset / f.path) for f in listed]
            assert split["num_examples"] == sum(t.num_rows for t in tables)
            assert split["num_bytes"] == sum(t.nbytes for t in tables)
        listed = [f for split in files[config].values() for f in split.files]
        size = sum((small_dataset / f.path).stat().st_size for f in listed)
        assert block["download_size"] == size
        schema = probe_schema(17) if config.endswith("-probe") else row_schema(17)
        infos[config] = DatasetInfo(
            features=Features.from_arrow_schema(schema), splits=splits, download_size=size,
            dataset_size=sum(s["num_bytes"] for s in block["splits"]), config_name=config,
        )  # fmt: skip
    card_data = DatasetCardData()
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    assert card_data.to_dict()["dataset_info"] == ours


def _cell(accuracy_id: float, far_id: float | None) -> dict:
    cell = {"n": 1, "id_mean": accuracy_id, "ood_mean": 0.3}
    return cell if far_id is None else cell | {"far_id_mean": far_id, "far_ood_mean": 0.01}


@pytest.mark.parametrize(
    ("accuracy_id", "far_id", "verdict"),
    [(0.98, 0.001, "measures whether a local rule keeps working at unseen positions"),
     (0.98, 0.85, "measures a far dependency at unseen positions"),
     (0.90, 0.50, "measures a mix of a local rule and a far read"),
     (0.05, 0.02, "measures little at this training budget"),
     (0.98, None, "has no probe figures yet")],
)  # fmt: skip
def test_the_sentence_follows_far_reliance_and_accuracy(accuracy_id, far_id, verdict):
    sentence = measure_sentence("bench", "cot", "rope", _cell(accuracy_id, far_id))
    assert sentence.startswith(f"cot on bench {verdict}")
    assert f"accuracy {accuracy_id:.3f} ID" in sentence


@pytest.mark.parametrize(
    ("cell", "figures"),
    [({"n": 1, "id_mean": 0.05, "ood_mean": None, "far_id_mean": 0.06, "far_ood_mean": None},
      "(far-reliance 0.060 ID, n/a OOD; accuracy 0.050 ID, n/a OOD; n = 1)"),
     ({"n": 1, "id_mean": 0.98, "ood_mean": None}, "(accuracy 0.980 ID, n/a OOD; n = 1)")],
)  # fmt: skip
def test_a_spec_without_ood_positions_has_a_sentence_saying_so(cell, figures):
    """test_length = train_length: no OOD figures (``posgen results`` failed on them)."""
    assert measure_sentence("bench", "cot", "rope", cell).endswith(f"{figures}.")


def test_the_card_section_appears_only_for_the_spec_ids_the_models_were_trained_on(small_dataset):
    manifest = read_manifest(small_dataset)
    name, spec_ids = manifest.benchmark.name, {k: c.spec_id for k, c in manifest.configs.items()}
    tasks = {"cot": {"rope": _cell(0.98, 0.001)}}
    measures = measure_sentences(name, {"tasks": tasks})  # as summary_json
    entry = {"spec_ids": spec_ids, "tasks": tasks, "measures": measures}
    section = measures_section(manifest, {name: entry})
    assert section.splitlines()[0] == "## What each task measures"
    assert f"- cot on {name} measures whether a local rule" in section
    other = {**entry, "spec_ids": {**spec_ids, "cot": "0" * 16}}
    assert measures_section(manifest, {name: other}) == ""


@pytest.mark.parametrize("name", ["paper", "posgen-v1", "posgen-v2"])
def test_official_card_matches_what_the_code_renders(official, name):
    committed = Path(__file__).resolve().parents[2] / "data_cards" / f"{name}.md"
    assert committed.is_file(), "run `make cards`"
    rendered = (official(name)[0] / "README.md").read_text()
    assert rendered == committed.read_text(), f"data_cards/{name}.md is stale: run `make cards`"
