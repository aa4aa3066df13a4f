"""One torch thread per training test, as ``posgen train`` uses: oversubscribed threads crawl
on a shared CPU. Import :func:`one_torch_thread` into a test module to apply it there."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
