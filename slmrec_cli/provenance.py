"""What produced a run, for its config.json: the command line and the software versions."""

from __future__ import annotations

from slmrec_cli import __version__

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "onnxruntime", "onnxruntime-gpu")
COMMAND: list[str] | None = None  # the command line, set by the CLI (None when a stage is called from Python)


def software() -> dict[str, str]:
    """The versions of slmrec and of the libraries its numbers depend on (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"slmrec": __version__}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
