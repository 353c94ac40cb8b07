"""Training tests run torch on one thread: xdist puts two workers on two cores, and more threads per
worker only oversubscribe them (small models spend more on thread hand-offs than they gain)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
