"""SmoothQuant (Xiao et al., ICML 2023) for the merged recommender: move activation outliers into the weights.

Dynamic int8 gives each activation tensor one scale, so a few outlier channels (the "massive activations" of LLM
hidden states) leave every other channel with a handful of levels. SmoothQuant divides each input channel j of a
linear layer by s_j = max|X_j|^α / max|W_j|^(1−α) and multiplies the weight column by s_j: the product is unchanged,
the activations become flat and the weights (quantized per output channel) absorb the range. In a LLaMA block every
division folds exactly into the op before it:
- q/k/v_proj and gate/up_proj read an RMSNorm output: divide the norm's weight;
- down_proj reads silu(gate) · up: divide up_proj's output rows.
o_proj (reading the attention output) is left as it is: smoothing it through v_proj (one scale per V channel, shared by
its query heads) was tried and changed nothing measurable (docs/findings.md). The model computes the same function (up
to fp32 rounding).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slmrec_cli.errors import SlmrecError


def calibration_histories(data, max_len: int, users: int = 256, seed: int = 0) -> torch.Tensor:
    """Training histories (never the valid/test targets) of a fixed random subset of users, left-padded."""
    from slmrec_cli.data import left_pad

    rng = np.random.default_rng(seed)
    chosen = rng.choice(data.n_users, size=min(users, data.n_users), replace=False)
    return torch.from_numpy(left_pad([data.train_history(int(u)) for u in chosen], max_len)).long()


@torch.no_grad()
def activation_maxima(rec: nn.Module, items: torch.Tensor, batch: int = 32) -> dict[str, torch.Tensor]:
    """Per input channel max |x| over every position of the calibration histories, at the three smoothed inputs of
    each layer ("<i>.attn", "<i>.mlp", "<i>.down")."""
    maxima: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_module, args):
            m = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(0).float()
            maxima[name] = torch.maximum(maxima[name], m) if name in maxima else m
        return record

    device = next(rec.parameters()).device
    handles = []
    for i, layer in enumerate(rec.decoder.layers):
        for name, module in ((f"{i}.attn", layer.self_attn.q_proj), (f"{i}.mlp", layer.mlp.gate_proj),
                             (f"{i}.down", layer.mlp.down_proj)):
            handles.append(module.register_forward_pre_hook(hook(name)))
    try:
        for start in range(0, len(items), batch):
            rec(items[start:start + batch].to(device))
    finally:
        for h in handles:
            h.remove()
    return maxima


def smoothing_scales(act_max: torch.Tensor, linears: list[nn.Linear], alpha: float) -> torch.Tensor:
    w_max = torch.stack([lin.weight.detach().abs().amax(0).float() for lin in linears]).amax(0)
    return (act_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def smooth(rec: nn.Module, maxima: dict[str, torch.Tensor], alpha: float = 0.5) -> None:
    """Fold the smoothing scales into the model in place (see the module docstring)."""
    for i, layer in enumerate(rec.decoder.layers):
        attn, mlp = layer.self_attn, layer.mlp
        for key, norm, linears in ((f"{i}.attn", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
                                   (f"{i}.mlp", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj])):
            s = smoothing_scales(maxima[key], linears, alpha)
            norm.weight.div_(s.to(norm.weight.dtype))
            for lin in linears:
                lin.weight.mul_(s.to(lin.weight.dtype))
        s = smoothing_scales(maxima[f"{i}.down"], [mlp.down_proj], alpha)
        mlp.up_proj.weight.div_(s.to(mlp.up_proj.weight.dtype)[:, None])
        mlp.down_proj.weight.mul_(s.to(mlp.down_proj.weight.dtype))


ALPHAS = (0.5, 0.65, 0.8)


def smoothed_copy(rec: nn.Module, maxima: dict[str, torch.Tensor], alpha: float) -> nn.Module:
    import copy

    if not 0.0 <= alpha <= 1.0:
        raise SlmrecError(f"--smooth-alpha must be between 0 and 1, got {alpha}")
    out = copy.deepcopy(rec)
    smooth(out, maxima, alpha)
    return out


def agreement(ref: torch.Tensor, got: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """(mean top-k overlap, relative L2 error) of scores over real items (column 0 is padding)."""
    a, b = ref[:, 1:].topk(k).indices, got[:, 1:].topk(k).indices
    overlap = float(np.mean([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(a, b, strict=True)]))
    return overlap, float((ref - got).norm() / ref.norm().clamp(min=1e-12))


def _scores(score_all, items: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Scores on the CPU in fp32, whatever device `score_all` computes on."""
    with torch.no_grad():
        return torch.cat([score_all(items[i:i + batch]).float().cpu() for i in range(0, len(items), batch)])


def _device_scorer(rec: nn.Module):
    device = next(rec.parameters()).device
    return lambda items: rec.score_all(items.to(device))


def smooth_int8(rec: nn.Module, data, dst, alpha: float | None = None, users: int = 256) -> dict:
    """dst ← SmoothQuant + dynamic int8 of `rec`. alpha None: try ALPHAS and keep the one whose int8 scores agree best
    with fp32 on the calibration histories (top-10 overlap, then relative error): chosen without the test split.
    Calibration runs where `rec` is (the export's device); the ONNX files are traced on the CPU and scored by ONNX
    Runtime on the CPU, where int8 is served."""
    from pathlib import Path

    from slmrec_cli.export.onnx import export_onnx, move_onnx, onnx_scorer, onnx_work, session
    from slmrec_cli.export.onnx_quant import quantize_int8

    dst = Path(dst)
    calib = calibration_histories(data, rec.max_len, users)
    maxima = activation_maxima(rec, calib)
    ref = _scores(_device_scorer(rec), calib)
    tried, files, info = [], {}, {}
    with onnx_work(dst) as work:  # each candidate under its final name (its external data file is named after it)
        for a in ([alpha] if alpha is not None else ALPHAS):
            (work / str(a)).mkdir()
            src, files[a] = work / str(a) / "smoothed.onnx", work / str(a) / dst.name
            export_onnx(smoothed_copy(rec, maxima, a), src)
            info = quantize_int8(src, files[a], "smooth")
            int8 = onnx_scorer(session(files[a], threads=torch.get_num_threads()))
            overlap, err = agreement(ref, _scores(int8, calib))
            tried.append({"alpha": a, "top10_overlap": overlap, "relative_error": err})
        best = max(tried, key=lambda t: (t["top10_overlap"], -t["relative_error"]))["alpha"]
        move_onnx(files[best], dst)
    return {**info, "smooth_alpha": best, "smooth_alphas_tried": tried, "calibration_users": len(calib),
            "calibration": "training histories"}
