import pytest
import torch


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Test batches are tiny: one intra-op thread is faster and does not stall when the CPU is shared
    (the suite runs on 2 cores under pytest-xdist)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
