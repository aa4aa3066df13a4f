"""Score a predictions file against a split of a dataset folder (what ``posgen score`` does).

>>> import tempfile, pathlib
>>> from posgen.spec import default_benchmark
>>> from posgen.store import write_dataset
>>> root = pathlib.Path(tempfile.mkdtemp()) / "ds"
>>> _ = write_dataset(default_benchmark(("cot",), train_size=30, val_size=5, test_size=5), root)
>>> test = load_reference(root, "cot", "test")
>>> write_predictions(root.parent / "p.npy", test.ids, test.tokens, modulus=17)
>>> score_file(root, "cot", "test", root.parent / "p.npy").summary()
{'id_accuracy': 1.0, 'ood_accuracy': 1.0}
"""

from __future__ import annotations

from pathlib import Path

from posgen.errors import shown
from posgen.scoring.metrics import (
    DEFAULT_BUCKET_WIDTH,
    ScoreReport,
    ScoringError,
    score_arrays,
    spec_frame,
)
from posgen.scoring.prediction_files import align_to_ids, read_predictions, write_predictions
from posgen.scoring.reliance import RelianceReport, score_probe
from posgen.spec import is_probe_split
from posgen.store.dataset import Dataset, ProbeSplit, ReferenceSplit, named

__all__ = ["load_probe", "load_reference", "score_file", "score_reference", "write_predictions"]


def load_reference(dataset_dir: Path, config: str, split: str = "test") -> ReferenceSplit:
    """The tokens of ``config``/``split`` of a posgen folder (:meth:`Dataset.split`)."""
    return Dataset.open(dataset_dir).split(config, split)


def load_probe(dataset_dir: Path, config: str, split: str = "probe") -> ProbeSplit:
    """The probe split ``config``/``split`` of a posgen folder (:meth:`Dataset.probe`)."""
    return Dataset.open(dataset_dir).probe(config, split)


def score_reference(
    reference: ReferenceSplit | ProbeSplit,
    predictions: Path,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
) -> ScoreReport | RelianceReport:
    """Score the predictions file ``predictions`` (rows matched by id) on ``reference``: its
    accuracy, or its far-reliance on a probe split."""
    if not isinstance(reference, ReferenceSplit | ProbeSplit):
        raise ScoringError(
            f"reference: a ReferenceSplit or ProbeSplit (load_reference, load_probe), not "
            f"{type(reference).__name__}"
        )
    if isinstance(reference, ReferenceSplit) and is_probe_split(reference.split):
        raise ScoringError(
            f"{reference.split} is a probe split, scored by its far-reliance: read it with "
            "load_probe (score_file does)"
        )
    spec, split = reference.spec, reference.split
    read = read_predictions(predictions, fits=(len(reference.ids), reference.tokens.shape[1]))
    try:
        if read.made_for not in (None, (spec.spec_id, split)):
            made_spec, made_split = (shown(value, 80) for value in read.made_for)  # one line
            raise ScoringError(
                f"the predictions were made for split {made_split} of spec {made_spec}, "
                f"not split {split} of spec {spec.spec_id}; score them on the data they were "
                "made for"
            )
        aligned = align_to_ids(read.ids, read.tokens, reference.ids)
        if isinstance(reference, ProbeSplit):
            return score_probe(reference, aligned, bucket_width=bucket_width)
        return score_aligned(reference, aligned, bucket_width)
    except ScoringError as error:
        raise ScoringError(f"{predictions}: {error}") from None


def score_aligned(
    reference: ReferenceSplit, aligned: object, bucket_width: int = DEFAULT_BUCKET_WIDTH
) -> ScoreReport:
    """Score predictions already in the reference's row order (shape as :func:`score_arrays`)."""
    return score_arrays(
        reference.tokens,
        aligned,
        **spec_frame(reference.spec),
        bucket_width=bucket_width,
        config=reference.config,
        split=reference.split,
    )


def score_file(
    dataset_dir: Path,
    config: str,
    split: str,
    predictions: Path,
    bucket_width: int = DEFAULT_BUCKET_WIDTH,
) -> ScoreReport | RelianceReport:
    """Score a predictions file on ``config``/``split`` of a posgen folder: its accuracy, or its
    far-reliance on a probe split (as ``posgen score --split probe``)."""
    load = load_probe if is_probe_split(named(split, "split")) else load_reference
    return score_reference(load(dataset_dir, config, split), predictions, bucket_width)
