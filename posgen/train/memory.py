"""An up-front memory estimate of a ``posgen train`` run, and the refusal of one that won't fit.

The estimate adds up, in bytes (fp32 everywhere, as the run trains):

- the process: Python, torch, transformers, numpy and pyarrow loaded (:data:`BASE_BYTES`);
- the model: P parameters (the Llama's, and a table of position ids x d, as absolute
  encodings learn) x (weights 4 + gradients 4 + AdamW moments 8 + a 4-byte copy for
  the best checkpoint of each position embedding served + 4 while a copy is taken);
- training activations of one batch of B rows of S = L + 1 ids, kept for the backward pass:
  per layer ``B S (12 d + 6 d_ff)`` values, the attention matrices ``B H S^2`` three times
  (scores, probabilities, their gradient), and the logits ``B S V`` five times (logits,
  their fp32 copy, the log-softmax, its gradient, the loss's copy);
- evaluation activations of one batch of the evaluation size at S' = L' + 1, without
  gradients: one layer's ``B S' (6 d + 4 d_ff)`` and ``B H S'^2`` twice, logits twice;
  both count, though they never overlap: memory freed after training is not always returned
  to the system before evaluation allocates its own (a peak of 0.93 of the estimate was
  measured with the larger of the two alone);
- the data at its stored width (1 byte a token for m <= 256, else 2): train, validation
  cut to L, test, the test predictions, and the largest file's bytes twice while it is
  read and checked.

Worked example, the ``cpu`` preset on a config of m = 17, train 10,000 x 64, validation and
test 1,000 x 256 (V = 18 ids; evaluation attention dominates)::

    >>> from posgen.spec import TaskSpec
    >>> from posgen.train.config import preset
    >>> spec = TaskSpec(task="recursive")
    >>> estimate = estimate_run(preset("cpu"), spec, pes=1, largest_file=10**6)
    >>> estimate.parameters  # the Llama's 133,696 and a table of 257 positions x 64
    150144
    >>> round(estimate.total / 2**20)
    1733

The figures are upper bounds on the peak resident memory of real runs (measured on CPU,
``--max-steps 3``, peak / estimate in MiB: 459 / 805 on a tiny config, 831 / 1,731 for the
``cpu`` preset above, 4,537 / 7,991 with ``--batch-size 4096``, 1,257 / 1,669 for 4 layers of
width 256, 1,608 / 4,307 with ``--eval-batch-size 1000``; ``tests/test_train_hostile.py``
checks a real run); :func:`refusal` compares them with the memory available
now (``MemAvailable`` of ``/proc/meminfo``, or the cgroup's limit when lower).
"""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from posgen.errors import human_bytes
from posgen.spec import TaskSpec
from posgen.train.config import TrainConfig

BASE_BYTES = 768 * 2**20
"""Resident memory of the process before any data or model (measured: about 380 MiB)."""
FLOAT = 4


@dataclass(frozen=True)
class RunEstimate:
    """The parts of a run's memory, in bytes."""

    parameters: int
    model: int
    activations: int
    data: int

    @property
    def total(self) -> int:
        """Everything, the process included."""
        return BASE_BYTES + self.model + self.activations + self.data

    @property
    def formula(self) -> str:
        """The parts spelled out for an error line."""
        return (
            f"{self.parameters:,} parameters with AdamW state {human_bytes(self.model)}, "
            f"activations {human_bytes(self.activations)}, data {human_bytes(self.data)}, "
            f"process {human_bytes(BASE_BYTES)}"
        )


def parameter_count(config: TrainConfig, vocab: int) -> int:
    """Parameters of the Llama :func:`posgen.train.trainer.build_model` builds.

    >>> from posgen.train.config import preset
    >>> parameter_count(preset("cpu"), 18)
    133696
    """
    d, ff = config.hidden, config.intermediate
    per_layer = 4 * d * d + 3 * d * ff + 2 * d
    return 2 * vocab * d + config.layers * per_layer + d


def estimate_run(
    config: TrainConfig,
    spec: TaskSpec,
    pes: int = 1,
    largest_file: int = 0,
    positions: int | None = None,
) -> RunEstimate:
    """The memory a run of ``config`` on ``spec``'s splits needs (see the module notes).

    ``positions`` is the range of position ids (``--randomized-positions R``; L'+1 when
    None): a table of that many rows x d is counted, as absolute encodings learn one.
    """
    vocab = spec.modulus + 1
    table = max(positions or 0, max(spec.test_lengths) + 1) * config.hidden
    params = parameter_count(config, vocab) + table
    model = params * FLOAT * (4 + pes + 1)
    d, ff, heads, layers = config.hidden, config.intermediate, config.heads, config.layers
    rows, seq = min(config.batch_size, spec.train_size), spec.train_length + 1
    train = layers * (rows * seq * (12 * d + 6 * ff) + 3 * rows * heads * seq * seq)
    train += 5 * rows * seq * vocab
    length = max(spec.test_lengths)
    eval_rows = min(config.eval_batch_size, max(spec.val_size, spec.test_size))
    eval_seq = length + 1
    evaluation = eval_rows * eval_seq * (6 * d + 4 * ff) + 2 * eval_rows * heads * eval_seq**2
    evaluation += 2 * eval_rows * eval_seq * vocab
    token = spec.token_bytes
    data = token * (
        spec.train_size * spec.train_length
        + spec.val_size * spec.train_length
        + 2 * spec.test_size * spec.test_lengths[0]
    )
    data += 2 * largest_file + 16 * (rows * seq + eval_rows * eval_seq)
    return RunEstimate(
        parameters=params,
        model=model,
        activations=FLOAT * (train + evaluation),
        data=data,
    )


def available_bytes() -> int | None:
    """Memory this process can still use: ``MemAvailable``, or the cgroup limit when lower."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            cap, used = (Path(name).read_text().strip() for name in (limit, usage))
        except OSError:
            continue
        if cap.isdigit() and used.isdigit() and int(cap) < 2**60:
            found.append(max(0, int(cap) - int(used)))
    if not found and hasattr(os, "sysconf"):
        with suppress(ValueError, OSError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found) if found else None


def refusal(estimate: RunEstimate, available: int | None) -> str | None:
    """Why the run should not start (None when it fits or nothing is known), with the figures."""
    if available is None or estimate.total <= available:
        return None
    return (
        f"the run would need about {human_bytes(estimate.total)} of memory "
        f"({estimate.formula}) but only {human_bytes(available)} is available; "
        "lower --batch-size, --eval-batch-size or the model size, or pass --force to try anyway"
    )
