import math

import pytest
import torch

from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.losses import d_cos, d_norm, l_kd, l_ms
from slmrec_cli.errors import SlmrecError
from slmrec_cli.models.scoring import next_item_ce


def test_d_cos_hand_computed():
    s = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # 2 blocks, batch 1
    t = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])
    assert d_cos(s, t).item() == pytest.approx((0.0 + 1.0) / 2)


def test_d_norm_hand_computed():
    s = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0]], [[3.0, 4.0]]])
    assert d_norm(s, t, "squared").item() == pytest.approx((4.0 + 25.0) / 2)
    assert d_norm(s, t, "l2").item() == pytest.approx((2.0 + 5.0) / 2)
    assert d_norm(s, t, "normalized").item() == pytest.approx((4.0 / 1.0 + 25.0 / 25.0) / 2)


def test_equal_features_are_perfectly_aligned():
    t = torch.randn(4, 3, 8)
    assert d_cos(t.clone(), t).item() == pytest.approx(1.0)
    for kind in ("squared", "l2", "normalized"):
        assert d_norm(t.clone(), t, kind).item() == pytest.approx(0.0, abs=1e-5)


def test_ce_and_l_ms_hand_computed():
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # row 0 = padding
    user = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([1])
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))  # padding excluded
    assert next_item_ce(user, table, target).item() == pytest.approx(expected)
    other = torch.tensor([[0.0, 0.0]])
    assert l_ms([user, other], table, target).item() == pytest.approx((expected + math.log(2)) / 2)
    assert l_ms([], table, target).item() == 0.0


def test_l_kd_hand_computed():
    inf = float("-inf")
    student = torch.tensor([[inf, 0.0, 0.0]])  # column 0 = padding, never a class
    teacher = torch.tensor([[inf, math.log(3.0), 0.0]])  # p_teacher = (3/4, 1/4), p_student = (1/2, 1/2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert l_kd(student, teacher).item() == pytest.approx(kl)
    p = math.sqrt(3.0) / (math.sqrt(3.0) + 1.0)  # τ = 2 softens the teacher to (√3, 1) / (√3 + 1)
    soft = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert l_kd(student, teacher, 2.0).item() == pytest.approx(4.0 * soft)  # τ² keeps the gradient scale
    assert l_kd(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_l_kd_pushes_only_the_student():
    student = torch.randn(3, 6, requires_grad=True)
    teacher = torch.randn(3, 6, requires_grad=True)
    l_kd(student, teacher, 2.0).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None


@pytest.mark.parametrize("m, n, b, pairs", [
    (8, 4, 4, [(2, 1), (4, 2), (6, 3), (8, 4)]),
    (30, 6, 3, [(10, 2), (20, 4), (30, 6)]),
    (8, 2, 2, [(4, 1), (8, 2)]),
])
def test_block_mapping(m, n, b, pairs):
    assert block_layers(m, n, b) == pairs


@pytest.mark.parametrize("m, n, b, word", [(8, 8, 4, "fewer"), (8, 6, 4, "divide"), (30, 4, 4, "divide"),
                                           (8, 4, 0, "at least")])
def test_block_mapping_bad_input(m, n, b, word):
    with pytest.raises(SlmrecError, match=word):
        block_layers(m, n, b)
