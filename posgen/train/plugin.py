"""What a position-encoding plugin imports: one module, three ways into the Llama block.

- :func:`rope_encoding`: a rope init function (transformers' signature), registered as a
  rope type;
- :func:`bias_encoding`: a bias ``(position_ids, heads, parameters) -> (batch, heads, T, T)``
  added to the attention logits through transformers' attention interface;
- :class:`PositionEncoding` with ``input_positions``: a module added to the input
  embeddings (see :mod:`posgen.train.absolute`).

Publish the object under the entry point group ``posgen.position_encodings`` (or pass
``--pe package.module:NAME``); it then shows in ``posgen train --list-pe`` and trains,
sweeps and aggregates like a built-in. The README has a complete example.
"""

from posgen.train.alibi import bias_encoding
from posgen.train.encoding import ENTRY_POINT_GROUP, NO_ROPE, Lengths, PositionEncoding
from posgen.train.rope_types import rope_encoding

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_ROPE",
    "Lengths",
    "PositionEncoding",
    "bias_encoding",
    "rope_encoding",
]
