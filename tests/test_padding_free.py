"""Padding-free compute is exact: a batch cut to its longest row, item scores at real slots only, the full-softmax
losses in chunks of rows, and evaluation in length-sorted batches give today's losses, gradients and ranks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import slmrec_cli.evaluation.evaluate as evaluate
import slmrec_cli.models.scoring as scoring
from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.config.models import LLMRecConfig, SASRecConfig
from slmrec_cli.data import left_pad, load_dataset, pad_to_longest, trim_windows, window_inputs_targets
from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.losses import l_kd, l_kd_items
from slmrec_cli.distill.model import Distiller
from slmrec_cli.evaluation.evaluate import eval_batches, rank_split
from slmrec_cli.evaluation.ranking import pessimistic_ranks
from slmrec_cli.models.build import build_model
from slmrec_cli.models.packing import pack_layout
from slmrec_cli.models.sasrec import SASRec
from slmrec_cli.models.scoring import item_logits, next_item_ce
from tests.helpers import make_dataset

MAX_LEN = 12
HISTORIES = [[3, 7, 9, 2, 11], [5, 6], [1, 8, 3], [12, 13, 14, 4]]  # every one far shorter than MAX_LEN + 1


def padded_windows() -> torch.Tensor:
    return torch.from_numpy(left_pad([np.array(h) for h in HISTORIES], MAX_LEN + 1))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def loss_and_grads(model, loss_fn, windows):
    model.zero_grad()
    loss = loss_fn(*window_inputs_targets(windows))
    loss.backward()
    return loss.detach(), grads(model)


def assert_same(a, b, tol=1e-6):
    (la, ga), (lb, gb) = a, b
    assert la.item() == pytest.approx(lb.item(), abs=tol)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=tol, rtol=1e-5, msg=name)


def test_trim_cuts_only_the_all_padding_columns():
    w = padded_windows()
    t = trim_windows(w)
    assert t.shape[1] == max(len(h) for h in HISTORIES)  # inputs reach back to the longest history's first item
    assert torch.equal(t, w[:, -t.shape[1]:]) and (w[:, : -t.shape[1]] == 0).all()
    assert pad_to_longest([np.array([1, 2]), np.array([3])], MAX_LEN).shape == (2, 2)
    assert pad_to_longest([np.arange(1, 40)], MAX_LEN).shape == (1, MAX_LEN)


def sasrec_ce_padded(model, inputs, targets):
    """The loss as slmrec computed it before: logits at every slot, padding dropped by ignore_index."""
    states = model.encode(inputs)
    return F.cross_entropy(item_logits(states.reshape(-1, states.shape[-1]), model.item_table()),
                           targets.reshape(-1), ignore_index=0)


def test_sasrec_trimmed_equals_padded():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=20, dim=16, layers=2, heads=2, max_len=MAX_LEN, dropout=0.0))
    w = padded_windows()
    assert_same(loss_and_grads(model, model, trim_windows(w)), loss_and_grads(model, lambda i, t: sasrec_ce_padded(
        model, i, t), w))


def tiny_llm(layers: int, seed: int, table: torch.Tensor):
    torch.manual_seed(seed)
    cfg = LLMRecConfig(n_items=len(table) - 1, id_dim=table.shape[1], hidden=0, layers=layers, max_len=MAX_LEN,
                       lora_r=4, lora_dropout=0.0)
    return build_model(cfg, "tiny-random", table)[0]


def test_teacher_trimmed_equals_padded():
    table = torch.randn(21, 16, generator=torch.Generator().manual_seed(1))
    model = tiny_llm(2, 0, table).train()
    w = padded_windows()
    assert_same(loss_and_grads(model, model, trim_windows(w)), loss_and_grads(model, model, w))


def distiller(align: str) -> Distiller:
    """A 2-layer student distilled from a 4-layer teacher with every term on."""
    table = torch.randn(21, 16, generator=torch.Generator().manual_seed(1))
    teacher, student = tiny_llm(4, 0, table).eval(), tiny_llm(2, 1, table)
    opts = DistillOptions(student_layers=2, blocks=2, lambda_cos=1.0, lambda_norm=0.1, lambda_ms=0.1, lambda_kd=0.5,
                          align=align)
    return Distiller(student, teacher, block_layers(4, 2, 2), opts).train()


@pytest.mark.parametrize("align", ["last", "all"])
def test_student_with_every_term_trimmed_equals_padded(align):
    model = distiller(align)
    w = padded_windows()

    def loss(items, targets):
        total, terms = model(items, targets)
        assert all(float(terms[k]) != 0 for k in ("d_cos", "d_norm", "l_ms", "l_kd"))  # every term is on
        return total

    assert_same(loss_and_grads(model, loss, trim_windows(w)), loss_and_grads(model, loss, w))


def unpacked(*models):
    """The left-padded decoder batch (the path before packing) for these LLM models."""
    for m in models:
        m.packed = False


def test_teacher_packed_equals_left_padded():
    """Packing (the decoder on real tokens only, several windows to a row) gives the left-padded batch's losses and
    gradients, for causal targets and the last-token target alike."""
    table = torch.randn(21, 16, generator=torch.Generator().manual_seed(1))
    model = tiny_llm(2, 0, table).train()
    w = padded_windows()
    inputs, targets = window_inputs_targets(w)
    assert len(pack_layout((inputs != 0).sum(1).tolist(), inputs.shape[1], 1, 0).src) < len(inputs)  # rows shared
    packed = loss_and_grads(model, model, trim_windows(w))
    packed_last = loss_and_grads(model, lambda i, t: model(i, t[:, -1]), w)
    unpacked(model)
    assert_same(packed, loss_and_grads(model, model, w))
    assert_same(packed_last, loss_and_grads(model, lambda i, t: model(i, t[:, -1]), w))


@pytest.mark.parametrize("align", ["last", "all"])
def test_student_with_every_term_packed_equals_left_padded(align):
    model = distiller(align)
    w = padded_windows()

    def loss(items, targets):
        return model(items, targets)[0]

    packed = loss_and_grads(model, loss, trim_windows(w))
    unpacked(model.teacher, model.student)
    assert_same(packed, loss_and_grads(model, loss, w))


def test_pack_layout_places_every_real_token_once():
    lengths, t, p_len, s_len = [5, 2, 3, 4, 1, 1], 6, 2, 1
    a, b = pack_layout(lengths, t, p_len, s_len), pack_layout(lengths, t, p_len, s_len)
    for name in ("src", "pos", "last", "history"):  # a pure function of the lengths
        assert torch.equal(getattr(a, name), getattr(b, name))
    cap = p_len + max(lengths) + s_len
    assert a.src.shape[1] == cap and a.src.shape[0] < len(lengths)
    width = p_len + t + s_len
    flat_src, flat_pos = a.src.reshape(-1), a.pos.reshape(-1)
    for ex, length in enumerate(lengths):
        real = [ex * width + j for j in range(p_len)] + [ex * width + p_len + t - length + j for j in range(length)] \
            + [ex * width + p_len + t + j for j in range(s_len)]
        slots = [int(i) for i in (flat_src[:, None] == torch.tensor(real)[None]).any(1).nonzero()]
        placed = [int(flat_src[i]) for i in slots if int(flat_pos[i]) < len(real) and int(flat_src[i]) in real]
        assert sorted(set(placed)) == real  # every real token of the example is in the packed batch
        assert int(flat_src[a.last[ex]]) == real[-1] and int(flat_pos[a.last[ex]]) == len(real) - 1
        assert [int(flat_src[i]) for i in a.history[ex, t - length:]] == real[p_len:p_len + length]


def test_chunked_ce_equals_one_chunk(monkeypatch):
    g = torch.Generator().manual_seed(0)
    users = torch.randn(40, 8, generator=g, requires_grad=True)
    table = torch.randn(301, 8, generator=g, requires_grad=True)
    targets = torch.randint(1, 301, (40,), generator=g)
    targets[::7] = 0  # padding rows stay out of the mean
    ref = F.cross_entropy(item_logits(users, table), targets, ignore_index=0)
    ref_grads = torch.autograd.grad(ref, (users, table))
    for rows, cols in ((1, None), (6, None), (40, None), (6, 50), (40, 7), (3, 301)):
        value = next_item_ce(users, table, targets, rows=rows, cols=cols)
        assert value.item() == pytest.approx(ref.item(), rel=1e-6)
        for got, want in zip(torch.autograd.grad(value, (users, table)), ref_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        assert next_item_ce(users, table, targets, rows=6, cols=50).item() == pytest.approx(ref.item(), rel=1e-6)
    monkeypatch.setattr(scoring, "LOGITS_PER_CHUNK", 301 * 6)  # the default chunk follows the catalogue
    monkeypatch.setattr(scoring, "ROWS_PER_CHUNK", 4)
    assert scoring.chunk_shape(40, 301) == (6, 301)  # whole rows while at least ROWS_PER_CHUNK of them fit
    monkeypatch.setattr(scoring, "ROWS_PER_CHUNK", 10)
    assert scoring.chunk_shape(40, 301) == (10, 180)  # else blocks of items


def test_chunked_l_kd_equals_one_chunk(monkeypatch):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(30, 8, generator=g, requires_grad=True)
    teacher, table = torch.randn(30, 8, generator=g), torch.randn(101, 8, generator=g)
    ref = l_kd(item_logits(student, table), item_logits(teacher, table), 2.0)
    (ref_grad,) = torch.autograd.grad(ref, student)
    monkeypatch.setattr(scoring, "LOGITS_PER_CHUNK", 101 * 4)  # 4 rows a chunk: 8 chunks
    value = l_kd_items(student, teacher, table, 2.0)
    assert value.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(torch.autograd.grad(value, student)[0], ref_grad, atol=1e-7, rtol=1e-5)


def test_chunks_never_hold_every_slots_logits(monkeypatch):
    """The largest float tensor the CE's forward and backward create is one chunk's logits, not [slots, items]."""
    monkeypatch.setattr(scoring, "LOGITS_PER_CHUNK", 2000 * 5)
    users = torch.randn(100, 4, requires_grad=True)
    table = torch.randn(2000, 4, requires_grad=True)
    biggest = []

    class Spy(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor):
                biggest.append(out.numel())
            return out

    with Spy():
        next_item_ce(users, table, torch.randint(1, 2000, (100,))).backward()
    assert max(biggest) <= 2000 * 5


def reference_ranks(model, data, split, max_len):
    """One user at a time, padded to max_len, the history masked item by item: how ranks were computed before."""
    out = {"sampled": [], "full": []}
    targets = data.split_target(split)
    with torch.no_grad():
        for u in range(data.n_users):
            inp = data.split_input(split, u)
            scores = model.score_all(torch.from_numpy(left_pad([inp], max_len))).float()[0]
            pos = scores[targets[u]][None]
            negs = torch.from_numpy(data.negatives[u])
            out["sampled"].append(int(pessimistic_ranks(pos, scores[negs][None], (negs != 0)[None])[0]))
            valid = torch.ones_like(scores, dtype=torch.bool)
            valid[0] = valid[targets[u]] = False
            valid[torch.as_tensor(inp[inp != targets[u]], dtype=torch.long)] = False
            out["full"].append(int(pessimistic_ranks(pos, scores[None], valid[None])[0]))
    return {p: np.array(r) for p, r in out.items()}


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_evaluation_ranks_equal_one_user_at_a_time(tmp_path, batch_size):
    data = load_dataset(make_dataset(tmp_path, length=14))
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=data.n_items, dim=16, layers=1, heads=2, max_len=10, dropout=0.0)).eval()
    ref = reference_ranks(model, data, "test", 10)
    res = rank_split(model.score_all, data, "test", max_len=10, batch_size=batch_size)
    for p in ("sampled", "full"):
        assert np.array_equal(res[p].user_ids, np.arange(data.n_users))
        assert np.array_equal(res[p].ranks, ref[p]), p
    users = np.array([5, 2, 9, 0])  # a subset, in the caller's order
    sub = rank_split(model.score_all, data, "test", max_len=10, batch_size=batch_size, users=users)
    assert np.array_equal(sub["sampled"].ranks, ref["sampled"][users])


def test_evaluation_holds_a_bounded_number_of_scores(tmp_path, monkeypatch):
    """However large --eval-batch, a batch scores at most SCORES_PER_BATCH items x users; the ranks do not change."""
    data = load_dataset(make_dataset(tmp_path, length=14))
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=data.n_items, dim=16, layers=1, heads=2, max_len=10, dropout=0.0)).eval()
    ref = rank_split(model.score_all, data, "test", max_len=10, batch_size=1000)
    monkeypatch.setattr(evaluate, "SCORES_PER_BATCH", 3 * (data.n_items + 1))
    batches = eval_batches(data, "test", np.arange(data.n_users), 1000, 10)
    assert max(len(b) for b in batches) == 3 and sum(len(b) for b in batches) == data.n_users
    lengths = [int(data.lengths[b].max()) for b in batches]
    assert lengths == sorted(lengths)  # users of similar length share a batch
    capped = rank_split(model.score_all, data, "test", max_len=10, batch_size=1000)
    for p in ("sampled", "full"):
        assert np.array_equal(capped[p].ranks, ref[p].ranks)
