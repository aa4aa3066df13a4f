"""A spec's splits in memory, no disk: one Arrow table per split, or a ``datasets.DatasetDict``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from posgen.arrow_io import row_schema, row_tables
from posgen.generator import block_rows_for
from posgen.spec import TaskSpec
from posgen.store.layout import DEFAULT_ROW_GROUP_BYTES, rows_per

if TYPE_CHECKING:
    import datasets


def split_table(spec: TaskSpec, split: str) -> pa.Table:
    """A whole split as one Arrow table (in row-group sized chunks)."""
    schema = row_schema(spec.modulus, {"posgen.spec_id": spec.spec_id, "posgen.split": split})
    per_group = rows_per(DEFAULT_ROW_GROUP_BYTES, spec, split)
    step = block_rows_for(spec, spec.split_length(split), per_group=per_group)
    return pa.concat_tables(row_tables(spec, split, 0, spec.split_size(split), step, schema))


def to_dataset_dict(spec: TaskSpec) -> datasets.DatasetDict:
    """Every split of ``spec`` as a ``datasets.DatasetDict``, in memory, no disk.

    >>> dd = to_dataset_dict(TaskSpec(task="cot", train_size=4, val_size=2, test_size=2))
    >>> dd["train"].num_rows, len(dd["test"][0]["tokens"])
    (4, 256)
    """
    if not isinstance(spec, TaskSpec):
        hint = (
            " (a benchmark: call it on each of bench.configs.values())"
            if hasattr(spec, "configs")
            else ""
        )
        raise TypeError(
            f"to_dataset_dict takes a TaskSpec, not a {type(spec).__name__}{hint}; "
            "e.g. to_dataset_dict(TaskSpec(task='cot'))"
        )
    import datasets
    from datasets.table import InMemoryTable

    return datasets.DatasetDict(
        {
            split: datasets.Dataset(
                InMemoryTable(split_table(spec, split)),
                split=datasets.NamedSplit(split),
                fingerprint=f"posgen-{spec.spec_id}-{split}",
            )
            for split in spec.split_names
        }
    )
