"""`posgen publish` and `posgen card`: validated Hub-ready folders, refusal, push boundary.
Publishing runs the real validator on really damaged data (tests/conftest.py's ``validator``)."""

from __future__ import annotations

import functools
import re
import signal
import sys
from pathlib import Path

import datasets
import pytest

import posgen
import posgen.publish
from posgen.signals import Interrupted
from posgen.store.dataset import check_dataset
from posgen.store.manifest import read_manifest, sha256_file

SMALL_SPEC = """\
name = "tiny"
description = "Tiny benchmark for the publish tests."
[defaults]
train_size = 40
val_size = 10
test_size = 10
test_length = [96, 128]
[configs.cot]
[configs.recursive]
"""
# 2 configs x 4 splits x 6 kinds, 2 configs x 2 probe splits x (integrity, probe), unlisted files
CHECKS = 2 * 4 * 6 + 2 * 2 * 2 + 1


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SMALL_SPEC)
    return path


def test_published_posgen_v1_loads_and_streams_every_split_as_the_card_declares(
    header_of, official
):
    out, published = official("posgen-v1")
    card = (out / "README.md").read_text()
    assert published.report.ok
    assert f"**Validated: all {len(published.report.checks)} checks passed**" in card
    assert f"{published.report.tokens_checked:,} tokens were recomputed" in card
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "posgen.json"]
    declared = {c["config_name"]: c for c in header_of(card)["dataset_info"]}
    tasks = ["cot", "recursive", "semirecursive"]
    assert sorted(declared) == sorted([*tasks, *(f"{t}-probe" for t in tasks)])
    for config, _, splits in published.manifest.hf_configs():
        loaded = datasets.load_dataset(str(out), config)
        streams = datasets.load_dataset(str(out), config, streaming=True)
        assert list(loaded) == list(splits)
        for split in declared[config]["splits"]:
            info, data = splits[split["name"]], loaded[split["name"]]
            assert data.num_rows == split["num_examples"] == info.rows
            assert data.info.splits[split["name"]].num_bytes == split["num_bytes"]
            assert len(data[-1]["tokens"]) == info.length
            first = next(iter(streams[split["name"]]))
            assert (first["id"], len(first["tokens"])) == (0, info.length)


CUT = ["--task", "cot", "--train-size", "20000", "--val-size", "10", "--test-size", "10"]


@pytest.mark.parametrize(
    ("case", "files"),  # posgen-v1: 3 configs x (train, validation, test, probe)
    [
        ("posgen-v1", 12),
        ("cut at --shard-mb 1", 5),
        ("an op of your own", 4),
        ("an op of your own, its formula a partial", 4),
    ],
)  # cut: cot's train (1.2 MiB) in 2 files
def test_the_regenerate_command_in_the_card_reproduces_every_checksum(
    cli, official, tmp_path, monkeypatch, case, files
):
    if case == "posgen-v1":
        out, _ = official("posgen-v1")
    elif case == "cut at --shard-mb 1":
        out = tmp_path / "cut"
        assert cli("generate", *CUT, "--shard-mb", "1", "--out", out, "-q").exit_code == 0
    else:  # the card names the op and the module a reader must import to regenerate it
        monkeypatch.setattr(posgen.tasks, "_OPS", dict(posgen.tasks._OPS))
        formula = lambda total, m: total**3 % m  # noqa: E731
        if case.endswith("partial"):  # the card names this module, not functools
            formula = functools.partial(lambda total, m, e: total**e % m, e=3)
        cube = posgen.Op("test_card_cube", "S^3 mod m", "sum", formula)
        posgen.register_op(cube)
        out = tmp_path / "own"
        own = ["--task", "cot", "--op", cube.name, "--train-size", "20", "--test-size", "10"]
        assert cli("generate", *own, "--val-size", "10", "--out", out, "-q").exit_code == 0
        card = (out / "README.md").read_text()
        assert "# op test_card_cube is not part of posgen" in card
        assert f"\nexport POSGEN_TASKS={__name__} PYTHONPATH=.\n" in card
    card = (out / "README.md").read_text()
    spec_text = re.search(r"cat > spec.json <<'SPEC'\n(.*?)\nSPEC\n", card, re.S).group(1)
    sums = re.search(r"sha256sum --check <<'SUMS'\n(.*?)\nSUMS\n", card, re.S).group(1)
    command = re.search(r"\n(posgen generate --spec spec.json --out regenerated.*)\n", card)[1]
    (tmp_path / "spec.json").write_text(spec_text)
    args = command.split()[1:]
    args[args.index("spec.json")] = str(tmp_path / "spec.json")
    args[args.index("regenerated")] = str(tmp_path / "regenerated")
    result = cli(*args, "-q")
    assert result.exit_code == 0, result.output
    lines = sums.splitlines()
    assert len(lines) == files
    for line in lines:
        digest, path = line.split("  ")
        assert sha256_file(tmp_path / "regenerated" / path) == digest, path
    assert read_manifest(tmp_path / "regenerated") == read_manifest(out)


