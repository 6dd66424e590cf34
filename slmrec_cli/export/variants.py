"""The variants an export directory holds, each loadable on its own: name → file and a scorer per runtime."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from slmrec_cli.config.export import VARIANTS
from slmrec_cli.export.files import FILES, MANIFEST, MEANT_FOR, read_manifest, recorded, variant_files, verify


@dataclass
class Variant:
    name: str
    path: Path  # its file or folder in the export

    @property
    def file(self) -> str:
        return FILES[self.name] + ("" if self.name.startswith("onnx") else "/model.safetensors")

    @property
    def bytes(self) -> int:
        """What serving it takes: its files (and the head it reads, for torch-fp32)."""
        export_dir = self.path.parent
        return sum((export_dir / n).stat().st_size for n in variant_files(export_dir, self.name))

    def verify(self) -> None:
        verify(self.path.parent, [MANIFEST, *variant_files(self.path.parent, self.name)])


def present(export_dir: Path) -> list[Variant]:
    """The variants the export was written with (checksums.json records their files), whether or not a file has gone
    missing since: loading one checks its files."""
    sums = recorded(export_dir)
    return [Variant(n, Path(export_dir) / FILES[n]) for n in VARIANTS if variant_files(export_dir, n, sums)]


def ort_cuda_by_default(name: str) -> bool:
    """Whether an ONNX variant goes to ONNX Runtime's CUDA provider unasked: only those made for it (MEANT_FOR).
    Dynamic int8's MatMulInteger takes uint8 activations, for which the CUDA provider has no kernel (its MatMulInteger
    is int8 x int8), so each such node would fall back to the CPU with copies both ways; int4 is made for the CPU's
    MatMulNBits kernels. They run on CUDA when --device cuda asks for it."""
    return "CUDAExecutionProvider" in MEANT_FOR[name]


def runtimes(variant: Variant, cuda: bool, ort_cuda: bool, cuda_asked: bool = False) -> list[tuple[str, str]]:
    """(runtime, provider) pairs this variant runs on here; an ONNX variant not made for CUDA (ort_cuda_by_default)
    gets ONNX Runtime's CUDA provider only when `cuda_asked`."""
    if variant.name.startswith("onnx"):
        on_cuda = ort_cuda and (cuda_asked or ort_cuda_by_default(variant.name))
        return [("ort", "cpu")] + ([("ort", "cuda")] if on_cuda else [])
    if variant.name.startswith("bnb"):
        return [("torch", "cpu")] + ([("torch", "cuda")] if cuda else [])
    return [("torch", "cpu")] + ([("torch", "cuda-fp32"), ("torch", "cuda-bf16")] if cuda else [])


def scorer(variant: Variant, export_dir: Path, runtime: str, provider: str, threads: int | None = None):
    """score_all(items [B, T]) → scores [B, n_items + 1] on CPU tensors, plus a sync function (or None). The
    variant's files are checked against checksums.json first."""
    from slmrec_cli.export.model import load_export

    if runtime == "ort":
        from slmrec_cli.export.onnx import onnx_scorer, session

        variant.verify()
        # on CUDA through IOBinding (outputs allocated on the GPU, only the scores copied back)
        return onnx_scorer(session(variant.path, threads=threads, provider=provider), io_binding=provider == "cuda"), \
            None
    device = "cuda" if provider.startswith("cuda") else "cpu"
    if variant.name.startswith("bnb"):
        from slmrec_cli.export.bnb import load_bnb

        variant.verify()
        rec = load_bnb(variant.path, read_manifest(export_dir)["max_len"], device)
    else:
        rec, _ = load_export(export_dir, device)
        if provider == "cuda-bf16":
            rec = copy.deepcopy(rec).to(torch.bfloat16)
    sync = torch.cuda.synchronize if device == "cuda" else None

    @torch.no_grad()
    def score_all(items: torch.Tensor) -> torch.Tensor:
        return rec.score_all(items.to(device)).float().cpu()

    return score_all, sync


def ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()  # confirmed per session in session()

