"""The one next-item scoring and cross-entropy every model trains with (SASRec, teacher, student, L_ms, L_kd).

The full-softmax loss never holds the logits of every slot at once: it runs over chunks of rows small enough that one
chunk's [rows, n_items + 1] logits stay under LOGITS_PER_CHUNK elements (64 MiB in fp32), whatever the catalogue. At
a million items a SASRec batch of 128 × 50 slots would otherwise materialise 25 GB of logits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

LOGITS_PER_CHUNK = 1 << 24


def chunk_rows(n_classes: int) -> int:
    """Rows per chunk so that one chunk's logits hold at most LOGITS_PER_CHUNK elements."""
    return max(1, LOGITS_PER_CHUNK // max(1, n_classes))


def _fp32(device: torch.device):
    """The scores are fp32 even inside a bf16/fp16 autocast region (autocast would run the matmul in half precision)."""
    return torch.autocast(device_type=device.type, enabled=False)


def item_logits(users: torch.Tensor, id_table: torch.Tensor) -> torch.Tensor:
    """Scores of every item [K, n_items + 1] for user vectors [K, d0], in fp32; column 0 (padding) is -inf, so it is
    never a class."""
    with _fp32(users.device):
        logits = users.float() @ id_table.float().T
    logits[:, 0] = float("-inf")
    return logits


def _ce_chunk(users: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, grads: bool):
    """One chunk: (sum of the CE over its real rows, and with grads the gradient of that sum w.r.t. the logits,
    softmax − one-hot with padding rows zeroed)."""
    logits = item_logits(users, table)
    lse = logits.logsumexp(-1)
    real = targets != 0
    loss = (lse - logits.gather(1, targets[:, None]).squeeze(1))[real].sum()
    if not grads:
        return loss, None
    p = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
    p[torch.arange(len(targets), device=p.device), targets] -= 1
    return loss, p.mul_(real[:, None])


class _ChunkedCE(torch.autograd.Function):
    """Mean CE over real rows, with its gradients computed chunk by chunk during the forward pass (as fused
    linear-cross-entropy kernels do): the backward pass only scales them, so no chunk's logits outlive its step."""

    @staticmethod
    def forward(ctx, users, table, targets, rows):
        want_u, want_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with _fp32(users.device):
            u32, t32 = users.float(), table.float()
            grad_u = torch.zeros_like(u32) if want_u else None
            grad_t = torch.zeros_like(t32) if want_t else None
            total = u32.new_zeros((), dtype=torch.float64)  # the chunks' sums, added without fp32 drift
            for s in range(0, len(u32), rows):
                u = u32[s : s + rows]
                loss, g = _ce_chunk(u, t32, targets[s : s + rows], grads=True)
                total += loss.double()
                if want_u:
                    grad_u[s : s + rows] = g @ t32
                if want_t:
                    grad_t.addmm_(g.T, u)
        n = (targets != 0).sum()
        ctx.save_for_backward(grad_u, grad_t, n)
        ctx.dtypes = (users.dtype, table.dtype)
        return (total / n).float()

    @staticmethod
    def backward(ctx, grad_out):
        grad_u, grad_t, n = ctx.saved_tensors
        scale = grad_out / n
        gu = (grad_u * scale).to(ctx.dtypes[0]) if grad_u is not None else None
        gt = (grad_t * scale).to(ctx.dtypes[1]) if grad_t is not None else None
        return gu, gt, None, None


def next_item_ce(users: torch.Tensor, id_table: torch.Tensor, targets: torch.Tensor,
                 rows: int | None = None) -> torch.Tensor:
    """Mean full-softmax cross-entropy of the next item over every item of the table (paper Eq. 1), for user vectors
    [K, d0] and targets [K]; a row whose target is 0 (padding) is left out of the mean. Computed in chunks of `rows`
    (default: chunk_rows of the catalogue), in fp32; equal to F.cross_entropy on the whole logits up to rounding."""
    rows = rows or chunk_rows(id_table.shape[0])
    if torch.is_grad_enabled() and (users.requires_grad or id_table.requires_grad):
        return _ChunkedCE.apply(users, id_table, targets, rows)
    total = sum(_ce_chunk(users[s : s + rows], id_table, targets[s : s + rows], grads=False)[0].double()
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
