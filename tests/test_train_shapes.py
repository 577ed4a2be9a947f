"""The training recipe's data-parallel path: shards, processes in step, refused splits."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from models.shapes import ARCHITECTURES
from models.train_shapes import Recipe, _average, shard, train


def _rank_tensors(rank: int) -> list[torch.Tensor]:
    """Each process's own tensors: a channels-last 4-D one (like conv gradients) and a vector."""
    g = torch.Generator().manual_seed(rank)
    return [torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last), torch.randn(7, generator=g)]


def _average_in_process(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        tensors = _rank_tensors(rank)
        _average(tensors, 2)
        torch.save([t.contiguous() for t in tensors], f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_shards_cover_each_image_of_the_epoch_once(processes):
    taken = []
    for rank in range(processes):
        start, count = shard(1024, processes, rank)
        taken += range(start, start + count)
    assert sorted(taken) == list(range(1024))


def test_average_is_the_elementwise_mean_over_the_processes(tmp_path):
    mp.spawn(_average_in_process, args=(str(tmp_path),), nprocs=2)
    expected = [(a + b) / 2 for a, b in zip(_rank_tensors(0), _rank_tensors(1))]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert all(torch.allclose(g, e, atol=1e-7, rtol=0) for g, e in zip(got, expected))


def test_two_processes_stay_in_step_and_train():
    recipe = Recipe(epochs=1, images_per_epoch=128, lr=3e-3, processes=2, fused_adamw=True)
    model, record = train("vgg13_bn-shapes", recipe, seed=0)
    assert (record["processes"], record["threads"]) == (2, 1)
    assert record["rank_parameter_spread"] == 0.0  # gradients averaged: both processes took the same steps
    torch.manual_seed(0)
    start = ARCHITECTURES["vgg13_bn-shapes"]()
    moved = [(p - q).abs().max().item() for p, q in zip(model.parameters(), start.parameters())]
    assert min(moved) > 0 and all(torch.isfinite(p).all() for p in model.parameters())
    bn = model.features[1]
    assert bn.running_mean.abs().max() > 0 and not model.training


def test_processes_must_divide_the_batch():
    with pytest.raises(ValueError, match="must divide the batch size"):
        train("vgg13_bn-shapes", Recipe(epochs=1, images_per_epoch=96, lr=1e-3, processes=3, batch_size=32))
