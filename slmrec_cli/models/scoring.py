"""The one next-item scoring and cross-entropy every model trains with (SASRec, teacher, student, L_ms, L_kd).

The full-softmax loss never holds the logits of every slot at once: it runs over chunks of rows small enough that one
chunk's [rows, n_items + 1] logits stay under LOGITS_PER_CHUNK elements (64 MiB in fp32), whatever the catalogue. At
a million items a SASRec batch of 128 × 50 slots would otherwise materialise 25 GB of logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

LOGITS_PER_CHUNK = 1 << 24
ROWS_PER_CHUNK = 4096  # past a catalogue of LOGITS_PER_CHUNK / this items, chunks are cut along the items too


def chunk_rows(n_classes: int) -> int:
    """Rows per chunk so that one chunk's logits hold at most LOGITS_PER_CHUNK elements."""
    return max(1, LOGITS_PER_CHUNK // max(1, n_classes))


def chunk_shape(n_rows: int, n_classes: int) -> tuple[int, int]:
    """(rows, items) of one chunk of logits: whole rows of the catalogue while at least ROWS_PER_CHUNK of them fit,
    else ROWS_PER_CHUNK rows against blocks of items, so a large catalogue is read in few passes, not once per
    handful of rows."""
    rows = max(1, min(n_rows, max(ROWS_PER_CHUNK, chunk_rows(n_classes))))
    return rows, max(1, LOGITS_PER_CHUNK // rows)


def _fp32(device: torch.device):
    """The scores are fp32 even inside a bf16/fp16 autocast region (autocast would run the matmul in half precision)."""
    return torch.autocast(device_type=device.type, enabled=False)


def all_scores(users: torch.Tensor, id_table: torch.Tensor) -> torch.Tensor:
    """What evaluation ranks by: every item's score [B, n_items + 1] in fp32, inside an autocast region too (a bf16
    matmul would tie close items and move ranks)."""
    with _fp32(users.device):
        return users.float() @ id_table.float().T


def item_logits(users: torch.Tensor, id_table: torch.Tensor) -> torch.Tensor:
    """Scores of every item [K, n_items + 1] for user vectors [K, d0], in fp32; column 0 (padding) is -inf, so it is
    never a class."""
    with _fp32(users.device):
        logits = users.float() @ id_table.float().T
    logits[:, 0] = float("-inf")
    return logits


def _block_logits(users: torch.Tensor, table: torch.Tensor, start: int) -> torch.Tensor:
    """users' scores of the items start.. of `table` (a block of the id table); item 0 is -inf."""
    logits = users @ table.T
    if start == 0:
        logits[:, 0] = float("-inf")
    return logits


def _ce_rows(users: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, cols: int, grad_u, grad_t):
    """One chunk of rows (fp32): the sum of their CE over the real rows; with grad_u / grad_t given, adds the
    gradients of that sum into them. Items are taken `cols` at a time: one pass when they all fit, else a pass for the
    log-sum-exp and, for the gradients, a second pass that recomputes each block's logits."""
    n = table.shape[0]
    real = targets != 0
    blocks = [(s, min(s + cols, n)) for s in range(0, n, cols)]
    grads = grad_u is not None or grad_t is not None
    rows = torch.arange(len(targets), device=users.device)
    lse = users.new_full((len(targets),), float("-inf"))
    picked = users.new_zeros(len(targets))  # the target's logit
    kept = None
    for s, e in blocks:
        logits = _block_logits(users, table[s:e], s)
        lse = torch.logaddexp(lse, logits.logsumexp(-1))
        inside = (targets >= s) & (targets < e)
        picked = torch.where(inside, logits[rows, (targets - s).clamp(0, e - s - 1)], picked)
        kept = logits if len(blocks) == 1 else None
    loss = (lse - picked)[real].sum()
    if grads:
        for s, e in blocks:
            logits = kept if kept is not None else _block_logits(users, table[s:e], s)
            p = logits.sub_(lse[:, None]).exp_()  # softmax over the whole catalogue, this block of it
            inside = (targets >= s) & (targets < e)
            p[rows[inside], targets[inside] - s] -= 1
            p.mul_(real[:, None])
            if grad_u is not None:
                grad_u.addmm_(p, table[s:e])
            if grad_t is not None:
                grad_t[s:e].addmm_(p.T, users)
    return loss


class _ChunkedCE(torch.autograd.Function):
    """Mean CE over real rows, with its gradients computed chunk by chunk during the forward pass (as fused
    linear-cross-entropy kernels do): the backward pass only scales them, so no chunk's logits outlive its step."""

    @staticmethod
    def forward(ctx, users, table, targets, rows, cols):
        want_u, want_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with _fp32(users.device):
            u32, t32 = users.float(), table.float()
            grad_u = torch.zeros_like(u32) if want_u else None
            grad_t = torch.zeros_like(t32) if want_t else None
            total = u32.new_zeros((), dtype=torch.float64)  # the chunks' sums, added without fp32 drift
            for s in range(0, len(u32), rows):
                total += _ce_rows(u32[s : s + rows], t32, targets[s : s + rows], cols,
                                  grad_u[s : s + rows] if want_u else None, grad_t).double()
        n = (targets != 0).sum()
        ctx.save_for_backward(grad_u, grad_t, n)
        ctx.dtypes = (users.dtype, table.dtype)
        return (total / n).float()

    @staticmethod
    def backward(ctx, grad_out):
        grad_u, grad_t, n = ctx.saved_tensors
        scale = grad_out / n  # in place: at a million items a copy of the table's gradient is 0.5 GB
        gu = grad_u.mul_(scale).to(ctx.dtypes[0]) if grad_u is not None else None
        gt = grad_t.mul_(scale).to(ctx.dtypes[1]) if grad_t is not None else None
        return gu, gt, None, None, None


def next_item_ce(users: torch.Tensor, id_table: torch.Tensor, targets: torch.Tensor,
                 rows: int | None = None, cols: int | None = None) -> torch.Tensor:
    """Mean full-softmax cross-entropy of the next item over every item of the table (paper Eq. 1), for user vectors
    [K, d0] and targets [K]; a row whose target is 0 (padding) is left out of the mean. Computed in chunks of `rows`
    rows × `cols` items (default: chunk_shape), in fp32; equal to F.cross_entropy on the whole logits up to rounding."""
    auto_rows, auto_cols = chunk_shape(len(users), id_table.shape[0])
    rows, cols = rows or auto_rows, cols or auto_cols
    if torch.is_grad_enabled() and (users.requires_grad or id_table.requires_grad):
        return _ChunkedCE.apply(users, id_table, targets, rows, cols)
    with _fp32(users.device):
        u32, t32 = users.float(), id_table.float()
        total = sum(_ce_rows(u32[s : s + rows], t32, targets[s : s + rows], cols, None, None).double()
                    for s in range(0, len(users), rows))
    return (total / (targets != 0).sum()).float()


def chunked_mean(fn: Callable[..., torch.Tensor], rows: int, *row_args: torch.Tensor) -> torch.Tensor:
    """mean over rows of a per-row loss, where fn(*chunk_of_each_row_arg) returns the chunk's sum: one chunk at a time,
    each under activation checkpointing (its logits are recomputed in the backward pass, never kept)."""
    n = len(row_args[0])
    if n <= rows:
        return fn(*row_args) / n
    total = sum(checkpoint(fn, *(a[s : s + rows] for a in row_args), use_reentrant=False)
                for s in range(0, n, rows))
    return total / n
