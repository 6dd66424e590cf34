"""Project rules that a grep can check: no pickle anywhere, no remote code."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = [
    (re.compile(r"^\s*(import pickle|from pickle|import cloudpickle|import dill)", re.M), "pickle"),
    (re.compile(r"torch\.load\((?![^)]*weights_only=True)"), "torch.load without weights_only=True"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle=True"),
    (re.compile(r"trust_remote_code\s*=\s*True"), "trust_remote_code=True"),
    (re.compile(r"\.to_pickle\(|read_pickle\("), "pandas pickle"),
]


def test_no_pickle_and_no_remote_code():
    offenders = []
    for path in [*ROOT.glob("slmrec_cli/**/*.py"), *ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("examples/**/*")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            offenders += [f"{path.relative_to(ROOT)}: {why}" for rx, why in FORBIDDEN if rx.search(text)]
    assert not offenders, offenders


def test_the_rules_catch_what_they_should():
    samples = {"import pickle\n": "pickle", "x = torch.load(f)": "torch.load", "np.load(p, allow_pickle=True)": "numpy",
               "AutoModel.from_pretrained(p, trust_remote_code=True)": "trust_remote_code"}
    for text, why in samples.items():
        assert any(rx.search(text) and why in reason for rx, reason in FORBIDDEN), text
    assert not any(rx.search("torch.load(f, weights_only=True)") for rx, _ in FORBIDDEN)


def test_artifacts_get_normal_permissions(tmp_path):
    import os

    from slmrec_cli.io import atomic_dir, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_the_bitsandbytes_kernels_line_is_silenced():
    """bitsandbytes' 'Failed to load CPU gemm_4bit_forward from kernels-community' (CPUs with AVX-512 BF16, no
    `kernels` package) is noise to our users: its logger only lets errors through once slmrec is imported."""
    import logging

    import slmrec_cli  # noqa: F401

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
