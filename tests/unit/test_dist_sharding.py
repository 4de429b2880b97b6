"""The pure parts of serl.distributed: how games and chunks are split over ranks, how metrics merge.
(The collective parts run in tests/integration/test_distributed.py under torchrun.)"""

from __future__ import annotations

import pytest

from serl.distributed import SINGLE, Dist, merge_counts, rank_device


def test_shard_gives_contiguous_blocks_that_cover_every_game_once():
    # 5 games over 2 ranks: [0, 3) and [3, 5); earlier ranks take the larger blocks
    assert [Dist(rank=r, world_size=2).shard(5) for r in range(2)] == [(0, 3), (3, 5)]
    assert [Dist(rank=r, world_size=4).shard(2) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    for n in range(0, 12):
        for w in range(1, 6):
            blocks = [Dist(rank=r, world_size=w).shard(n) for r in range(w)]
            covered = [i for lo, hi in blocks for i in range(lo, hi)]
            assert covered == list(range(n))
            sizes = [hi - lo for lo, hi in blocks]
            assert max(sizes) - min(sizes) <= 1
    assert SINGLE.shard(7) == (0, 7)


def test_deal_is_round_robin_with_dummies_in_the_last_round():
    # 5 chunks over 2 ranks: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and a dummy round
    assert Dist(rank=0, world_size=2).deal(5) == [0, 2, 4]
    assert Dist(rank=1, world_size=2).deal(5) == [1, 3, None]
    assert Dist(rank=2, world_size=3).deal(1) == [None]
    assert Dist(rank=0, world_size=2).deal(0) == []
    assert SINGLE.deal(3) == [0, 1, 2]
    for n in range(0, 10):
        for w in range(1, 5):
            dealt = [Dist(rank=r, world_size=w).deal(n) for r in range(w)]
            assert len({len(d) for d in dealt}) == 1  # every rank runs the same number of rounds
            real = sorted(c for d in dealt for c in d if c is not None)
            assert real == list(range(n))


def test_merge_counts_sums_counts_and_takes_the_slowest_rank_for_seconds():
    merged = merge_counts([
        {"tokens_generated": 10, "generate_s": 2.0, "judge/requests": 3.0, "time/judge_s": 1.0},
        {"tokens_generated": 5, "generate_s": 3.5, "judge/requests": 1.0, "env_errors": 1},
    ])
    assert merged == {"env_errors": 1, "generate_s": 3.5, "judge/requests": 4.0, "time/judge_s": 1.0, "tokens_generated": 15}


def test_rank_device():
    assert rank_device(SINGLE, "cuda:1") == "cuda:1"
    assert rank_device(Dist(rank=1, world_size=2, local_rank=1), "cpu") == "cpu"
    with pytest.raises(ValueError, match="device=cuda"):
        rank_device(Dist(rank=1, world_size=2, local_rank=1), "cuda:0")
