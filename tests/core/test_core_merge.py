import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from aepo.core import plan_merge


def test_zero_advantage_rows_are_replaced_first_and_spread_over_chunks():
    # 4 chunks of 4 rows; zero-advantage rows at 1, 2, 5, 9, 10, 11, 14.
    adv = torch.ones(16)
    zeros = [1, 2, 5, 9, 10, 11, 14]
    adv[zeros] = 0
    plan = plan_merge(adv, 4, num_chunks=4)
    rows = plan.replace_rows.tolist()
    assert sorted(r // 4 for r in rows) == [0, 1, 2, 3]  # one per chunk
    assert set(rows) <= set(zeros) and plan.displaced_nonzero == 0


def test_displaces_smallest_advantages_only_when_zeros_run_out():
    adv = torch.tensor([0.0, -2.0, 0.3, 1.5, -0.1, 0.0, 0.9, -3.0])
    plan = plan_merge(adv, 4, num_chunks=2)
    assert set(plan.replace_rows.tolist()) == {0, 5, 4, 2}
    assert plan.displaced_nonzero == 2


def test_replace_first_reproduces_the_authors_code():
    plan = plan_merge(torch.ones(8), 3, mode="replace_first")
    assert plan.replace_rows.tolist() == [0, 1, 2] and plan.displaced_nonzero == 3


def test_append_pads_to_the_batch_multiple():
    plan = plan_merge(torch.ones(16), 5, mode="append", batch_multiple=8)
    assert plan.append_rows == 5 and plan.pad_rows == 3
    assert (16 + plan.append_rows + plan.pad_rows) % 8 == 0
    assert plan.replace_rows.numel() == 0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="cannot place 9 extra rows into a batch of 8"):
        plan_merge(torch.zeros(8), 9)
    with pytest.raises(ValueError, match="cannot be cut into 3 equal chunks"):
        plan_merge(torch.zeros(8), 2, num_chunks=3)
    with pytest.raises(ValueError, match="unknown merge mode"):
        plan_merge(torch.zeros(8), 2, mode="shuffle")


@given(
    adv=st.lists(st.sampled_from([0.0, 0.0, 1.0, -1.0, 0.5, -0.25]), min_size=8, max_size=64),
    frac=st.floats(0, 1),
    chunks=st.sampled_from([1, 2, 4, 8]),
)
def test_no_nonzero_row_lost_while_zero_rows_remain(adv, frac, chunks):
    adv = adv[: len(adv) - len(adv) % chunks]
    a = torch.tensor(adv)
    k = int(frac * len(adv))
    plan = plan_merge(a, k, num_chunks=chunks)
    rows = plan.replace_rows.tolist()
    assert len(rows) == len(set(rows)) == k
    num_zero = int((a == 0).sum())
    assert plan.displaced_nonzero == max(0, k - num_zero)
    # Spread: per-chunk counts of replaced zero rows differ by at most one unless a chunk
    # ran out of zero rows.
    size = len(adv) // chunks
    zero_rows = [r for r in rows if a[r] == 0]
    per_chunk = [sum(1 for r in zero_rows if r // size == c) for c in range(chunks)]
    available = [int((a[c * size : (c + 1) * size] == 0).sum()) for c in range(chunks)]
    unsaturated = [n for n, cap in zip(per_chunk, available, strict=True) if n < cap]
    if unsaturated:
        assert max(per_chunk) - min(unsaturated) <= 1
