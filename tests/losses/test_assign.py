"""YOLOv5 target assignment on placed boxes: anchor ratio, neighbour cells, borders and levels."""

from __future__ import annotations

import torch

from effteacher.losses.assign import assign_candidates, assign_targets


def cells(lt) -> set[tuple[int, int, int]]:
    return {(int(a), int(j), int(i)) for a, j, i in zip(lt.a, lt.gj, lt.gi)}


def test_assignment_ratio_and_neighbours() -> None:
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]]])  # cells, one level 8x8
    # centre (2.4, 5.6) cells, size 1.5 cells: anchors 0 and 1 match (ratios 1.5, 1.33), 2 does not (5.3)
    t = torch.tensor([[0, 1, 2.4 / 8, 5.6 / 8, 1.5 / 8, 1.5 / 8]])
    (lt,) = assign_targets(t, anchors, [(8, 8)])
    # centre cell (5, 2), left neighbour (x frac 0.4 < 0.5) and lower neighbour (y frac 0.6)
    assert cells(lt) == {(a, j, i) for a in (0, 1) for j, i in ((5, 2), (5, 1), (6, 2))}
    assert len(lt.a) == 6 and torch.all(lt.rows == 0) and torch.all(lt.b == 0)
    left = (lt.gi == 1) & (lt.a == 0)
    torch.testing.assert_close(lt.tbox[left][0], torch.tensor([1.4, 0.6, 1.5, 1.5]))
    torch.testing.assert_close(lt.anchors[lt.a == 1][0], torch.tensor([2.0, 2.0]))


def test_assignment_border_and_multiple_levels() -> None:
    anchors = torch.tensor([[[1.0, 1.0]] * 3, [[4.0, 4.0]] * 3])
    # centre x at 0.6 cells (no left neighbour: x <= 1, takes the right one), y frac .2 -> upper
    t = torch.tensor([[1, 0, 0.6 / 4, 2.2 / 4, 1.0 / 4, 1.0 / 4], [0, 0, 0.5, 0.5, 0.05, 0.05]])
    l0, l1 = assign_targets(t, anchors, [(4, 4), (2, 2)])
    first = l0.rows == 0
    assert {(int(j), int(i)) for j, i in zip(l0.gj[first], l0.gi[first])} == {(2, 0), (2, 1), (1, 0)}
    assert torch.all(l0.b[first] == 1)
    # target 1 is 0.2 cells at level 0 (ratio 5 vs anchor 1): unmatched. At level 1 (2x2) the sizes
    # are 0.1 and 0.5 cells against anchor 4 (ratios 40 and 8): nothing matches there.
    assert not torch.any(l0.rows == 1) and l1.rows.numel() == 0


def test_candidates_have_fixed_sizes_and_mask_the_positives() -> None:
    # sizes depend on the number of targets only (no data-dependent shape, hence no GPU sync); the valid rows
    # are assign_targets' positives in the same order
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]], [[4.0, 4.0]] * 3])
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        t = torch.cat([torch.randint(0, 2, (7, 1), generator=g).float(), torch.zeros(7, 1),
                       torch.rand(7, 4, generator=g) * 0.5 + 0.05], 1)
        cands = assign_candidates(t, anchors, [(8, 8), (4, 4)])
        for c, p in zip(cands, assign_targets(t, anchors, [(8, 8), (4, 4)])):
            assert all(x.shape[0] == 5 * 3 * 7 for x in c)
            assert int(c.valid.sum()) == p.b.numel()
            for name in ("b", "a", "gj", "gi", "tbox", "rows"):
                torch.testing.assert_close(getattr(c, name)[c.valid], getattr(p, name))
            assert torch.all((c.gi >= 0) & (c.gj >= 0))