def test_publish_writes_only_validated_folders_whose_card_the_card_command_rerenders(
    assert_clean_error, cli, tmp_path, spec_file, validator
):
    out, readme = tmp_path / "hub", tmp_path / "hub" / "README.md"
    validator.break_data("window")
    line = assert_clean_error(cli("publish", spec_file, "--out", out), 1)
    assert line.startswith(
        f"error: validation failed (8 of {CHECKS} checks); nothing was published"
    )
    assert line.endswith("and 3 more")
    assert "window cot/train: split train row 0 position 4: expected" in line
    assert list(tmp_path.iterdir()) == [spec_file]
    validator.break_data(None)
    validator.calls.clear()
    result = cli("publish", spec_file, "--out", out)
    assert result.exit_code == 0, result.output
    assert "published" in result.output and "checks passed" in result.output
    (validated,) = validator.calls  # validated before the folder was moved in place
    assert validated != out and not validated.exists()
    published = readme.read_text()
    assert f"**Validated: all {CHECKS} checks passed**" in published
    assert list(read_manifest(out).configs) == ["cot", "recursive"]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    validator.break_data("integrity")  # a failed --overwrite leaves the previous folder intact
    assert_clean_error(
        cli("publish", spec_file, "--out", out, "--overwrite"), 1, "validation failed"
    )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "tiny.toml"]
    validator.break_data(None)
    readme.write_text("stale")
    assert cli("card", out).exit_code == 0
    assert readme.read_text() == published
    card = cli("card", out, "--no-validate")
    assert card.output == f"wrote {readme} (not validated)\n"
    assert cli("card", out, "--no-validate", "-q").output == ""
    assert "**Not validated.**" in readme.read_text()
    assert cli("card", out, "--baselines").exit_code == 0  # asks the scoring module
    assert "| recursive | oracle | 1.0000 | 1.0000 |" in readme.read_text()
    said = re.search(r": ([\d,]+) tokens, ", result.output).group(1)
    generated = cli("generate", "--spec", spec_file, "--out", tmp_path / "generated")
    assert f": {said} tokens in " in generated.output  # one count: the probe splits' included
    validator.break_data("window")
    result = cli("card", out)  # exits 1 but writes the failures
    assert result.exit_code == 1
    assert "validation failed: 8 check(s)" in result.output
    assert f"**Validation FAILED: 8 of {CHECKS} checks failed**" in readme.read_text()


OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # huggingface_hub's offline switches


def test_push_uploads_the_published_folder_with_the_environment_token(
    assert_clean_error, cli, tmp_path, spec_file, validator, monkeypatch
):
    calls = []

    def upload(folder, repo_id, token, message):  # the network boundary
        if token == "bad":
            raise OSError("401 Client Error: Unauthorized")
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        calls.extend([(folder, repo_id, token, message), files])
        return f"https://huggingface.co/datasets/{repo_id}/commit/abc"

    monkeypatch.setattr(posgen.publish, "upload_folder", upload)
    for name in OFFLINE:  # the tests run offline
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", "bad")
    out = tmp_path / "hub"
    result = cli("publish", spec_file, "--out", out, "--push", "me/x")
    line = assert_clean_error(result, 1, "Unauthorized")
    assert line.startswith("error: pushing")
    assert (out / "posgen.json").is_file()  # a failed push keeps the published folder
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = cli("publish", spec_file, "--out", out, "--overwrite", "--push", "me/posgen-tiny")
    assert result.exit_code == 0, result.output
    (folder, repo_id, token, message), files = calls
    assert (folder, repo_id, token) == (out, "me/posgen-tiny", "hf_test_token")
    manifest = read_manifest(out)
    assert message == f"POSGEN tiny (spec {manifest.benchmark.spec_id}, posgen 0.1.0)"
    expected = {"README.md", "posgen.json"} | {item.path for _, _, item in manifest.files()}
    assert set(files) == expected
    pushed = f"pushed {out} (POSGEN tiny, spec {manifest.benchmark.spec_id}) to me/posgen-tiny: "
    assert result.output.endswith(
        pushed + "https://huggingface.co/datasets/me/posgen-tiny/commit/abc\n"
    )


