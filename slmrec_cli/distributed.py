"""Several processes (torchrun, accelerate launch): which one this is, and exact gathering of per-user results.

One process is the default and needs none of this: everything here is a no-op when WORLD_SIZE is unset or 1, and
accelerate is only imported when several processes run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from accelerate import PartialState


def world_size() -> int:
    """Processes in this launch, from the launcher's environment (1 when started plainly)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True for the process that writes files and prints; decided from the environment, before any import."""
    return os.environ.get("RANK", "0") == "0"


def use_cpu() -> bool:
    """accelerate only runs several CPU processes (gloo) when told it is on CPU."""
    import torch

    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def process_state() -> PartialState | None:
    """accelerate's PartialState when several processes run (it joins the process group), else None."""
    if world_size() <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def gather_rows(state: PartialState, rows: np.ndarray, expected_ids: np.ndarray) -> np.ndarray:
    """Every process's [n_i, k] int64 rows (column 0 = user id) on every process, one row per expected id, in the
    order of `expected_ids`. Padding rows (id -1, added so the tensors have one shape) and any duplicate id are
    dropped, so nobody is counted twice and nobody is missing."""
    import numpy as np
    import torch
    from accelerate.utils import gather, pad_across_processes

    local = torch.as_tensor(np.ascontiguousarray(rows, dtype=np.int64)).to(state.device)
    everything = gather(pad_across_processes(local, dim=0, pad_index=-1)).cpu().numpy()
    everything = everything[everything[:, 0] >= 0]
    ids, first = np.unique(everything[:, 0], return_index=True)  # sorted, de-duplicated by user id
    everything = everything[first]
    wanted = np.asarray(expected_ids, dtype=np.int64)
    if len(wanted) == 0:
        return everything[:0]
    pos = np.searchsorted(ids, wanted)
    if len(ids) != len(np.unique(wanted)) or not np.array_equal(ids[np.minimum(pos, len(ids) - 1)], wanted):
        raise RuntimeError(f"gathered {len(ids)} users across {state.num_processes} processes, expected "
                           f"{len(np.unique(wanted))}")
    return everything[pos]


def shutdown(*, wait: bool) -> None:
    """Leave the process group before the interpreter exits (a no-op when none was joined).

    A gloo process that exits with its group still alive can abort during interpreter teardown ("terminate called
    without an active exception", pytorch/pytorch#190489), and torchrun then kills the others mid-write. `wait`
    first holds every process until all are done, so none leaves while the main one is still writing; use it only
    when every process reached the same point (success, or an interrupt they all agreed on)."""
    import sys

    if "torch" not in sys.modules:  # nothing imported torch, so nothing joined a group
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
