"""An export directory, built whole: every input is checked first (the output dir, the libraries asked for, the run
and its dataset, hash-checked), then everything is written into a temp dir — decoder/, head.safetensors, the manifest,
the item map, the ONNX files with their metadata, the quantized variants, checksums.json, quality.json (measured on the
temp dir, loading each variant as a user would) and README.md — and swapped in at the end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from slmrec_cli import ui
from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.files import CARD, FILES, MANIFEST
from slmrec_cli.io import atomic_dir, atomic_path, write_json

if TYPE_CHECKING:
    from slmrec_cli.runs import Run


def check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).exists():
            raise SlmrecError(f"{out} exists and is not an slmrec export; choose another --out")
        if not force:
            raise SlmrecError(f"{out} already exists; pass --force to replace it")


def check_libraries(formats: list[str], quantize: list[str]) -> bool:
    """Refuse what cannot be made here; whether to make the bnb variants."""
    if "onnx" in formats:
        from slmrec_cli.export.onnx import need_onnxruntime

        need_onnxruntime()
    if "fp16" in quantize and "onnx" not in formats:
        raise SlmrecError("--quantize fp16 makes an ONNX file (onnx-fp16, for ONNX Runtime's CUDA provider); add onnx "
                          "to --format")
    want_bnb = "safetensors" in formats and any(q in ("int8", "int4") for q in quantize)
    if want_bnb:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            if "onnx" not in formats:
                raise SlmrecError("--quantize int8/int4 of safetensors needs bitsandbytes: pip install '.[quant]'") \
                    from None
            ui.info("[yellow]bitsandbytes is not installed: skipping the bnb variants (pip install '.[quant]')[/]")
            want_bnb = False
    return want_bnb


def as_trained_quality(run: Run, quality: dict, data, eval_batch: int, device: str, quantization: str) -> dict:
    """An 8-bit or 4-bit run, scored as it trained (its torch model, quantized), and each variant's MRR relative to
    it: the variants start from the full-precision base with the LoRA merged, so this is what the export changed."""
    from slmrec_cli.evaluation.evaluate import rank_split

    model = run.load_model(device)  # as the run trained
    res = rank_split(model.score_all, data, "test", ("sampled", "full"), max_len=model.cfg.max_len,
                     batch_size=eval_batch, device=device, desc=f"quality torch-{quantization} (as trained)")
    del model
    base = res["sampled"].metrics["MRR"]
    for v in quality["variants"]:
        v["relative_mrr_to_as_trained"] = v["metrics"]["sampled"]["MRR"] / base if base else float("nan")
    return {"name": f"torch-{quantization}", "quantization": quantization, "device": device,
            "metrics": {p: r.metrics for p, r in res.items()}}


def build_export(run: Run, out: Path, formats: list[str], quantize: list[str], force: bool, *,
                 int8_scheme: str = "smooth", smooth_alpha: float | None = None, eval_batch: int = 64,
                 device: str = "cpu") -> dict:
    """Write the export; its quality.json (with what the export did: the merge, the ONNX checks, the int8 scheme).
    `device` merges, calibrates and scores the torch model (the CPU in fp32, or a GPU)."""
    from slmrec_cli.data import load_dataset
    from slmrec_cli.export.card import model_card
    from slmrec_cli.export.files import record, variant_layout
    from slmrec_cli.export.model import merge_run, save_export
    from slmrec_cli.export.quality import measure_quality
    from slmrec_cli.export.variants import present

    check_out(out, force)
    want_bnb = check_libraries(formats, quantize)
    data = load_dataset(run.data.path)  # quality and SmoothQuant's calibration need it
    run.check_data(data)
    ui.info(f"merging the LoRA on {device}")
    rec = merge_run(run, device)  # every weight file of the run checked (checksums, shapes)
    with atomic_dir(out, force=True) as tmp:
        manifest = save_export(rec, run, tmp)
        info = {"merge": rec.merge_info}
        if "onnx" in formats:
            info.update(write_onnx(rec, tmp, manifest, quantize, data, int8_scheme, smooth_alpha, device))
        del rec  # quality reloads every variant from the files, as a user would
        free_device_memory(device)
        if want_bnb:
            from slmrec_cli.export.bnb import quantize_bnb

            for q, name in (("int8", "bnb-int8"), ("int4", "bnb-nf4")):
                if q in quantize:
                    ui.info(f"quantizing {name}")
                    quantize_bnb(tmp, q.replace("int4", "nf4"), tmp / name, device)
        manifest["variants"] = variant_layout(tmp)  # the files of each variant, external data included
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / "export_info.json", {"source_run": str(run.path), **info})
        record(tmp)
        variants = present(tmp)
        quality = {**measure_quality(tmp, variants, eval_batch, data, device), **info}
        run_quant = info["merge"]["run_quantization"]
        if run_quant != "none":
            quality["as_trained"] = as_trained_quality(run, quality, data, eval_batch, device, run_quant)
        write_json(tmp / "quality.json", quality)
        with atomic_path(tmp / CARD) as card:
            card.write_text(model_card(manifest, str(out), [v.name for v in variants], quality))
    return quality


def free_device_memory(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


class CheckFailed(RuntimeError):
    """A float ONNX variant past its tolerance against torch; `check` is what was measured."""

    def __init__(self, message: str, check: dict):
        super().__init__(message)
        self.check = check


def checked(rec, path: Path, manifest: dict, variant: str, device: str) -> dict:
    """The ONNX-vs-torch check of a float variant (export.onnx.check_onnx) on the first execution provider that can
    run it (export.quality.onnx_providers); CheckFailed when it fails."""
    from slmrec_cli.export.onnx import check_onnx
    from slmrec_cli.export.quality import onnx_providers

    tried = []
    for provider in onnx_providers(variant, device):
        try:
            check = check_onnx(rec, path, manifest["n_items"], variant, provider)
            break
        except SlmrecError as e:
            tried.append(f"{provider}: {e}")
    else:
        raise SlmrecError("; ".join(tried))
    if not check["passed"]:
        raise CheckFailed(f"{variant} disagrees with torch: max |onnx - torch| {check['max_abs_diff']:.2e} > "
                          f"{check['tolerance']:.2e} (atol {check['atol']:g} + rtol {check['rtol']:g} x max |torch| "
                          f"{check['max_abs_torch']:.3g})", check)
    return check


def write_onnx(rec, tmp: Path, manifest: dict, quantize: list[str], data, int8_scheme: str,
               smooth_alpha: float | None, device: str = "cpu") -> dict:
    """model.onnx (checked against torch: the export fails when it disagrees), its int8/int4 quantizations, its fp16
    conversion (checked against torch where ONNX Runtime can run it; one that disagrees is recorded under `failed` and
    left out of the export, which goes on), and every file's metadata_props."""
    from slmrec_cli.export.card import onnx_metadata
    from slmrec_cli.export.onnx import export_onnx, remove_onnx, stamp
    from slmrec_cli.export.onnx_quant import convert_fp16, quantize_int4

    ui.info("exporting ONNX")
    export_onnx(rec, tmp / FILES["onnx-fp32"])
    check = checked(rec, tmp / FILES["onnx-fp32"], manifest, "onnx-fp32", device)
    info = {"onnx_max_abs_diff": check["max_abs_diff"], "onnx_check": {"onnx-fp32": check}}
    if "int8" in quantize:
        ui.info(f"quantizing onnx-int8 ({int8_scheme})")
        info.update(onnx_int8(rec, tmp, data, int8_scheme, smooth_alpha))
    if "int4" in quantize:
        quantize_int4(tmp / FILES["onnx-fp32"], tmp / FILES["onnx-int4"])
    if "fp16" in quantize:
        ui.info("converting onnx-fp16")
        info.update(convert_fp16(tmp / FILES["onnx-fp32"], tmp / FILES["onnx-fp16"]))
        try:
            info["onnx_check"]["onnx-fp16"] = checked(rec, tmp / FILES["onnx-fp16"], manifest, "onnx-fp16", device)
        except SlmrecError as e:  # an ONNX Runtime whose CPU provider has no fp16 kernels, and no CUDA here
            info["onnx_check"]["onnx-fp16"] = {"passed": None, "not_run": str(e)}
            ui.info(f"[yellow]onnx-fp16 is not checked against torch here: {e}[/]")
        except CheckFailed as e:  # fp16 is an extra: the fp32 variants stand, and nothing serves a wrong file
            info["onnx_check"]["onnx-fp16"] = e.check
            info["failed"] = [{"name": "onnx-fp16", "why": str(e)}]
            remove_onnx(tmp / FILES["onnx-fp16"])
            ui.info(f"[yellow]onnx-fp16 left out of the export: {e}[/]")
    for variant in ("onnx-fp32", "onnx-int8", "onnx-int4", "onnx-fp16"):
        if (tmp / FILES[variant]).exists():
            stamp(tmp / FILES[variant], onnx_metadata(manifest, variant))
    return info


def onnx_int8(rec, tmp: Path, data, scheme: str, alpha: float | None) -> dict:
    """model.int8.onnx by the chosen scheme; SmoothQuant calibrates on the run's training histories."""
    from slmrec_cli.export.onnx_quant import quantize_int8

    if scheme != "smooth":
        return quantize_int8(tmp / FILES["onnx-fp32"], tmp / FILES["onnx-int8"], scheme)
    from slmrec_cli.export.smooth import smooth_int8

    return smooth_int8(rec, data, tmp / FILES["onnx-int8"], alpha)
