"""Tests run on CPU with one thread per library (two busy threads on a 2-core box can be 100x slower)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["SLMREC_CPU_AUTO_BF16"] = "0"  # tests force fp32: `auto` would pick bf16 on a CPU with AMX / AVX-512 BF16
# pytest-xdist's workers (execnet) set COLUMNS=80 and LINES=24; slmrec's tables, written to a pipe, take their natural
# width, as the tests (and a user's log) read them
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import torch  # noqa: E402

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """(data dir, SASRec run, 4-layer tiny-random teacher run), trained once for the whole session. Read them as they
    are; a test that writes into a run works on a copy (tests.helpers.copy_runs)."""
    from tests.helpers import tiny_teacher

    return tiny_teacher(tmp_path_factory.mktemp("shared"), epochs=2)


@pytest.fixture(scope="session")
def exported(tiny_runs, tmp_path_factory):
    """(data dir, run, export dir, export result): one export of the session's tiny teacher with every variant (onnx
    int8/int4/fp16, bnb), quality and a benchmark, built the first time a test asks for it (the export modules'
    slowest step). Read it as it is; a test that damages or edits it works on a copy."""
    from slmrec_cli.config.export import ExportConfig
    from slmrec_cli.stages.export import export

    data, _, run = tiny_runs
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("export") / "exp"
    result = export(run, out, ExportConfig(format=["onnx", "safetensors"], quantize=["int8", "int4", "fp16"],
                                           bench=True, batch_sizes=[1, 4], threads=1, min_seconds=0.0))
    return data, run, out, result
