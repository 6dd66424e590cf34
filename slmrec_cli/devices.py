"""What a run ran on: the device's name and its peak memory, as efficiency.json and bench.json record them."""

from __future__ import annotations

import resource
import sys

import torch


def peak_memory_bytes(device: torch.device | str) -> int:
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"


def resolve_device(spec: str = "auto") -> str:
    """The torch device for --device: auto = the current CUDA GPU when one is visible, else the CPU; cuda and
    cuda:N need a visible GPU (N below the number visible). cuda:N also becomes the current CUDA device, so that
    what runs on "cuda" (ONNX Runtime's CUDA provider included) runs there."""
    from slmrec_cli.errors import SlmrecError

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise SlmrecError(f"--device {spec}: no CUDA GPU is visible here; use --device cpu (or auto)")
    if ":" in spec:
        index = int(spec.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise SlmrecError(f"--device {spec}: only {torch.cuda.device_count()} CUDA GPU(s) are visible "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
        torch.cuda.set_device(index)
    return spec