def a_folder_of_mine(tmp_path, monkeypatch):
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "notes.txt").write_text("mine")


BAD_USAGE = [
    # (arguments: {spec} the tiny spec, {tmp} the test's folder; the error line or a fragment;
    #  what the user's machine holds before)
    ("publish missing.toml --out {tmp}/hub", "error: spec file missing.toml does not exist", None),
    ("publish {spec} --push me/posgen --out {tmp}/hub",
     "error: --push needs a Hub token in the environment", None),
    ("publish {spec} --push a/b/c --out {tmp}/hub",
     "error: --push: 'a/b/c' is not a Hub repo id (Repo id must be in the form",
     lambda tmp_path, monkeypatch: monkeypatch.setenv("HF_TOKEN", "hf_test_token")),
    ("publish {spec} --push a/b/" + "c" * 500 + " --out {tmp}/hub",
     f"error: --push: 'a/b/{'c' * 53}...' is not a Hub repo id (Repo id must be in the form",
     lambda tmp_path, monkeypatch: monkeypatch.setenv("HF_TOKEN", "hf_test_token")),
    ("publish {spec} --push me/posgen --out {tmp}/hub",
     "error: --push: HF_HUB_OFFLINE is set, so the Hub cannot be reached",
     lambda tmp_path, monkeypatch: monkeypatch.setenv("HF_HUB_OFFLINE", "1")
     or monkeypatch.setenv("HF_TOKEN", "hf_test_token")),
    ("publish {spec} --out {tmp}/hub",
     "error: {tmp}/hub exists; pass --overwrite to replace it", a_folder_of_mine),
    ("publish {spec} --out {tmp}/hub -q", "error: posgen.validate is not available",
     lambda tmp_path, monkeypatch: monkeypatch.setitem(sys.modules, "posgen.validate", None)),
    ("card {tmp} --no-validate", "has no posgen.json: not a posgen dataset", None),
    ("card {tmp}/missing --no-validate", "has no posgen.json: not a posgen dataset", None),
    ("card {tmp}/notes.txt --no-validate", "notes.txt: not a folder; not a posgen dataset",
     lambda tmp_path, monkeypatch: (tmp_path / "notes.txt").write_text("mine")),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected", "before"), BAD_USAGE)
def test_bad_usage_exits_2_with_one_line_and_changes_nothing(
    assert_clean_error, cli, tree, tmp_path, spec_file, monkeypatch, args, expected, before
):
    for name in (*posgen.publish.TOKEN_VARIABLES, *OFFLINE):
        monkeypatch.delenv(name, raising=False)
    if before is not None:
        before(tmp_path, monkeypatch)
    files = tree(tmp_path)
    result = cli(*[word.format(spec=spec_file, tmp=tmp_path) for word in args.split()])
    line = assert_clean_error(result, 2)
    assert result.output == line + "\n"  # nothing but the error line
    expected = expected.format(tmp=tmp_path)
    assert line.startswith(expected) if expected.startswith("error: ") else expected in line
    assert tree(tmp_path) == files


class FakeHub:
    """``huggingface_hub.HfApi`` over an in-memory Hub: ``repos`` maps a repo id to its files
    (path: bytes); ``fail[METHOD]`` is raised when posgen calls METHOD; ``calls`` lists them."""

    def __init__(self):
        self.repos, self.fail, self.calls = {}, {}, []
        hub = self

        class Api:
            def __init__(self, token=None, **kwargs):
                self.token = token

            def create_repo(self, repo_id, repo_type=None, exist_ok=False, **kwargs):
                hub.called("create_repo", repo_id)
                assert repo_type == "dataset" and exist_ok
                hub.repos.setdefault(repo_id, {".gitattributes": b"*.parquet filter=lfs\n"})

            def upload_folder(self, *, folder_path, repo_id, repo_type, commit_message,
                              delete_patterns=None, **kwargs):  # fmt: skip
                from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
                from huggingface_hub.utils import filter_repo_objects

                hub.called("upload_folder", repo_id, commit_message)
                assert repo_type == "dataset" and not kwargs, kwargs
                files = hub.repos[repo_id]
                folder = Path(folder_path)
                new = {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}
                kept = filter_repo_objects(list(new), ignore_patterns=DEFAULT_IGNORE_PATTERNS)
                new = {path: new[path].read_bytes() for path in kept}  # as HfApi: none of .git
                stale = filter_repo_objects(list(files), allow_patterns=delete_patterns or [])
                for path in stale:
                    if path != ".gitattributes":  # as HfApi: never deleted
                        del files[path]
                files.update(new)
                url = f"https://huggingface.co/datasets/{repo_id}/commit/{len(hub.calls):040x}"
                return type("CommitInfo", (str,), {"commit_url": url})(url)

        self.Api = Api

    def called(self, method, *args):
        self.calls.append((method, *args))
        if method in self.fail:
            raise self.fail[method]


@pytest.fixture
def hub(monkeypatch):
    """A :class:`FakeHub` in place of ``huggingface_hub.HfApi``, and a token to reach it."""
    import huggingface_hub

    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.Api)
    for name in OFFLINE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return fake


