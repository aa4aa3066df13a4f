"""Publishing: generate a benchmark, validate it, render its card and move it into place only
when every check passes (:func:`publish_benchmark`); upload it to the Hub (:func:`push_folder`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from posgen import signals
from posgen.card import write_card
from posgen.errors import RunError, UsageError, shown
from posgen.spec import BenchmarkSpec
from posgen.store.dataset import Dataset, check_dataset
from posgen.store.formats import Progress, written_paths
from posgen.store.manifest import CARD_NAME, Manifest
from posgen.store.writer import write_dataset

if TYPE_CHECKING:
    from posgen.validate.report import Report

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # read for the Hub token, first wins
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # huggingface_hub's offline mode
VALIDATED = "**Validated: all "  # the status line of a card whose checks all passed (card)
SHOWN_FAILURES = 5  # failing checks named in the refusal message (the rest are counted)
Baselines = Callable[[Path, str], dict[str, dict[str, float]]]  # (folder, config) -> scores
# Remote files a push deletes unless the folder holds them (fnmatch, `*` crosses `/`): every
# file a card's data_files could read, of any earlier version, Parquet (data/CONFIG/SPLIT-*)
# or Arrow (CONFIG/SPLIT/data-*.arrow and the files save_to_disk writes beside them). The
# README.md and posgen.json are replaced; the repo's other files (.gitattributes, a LICENSE,
# notes) are kept: the card reads none of them.
STALE_PATTERNS = (
    "data/*",
    "*/dataset_dict.json",
    "*/*/data-*.arrow",
    "*/*/cache-*.arrow",
    "*/*/dataset_info.json",
    "*/*/state.json",
)


class PublishRefused(RunError, RuntimeError):
    """The generated data failed validation; nothing was published."""

    def __init__(self, report: Report) -> None:
        failed = [c for c in report.checks if not c.ok]
        lines = [f"{c.check} {c.config or '-'}/{c.split or '-'}: {c.message}" for c in failed]
        super().__init__(
            f"validation failed ({len(failed)} of {len(report.checks)} checks); "
            f"nothing was published: {first_failures(lines)}"
        )
        self.report = report


def first_failures(lines: list[str]) -> str:
    """The first :data:`SHOWN_FAILURES` of ``lines``, the rest counted.

    >>> first_failures([f"f{i}" for i in range(7)])
    'f0; f1; f2; f3; f4; and 2 more'
    """
    more = [f"and {len(lines) - SHOWN_FAILURES} more"] if len(lines) > SHOWN_FAILURES else []
    return "; ".join(lines[:SHOWN_FAILURES] + more)


class PushFailed(RunError, RuntimeError):
    """The Hub refused or failed a push; the message says what the repo holds, as far as
    posgen knows."""


class PushRefused(RunError, RuntimeError):
    """The folder is not a whole posgen publish; nothing was pushed."""


class HubUnavailable(UsageError, RuntimeError):
    """``huggingface_hub`` is not installed or no token is set."""


@dataclass(frozen=True)
class Published:
    """What :func:`publish_benchmark` produced."""

    folder: Path
    manifest: Manifest
    report: Report


def validate_folder(folder: Path) -> Report:
    from posgen.validate import validate

    return validate(folder)


def scoring_baselines(folder: Path, config: str) -> dict[str, dict[str, float]]:
    """Baselines of one config's test split, from :mod:`posgen.scoring`."""
    from posgen.scoring import baseline_scores

    return baseline_scores(folder, config, split="test")


def publish_benchmark(
    bench: BenchmarkSpec,
    out: Path,
    overwrite: bool = False,
    baselines: Baselines | None = None,
    progress: Progress | None = None,
    storage: str = "parquet",
) -> Published:
    """Generate, validate and card ``bench`` into ``out``; :class:`PublishRefused` when the
    data fails validation."""
    out = Path(out)
    reports: list[Report] = []

    def validated_card(build: Path, manifest: Manifest) -> None:
        signals.point("validate")
        report = validate_folder(build)
        if not report.ok:
            raise PublishRefused(report)
        scores = None
        if baselines is not None:
            scores = {config: baselines(build, config) for config in manifest.configs}
        write_card(build, report, scores, manifest=manifest)
        reports.append(report)

    manifest = write_dataset(
        bench, out, storage=storage, overwrite=overwrite, progress=progress, finish=validated_card
    )
    assert manifest is not None  # a whole run always finishes
    return Published(folder=out, manifest=manifest, report=reports[0])


