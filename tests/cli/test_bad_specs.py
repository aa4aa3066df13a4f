"""Fuzzed bad input: every invalid spec or flag exits 2 with a readable line, creates nothing."""

from __future__ import annotations

import json
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from posgen.spec import MAX_LENGTH, MAX_ROWS, MAX_SEED, TaskSpec, read_spec_file
from posgen.tasks import TASKS, op_names

INT_FLAGS = {  # flag -> (spec field, lowest valid, highest valid)
    "--modulus": ("modulus", 2, 65536), "--near": ("near", 1, 4096), "--far": ("far", 0, 4096),
    "--train-length": ("train_length", 2, MAX_LENGTH),
    "--test-length": ("test_length", 2, MAX_LENGTH), "--train-size": ("train_size", 1, MAX_ROWS),
    "--val-size": ("val_size", 1, MAX_ROWS), "--test-size": ("test_size", 1, MAX_ROWS),
    "--seed": ("seed", 0, MAX_SEED),
}  # fmt: skip
FIELDS = [field for field, _, _ in INT_FLAGS.values()]
SMALL = {"train_size": 20, "val_size": 5, "test_size": 5, "train_length": 16, "test_length": 24}

names = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
SPEC = "<the spec file>"
SUFFIXES = [".toml", ".yaml", ".json"]


@pytest.fixture(scope="session")
def assert_rejected(cli, recorded):
    """``assert_rejected(kind, key, args, *names, spec=(suffix, text), tmp=folder)``: ``posgen
    generate *args [--spec FILE]`` exits 2 naming one of ``names`` (``SPEC``: FILE), creates
    nothing."""

    def check(kind: str, key: str, args: list[str], *names: str, spec=None, tmp=None):
        with tempfile.TemporaryDirectory() as fresh:
            tmp = tmp or Path(fresh)
            if spec is not None:
                path = tmp / f"spec{spec[0]}"
                path.write_text(spec[1])
                args = [*args, "--spec", str(path)]
                names = tuple(str(path) if name is SPEC else name for name in names)
            result = cli("generate", "--out", tmp / "ds", "-q", *args)
            lines = result.output.splitlines()
            problems = [line for line in lines if line.lower().startswith("error:")]
            with recorded("bad_input", f"{kind}:{key}"):
                assert result.exit_code == 2, (args, lines)
                assert any(name in line for line in problems for name in names), (names, lines)
                assert "Traceback" not in result.output, lines
                assert not (tmp / "ds").exists()
                assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".ds")) == []

    return check


def dump(suffix: str, body: dict) -> str:
    """A mapping as TOML (flat tables only), YAML or JSON text."""
    import yaml

    if suffix != ".toml":
        return json.dumps(body) if suffix == ".json" else yaml.safe_dump(body)
    tables = {key: value for key, value in body.items() if isinstance(value, dict)}
    lines = [f"{k} = {json.dumps(v)}" for k, v in body.items() if k not in tables]
    for key, table in tables.items():
        lines += [f"[{key}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


out_of_range = st.sampled_from(sorted(INT_FLAGS)).flatmap(lambda flag: st.tuples(st.just(flag),
    st.integers(max_value=INT_FLAGS[flag][1] - 1) | st.integers(min_value=INT_FLAGS[flag][2] + 1)
))  # fmt: skip


@given(out_of_range)
def test_out_of_range_flags_are_rejected_naming_the_field(assert_rejected, case):
    flag, value = case
    args = ["--task", "cot", flag, str(value)]
    assert_rejected("range", f"{flag}={value}", args, INT_FLAGS[flag][0])


not_an_int = st.one_of(
    st.text(min_size=1, max_size=8).filter(lambda s: not s.strip().lstrip("+-").isdigit()),
    st.floats(allow_nan=True).map(repr).filter(lambda s: not s.rstrip("0").endswith(".")),
)


@given(st.sampled_from(sorted(INT_FLAGS)), not_an_int)
def test_wrong_type_flags_are_rejected_naming_the_flag(assert_rejected, flag, text):
    assume("\x00" not in text and not text.startswith("-"))
    assert_rejected("type-flag", f"{flag}={text!r}", [flag, text], flag)


wrong_type_value = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
    st.text(string.ascii_letters, min_size=1, max_size=6),
    st.lists(st.integers(0, 9), min_size=2, max_size=3),
    st.dictionaries(names, st.integers(0, 9), min_size=1, max_size=2),
)