OLD_VERSION = {  # a repo holding an earlier POSGEN version, and files of the user's own
    "README.md": b"# my own card\n",
    "posgen.json": b"{}",
    "LICENSE": b"mine",
    "notes/how-we-use-it.md": b"mine",
    "data/cot/train-00000-of-00002.parquet": b"old rows",
    "data/cot/train-00001-of-00002.parquet": b"old rows",  # data/cot/train-*.parquet reads it
    "data/semirecursive/test-00000-of-00001.parquet": b"old config",
    "cot/train/data-00000-of-00002.arrow": b"old --format arrow rows",
    "cot/train/state.json": b"{}",
    "cot/dataset_dict.json": b"{}",
}


def test_push_over_an_older_version_leaves_exactly_the_published_folder(
    cli, tmp_path, spec_file, hub
):
    hub.repos["me/posgen-tiny"] = {".gitattributes": b"", **OLD_VERSION}
    out = tmp_path / "hub"
    result = cli("publish", spec_file, "--out", out, "--push", "me/posgen-tiny", "-q")
    assert result.exit_code == 0, result.output
    remote = hub.repos["me/posgen-tiny"]
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    kept = {".gitattributes", "LICENSE", "notes/how-we-use-it.md"}  # the card reads none
    assert {path: body for path, body in remote.items() if path not in kept} == local
    assert set(remote) - set(local) == kept
    assert [call[0] for call in hub.calls] == ["create_repo", "upload_folder"]


def test_what_upload_folder_skips_is_no_reason_to_refuse_a_push(cli, tmp_path, spec_file, hub):
    out = tmp_path / "hub"
    assert cli("publish", spec_file, "--out", out, "-q").exit_code == 0
    published = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for skipped in (".git/HEAD", ".cache/huggingface/x", "data/cot/.cache/huggingface/x"):
        (out / skipped).parent.mkdir(parents=True, exist_ok=True)
        (out / skipped).write_text("not uploaded")
    posgen.publish.push_folder(out, "me/posgen", "hf_test_token")
    assert {k: v for k, v in hub.repos["me/posgen"].items() if k != ".gitattributes"} == published


def hub_error(status, body, code=None):
    """The error ``huggingface_hub`` raises for an HTTP ``status`` answer (its own classes)."""
    from huggingface_hub.utils import _http, hf_raise_for_status

    http = getattr(_http, "httpx2", None) or _http.httpx
    request = http.Request("POST", "https://huggingface.co/api/repos/create")
    headers = {"X-Request-Id": "req-1", **({"X-Error-Code": code} if code else {})}
    try:
        hf_raise_for_status(http.Response(status, json=body, headers=headers, request=request))
    except Exception as error:
        return error
    raise AssertionError(status)


