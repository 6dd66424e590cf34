"""Tests run on CPU with one thread per library (two busy threads on a 2-core box can be 100x slower)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["SLMREC_CPU_AUTO_BF16"] = "0"  # tests force fp32: `auto` would pick bf16 on a CPU with AMX / AVX-512 BF16

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """(data dir, SASRec run, 4-layer tiny-random teacher run), trained once for the whole session. Read them as they
    are; a test that writes into a run works on a copy (tests.helpers.copy_runs)."""
    from tests.helpers import tiny_teacher

    return tiny_teacher(tmp_path_factory.mktemp("shared"), epochs=2)