@given(st.sampled_from(FIELDS), wrong_type_value, st.sampled_from(SUFFIXES))
def test_wrong_type_fields_in_spec_files_are_rejected_naming_the_field(
    assert_rejected, field, value, suffix
):
    assume(field != "test_length" or not isinstance(value, list))
    text = dump(suffix, {"task": "cot", **SMALL, field: value})
    assert_rejected("type-file", f"{suffix}:{field}={value!r}", [], field, spec=(suffix, text))


@given(names, st.sampled_from(SUFFIXES), st.booleans())
def test_unknown_keys_are_rejected_naming_the_key(assert_rejected, key, suffix, in_config):
    assume(key not in TaskSpec.model_fields and key not in ("defaults", "configs", "name"))
    config = {"task": "cot", **SMALL, key: 1}
    nested = {"configs.cot": config} if suffix == ".toml" else {"configs": {"cot": config}}
    text = dump(suffix, nested if in_config else config)
    assert_rejected("unknown-key", f"{suffix}:{in_config}:{key}", [], key, spec=(suffix, text))


@given(st.integers(1, 40), st.integers(0, 40), st.data())
def test_train_length_not_beyond_the_window_is_rejected(assert_rejected, near, far, data):
    assume(near + far >= 2)
    length = data.draw(st.integers(2, near + far), label="train_length")
    args = ["-m", "97", "-k", str(near), "-j", str(far), "--train-length", str(length),
            "--test-length", str(near + far + 1)]  # fmt: skip
    assert_rejected("window", " ".join(args), args, "train_length")


@given(st.integers(6, 5000), st.data())
def test_test_length_below_train_length_is_rejected(assert_rejected, train_length, data):
    test_length = data.draw(st.integers(2, train_length - 1), label="test_length")
    args = ["--train-length", str(train_length), "--test-length", str(test_length)]
    assert_rejected("short-test", " ".join(args), args, "test_length")


@given(st.integers(2, 12), st.integers(1, 3), st.integers(0, 2), st.data())
def test_more_rows_than_seed_windows_is_rejected(assert_rejected, m, near, far, data):
    space = m ** (near + far)
    assume(space < 10**6)
    rows = data.draw(st.integers(space + 1, space + 5000), label="rows")
    args = ["--task", "recursive", "-m", str(m), "-k", str(near), "-j", str(far),
            "--train-length", str(near + far + 2), "--test-length", str(near + far + 2),
            "--train-size", str(rows)]  # fmt: skip
    assert_rejected("seed-space", " ".join(args), args, "train_size")


VALID = {
    ".toml": 'name = "x"\n[defaults]\nmodulus = 17\ntrain_size = 20\n[configs.cot]\n',
    ".yaml": "name: x\ndefaults:\n  modulus: 17\n  train_size: 20\nconfigs:\n  cot: {}\n",
    ".json": '{"name": "x", "defaults": {"modulus": 17, "train_size": 20}, "configs": {"cot": {}}}',
}
JUNK = "[]{}=:,\"'\t\n#-*&!%@`|>"


@given(st.sampled_from(sorted(VALID)), st.data())
def test_malformed_spec_files_are_rejected_naming_the_file(assert_rejected, suffix, data):
    text = VALID[suffix]
    cut = data.draw(st.integers(0, len(text)), label="cut")
    junk = data.draw(st.text(JUNK, min_size=1, max_size=4), label="junk")
    broken = text[:cut] + junk + text[cut:]
    assume(parses_as(suffix, broken) is None)  # still-valid mutations are not bad input
    assert_rejected("malformed", f"{suffix}:{broken!r}", [], SPEC, spec=(suffix, broken))


@given(st.sampled_from([".json", ".yaml"]), st.one_of(
    st.lists(st.integers(), max_size=3), st.integers(), st.text(string.ascii_letters, max_size=5)
))  # fmt: skip
def test_spec_files_that_are_not_mappings_are_rejected(assert_rejected, suffix, value):
    text = json.dumps(value)
    assume(not isinstance(parses_as(suffix, text), dict))
    assert_rejected("not-mapping", f"{suffix}:{text}", [], SPEC, spec=(suffix, text))