NOTHING = "failed: nothing was pushed; the published folder is kept: "
NO_COMMIT = "failed: no commit was reported, so me/posgen holds what it held unless the Hub"
HUB_FAILURES = [
    # (the method that fails, its error, what the error line holds after "pushing OUT to REPO")
    ("create_repo", lambda: hub_error(401, {"error": "Invalid username or password."}),
     [NOTHING + "HfHubHTTPError: Client error '401 Unauthorized'", "Invalid username"]),
    ("create_repo", lambda: hub_error(403, {"error": "no rights to the namespace other"}),
     [NOTHING + "HfHubHTTPError: (Request ID: req-1) 403 Forbidden", "namespace other"]),
    ("create_repo", lambda: ConnectionError("[Errno 111] Connection refused"),
     [NOTHING + "ConnectionError: [Errno 111] Connection refused"]),
    ("upload_folder", lambda: hub_error(429, {"error": "rate limited"}),
     [NO_COMMIT, "the published folder is kept: HfHubHTTPError:", "429 Too Many Requests"]),
    ("upload_folder", lambda: hub_error(404, {"error": "gone"}, "RepoNotFound"),
     [NO_COMMIT, "RepositoryNotFoundError: 404 Client Error"]),
    ("upload_folder", lambda: hub_error(403, {"error": "gated"}, "GatedRepo"),
     [NO_COMMIT, "GatedRepoError: 403 Client Error"]),
    ("upload_folder", lambda: TimeoutError(), [NO_COMMIT, "is kept: TimeoutError"]),
    ("create_repo", lambda: Interrupted(signal.SIGINT),  # Ctrl-C: exit 130
     ["error: interrupted by SIGINT; the published folder {out} is kept; pushing it to "
      "me/posgen: nothing was pushed"]),
    ("upload_folder", lambda: Interrupted(signal.SIGTERM),
     ["error: interrupted by SIGTERM; the published folder {out} is kept; pushing it to "
      "me/posgen: no commit was reported, so me/posgen holds what it held unless the Hub"]),
]  # fmt: skip


@pytest.mark.parametrize(("method", "error", "expected"), HUB_FAILURES)
def test_a_failed_push_says_what_the_repo_holds_and_keeps_the_folder(
    assert_clean_error, cli, tmp_path, spec_file, hub, method, error, expected
):
    before = {"me/posgen": {".gitattributes": b"", **OLD_VERSION}}
    hub.repos.update({repo: dict(files) for repo, files in before.items()})
    hub.fail[method] = error()
    out = tmp_path / "hub"
    failure = hub.fail[method]
    code = 128 + failure.signum if isinstance(failure, Interrupted) else 1
    line = assert_clean_error(cli("publish", spec_file, "--out", out, "--push", "me/posgen"), code)
    assert code != 1 or line.startswith(f"error: pushing {out} to me/posgen failed: "), line
    for fragment in expected:
        assert fragment.format(out=out) in line, (fragment, line)
    assert hub.repos == before
    assert check_dataset(out) == []  # the published folder, whole


def rewrite_a_shard(out, cli):
    shard = next(out.glob("data/cot/train-*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"x")  # one byte appended by hand


NOT_A_PUBLISH = [
    # (what is done to the published folder, what the refusal line holds)
    (rewrite_a_shard, "train-00000-of-00001.parquet: "),
    (lambda out, cli: cli("card", out, "--no-validate"),
     "README.md: not the card of a validated publish"),
    (lambda out, cli: (out / "README.md").unlink(), "README.md: not the card of a validated"),
    (lambda out, cli: (out / "notes.txt").write_text("mine"),
     "notes.txt: not a file posgen wrote (the push would upload it)"),
    (lambda out, cli: (out / "data" / "cot" / "train-00001-of-00002.parquet").write_bytes(b"x"),
     "train-00001-of-00002.parquet: not listed in posgen.json"),
    (lambda out, cli: [(out / f"n{i}.txt").write_text("mine") for i in range(6)],
     "n4.txt: not a file posgen wrote (the push would upload it); and 1 more"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "expected"), NOT_A_PUBLISH)
def test_a_folder_that_is_no_whole_publish_is_refused_before_any_hub_call(
    cli, tmp_path, spec_file, hub, damage, expected
):
    out = tmp_path / "hub"
    assert cli("publish", spec_file, "--out", out, "-q").exit_code == 0
    damage(out, cli)
    with pytest.raises(posgen.publish.PushRefused) as refused:
        posgen.publish.push_folder(out, "me/posgen", "hf_test_token")
    message = str(refused.value)
    assert message.startswith(f"refusing to push {out} to me/posgen: not a whole posgen publish")
    assert expected in message, message
    assert hub.calls == [] and hub.repos == {}
