"""The config of `doctor`."""

from __future__ import annotations

from dataclasses import dataclass

from slmrec_cli.config.fields import check_device, device_opt, opt


@dataclass
class DoctorConfig:
    """What this install can run: torch and its CUDA GPUs, the CPU's native bf16, which ONNX Runtime is installed
    and which of its execution providers really start, the bitsandbytes backends (a real int8 and nf4 matmul on
    each device), and the built-in data and model packages. Exit 1 when the install is broken (both ONNX Runtime
    packages, a GPU that ONNX Runtime's CUDA provider or bitsandbytes cannot use)."""

    device: str = device_opt("Which devices to check: auto (the CPU, and the CUDA GPU when one is visible) | cpu | "
                             "cuda | cuda:N.")
    strict: bool = opt("Also exit 1 when an optional part is absent (ONNX Runtime, bitsandbytes, gguf, the built-in "
                       "data and model packages): the check a GPU drill or a CI job runs first.", False)

    def __post_init__(self) -> None:
        check_device(self.device)