def parses_as(suffix: str, text: str):
    """What ``read_spec_file`` makes of ``text`` in a ``spec{suffix}`` file; None if refused."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"spec{suffix}"
        path.write_text(text)
        try:
            return read_spec_file(path)
        except ValueError:
            return None


@given(names, st.booleans())  # hypothesis also draws the string constants of posgen's code
def test_unknown_task_and_op_names_are_rejected(assert_rejected, name, as_op):
    assume(name not in (op_names() if as_op else TASKS))
    if as_op:
        assert_rejected("unknown-name", f"op:{name}", ["--task", "cot", "--op", name], "op")
    else:
        spec = (".toml", f'task = "{name}"\n')
        assert_rejected("unknown-name", f"task:{name}", [], "task", spec=spec)


@given(names, st.sampled_from([*SUFFIXES, ".txt", ""]), st.booleans())
@example("ds", "", False)  # named like the output folder: the test's own files apart
def test_missing_or_unusable_spec_files_are_rejected_naming_the_path(
    assert_rejected, name, suffix, folder
):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in" / f"{name}{suffix}"  # never the output, tmp/ds (name "ds")
        path.parent.mkdir()
        if folder:
            path.mkdir()
        elif suffix in (".txt", ""):
            path.write_text("task = 'cot'\n")  # exists, but of no known format
        case = f"{folder}:{name}{suffix}"
        assert_rejected("missing-file", case, ["--spec", str(path)], str(path), tmp=Path(tmp))


HOSTILE_FILES = {  # (suffix, text): refused in one line, exit 2, never an internal error
    **{f"{suffix}: a 5000-digit seed": (suffix, dump(suffix, {"task": "cot", "seed": 1}).replace(
        "1", "9" * 5000)) for suffix in SUFFIXES},  # past Python's int-string limit
    ".yaml: an impossible date": (".yaml", "task: cot\nseed: 2020-13-45\n"),
    ".toml: a pipe": (".toml", None),  # read, it would wait for ever
    ".yaml: a !!set of a list": (".yaml", "task: cot\nseed: !!set [1]\n"),  # no mapping node
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_hostile_spec_files_are_rejected_in_one_line(assert_rejected, case):
    suffix, text = HOSTILE_FILES[case]
    if text is not None:
        assert_rejected("hostile-file", case, [], SPEC, spec=(suffix, text))
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.mkfifo(Path(tmp) / f"spec{suffix}")
        path = str(Path(tmp) / f"spec{suffix}")
        assert_rejected("hostile-file", case, ["--spec", path], path, tmp=Path(tmp))


BAD_TABLES = {  # (spec text, flags, a name the line holds): a benchmark file's shape, or flags
    "defaults not a table": ('{"defaults": 3, "configs": {"cot": {}}}', [], "'defaults'"),
    "configs not a table": ('{"name": "x", "configs": 3}', [], "'configs'"),
    "a config not a table": ('{"configs": {"cot": 3}}', [], "config 'cot'"),
    "no config for --task": ('{"task": "cot"}', ["--task", "recursive"], "task(s) recursive"),
    "no config for a --task given twice": ('{"task": "cot"}', ["--task", "recursive", "--task",
        "recursive", "--task", "semirecursive"], "task(s) recursive, semirecursive"),
    "a flag out of range": ('{"task": "cot"}', ["--near", "0"], "configs.cot.near"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_spec_files_of_the_wrong_shape_are_rejected(assert_rejected, case):
    text, args, name = BAD_TABLES[case]
    assert_rejected("bad-table", case, args, name, spec=(".json", text))


@pytest.mark.parametrize(
    ("suffix", "text"),
    [
        (".json", '{"task": "\\ud800"}'),
        (".yaml", 'task: "\\ud800"\n'),
        (".json", '{"name": "\\udfff", "configs": {"cot": {}}}'),
    ],
)
def test_a_lone_surrogate_in_a_spec_is_refused_shown_escaped(assert_rejected, suffix, text):
    # a UTF-16 half escaped in JSON or YAML: valid text to the parser, no UTF-8 in error lines
    assert_rejected(
        "hostile-file", f"{suffix}: {text}", [], "\\ud800", "\\udfff", spec=(suffix, text)
    )