def hub_token() -> str:
    """The Hub token from the environment; :class:`HubUnavailable` when none is set or the
    environment puts huggingface_hub offline (the push would fail after the whole publish)."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"}:
            raise HubUnavailable(f"--push: {name} is set, so the Hub cannot be reached; unset it")
    for name in TOKEN_VARIABLES:
        token = os.environ.get(name, "").strip()
        if token:
            return token
    raise HubUnavailable(f"--push needs a Hub token in the environment: set {TOKEN_VARIABLES[0]}")


def upload_folder(folder: Path, repo_id: str, token: str, message: str) -> str:
    """Create the dataset repo if needed and upload ``folder`` in one call, deleting the remote
    files of :data:`STALE_PATTERNS` it does not hold (the only network calls)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:  # pragma: no cover - depends on the environment
        raise HubUnavailable("--push needs huggingface_hub: reinstall posgen") from None
    api = HfApi(token=token)
    state = "nothing was pushed"
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        state = (
            f"no commit was reported, so {repo_id} holds what it held unless the Hub committed "
            "before failing (see its history; rerun to push again)"
        )
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=message,
            delete_patterns=list(STALE_PATTERNS),
        )
    except signals.Interrupted as error:  # said after "interrupted by SIGINT; "
        error.left = f"the published folder {folder} is kept; pushing it to {repo_id}: {state}"
        raise
    except Exception as error:  # httpx, hub and OS errors share no base
        reason = f"{type(error).__name__}: {error}" if str(error).strip() else type(error).__name__
        raise PushFailed(
            f"pushing {folder} to {repo_id} failed: {state}; the published folder is kept: {reason}"
        ) from None
    return str(getattr(commit, "commit_url", commit))


def repo_id_problems(repo_id: str) -> list[str]:
    """Why ``repo_id`` cannot name a Hub dataset repo (the Hub's own rule); none when it can.

    >>> repo_id_problems("me/posgen"), repo_id_problems("a/b/c")[0][:33]
    ([], "--push: 'a/b/c' is not a Hub repo")
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        why = str(error).split(": '")[0].rstrip(".")
        return [f"--push: {shown(repo_id, 60)!r} is not a Hub repo id ({why})"]
    return []


def push_problems(folder: Path, manifest: Manifest) -> list[str]:
    """Why ``folder`` is not a whole posgen publish, one line each (none: it may be pushed):
    files not what ``posgen.json`` lists, a card of no passed validation, files posgen did not
    write (the push would upload them)."""
    problems = check_dataset(folder)
    card = folder / CARD_NAME
    try:
        validated = VALIDATED in card.read_text(encoding="utf-8", errors="replace")
    except OSError:
        validated = False
    if not validated:
        problems.append(
            f"{card}: not the card of a validated publish (missing, unvalidated or failed, or "
            f"its status line edited away); run `posgen card {folder}` to validate the folder "
            "and render it"
        )
    owned = written_paths(manifest)
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        ignored = ".git" in path.relative_to(folder).parts or "/.cache/huggingface/" in f"/{name}"
        if not ignored and not path.is_dir() and name not in owned:  # upload_folder's ignores
            problems.append(f"{path}: not a file posgen wrote (the push would upload it)")
    return problems


def push_folder(folder: Path, repo_id: str, token: str) -> str:
    """Upload a published folder to the Hub dataset repo ``repo_id``; :class:`PushRefused`
    before any Hub call when it is not a whole posgen publish."""
    folder = Path(folder)
    manifest = Dataset.open(folder).manifest
    problems = push_problems(folder, manifest)
    if problems:
        raise PushRefused(
            f"refusing to push {folder} to {repo_id}: not a whole posgen publish, so nothing "
            f"was pushed: {first_failures(problems)}"
        )
    bench = manifest.benchmark
    message = f"POSGEN {bench.name} (spec {bench.spec_id}, posgen {manifest.posgen_version})"
    return upload_folder(folder, repo_id, token, message)
