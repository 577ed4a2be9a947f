"""Train a narrow zoo topology on the shapes benchmark: ``python -m models.train_shapes NAME``.

The recipe: AdamW with a one-cycle learning rate, label smoothing 0.05, batch size 32,
and every epoch a fresh, never-repeated draw of the synthetic benchmark (seed
``1000 * seed + epoch + 1``, never :data:`~canonc.xai.data.TEST_SEED`), two CPU cores,
channels-last tensors (faster small convolutions on the CPU; VGG-13-BN and ResNet-18 were
trained in the default layout, and their recipes say so). Models of many small
convolutions (EfficientNet-B0, DenseNet-121) run about as fast on two threads as on one,
so their recipes split the cores into two data-parallel processes of one thread each,
each training on its half of every batch and averaging gradients with the other, with
the fused AdamW step. At the end the model is scored on 1024 held-out test images and
written to ``models/checkpoints/NAME.safetensors`` with a JSON sidecar (test accuracy,
wall and CPU time of training, seed, recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file
from torch import nn
from torchvision.models import efficientnet

from canonc.codegen import atomic_write
from canonc.xai.data import TEST_SEED, Benchmark, shapes_benchmark

from .shapes import ARCHITECTURES, CHECKPOINTS, checkpoint_paths

THREADS = 2
TEST_IMAGES = 1024
VALIDATION_SEED = 2_000_003  # per-epoch progress only; the test split is scored once, at the end
VALIDATION_IMAGES = 512  # shared among the processes


@dataclass(frozen=True)
class Recipe:
    """How one model is trained (recorded in its sidecar)."""

    epochs: int
    images_per_epoch: int
    lr: float
    batch_size: int = 32
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    channels_last: bool = True
    processes: int = 1
    fused_adamw: bool = False
    zero_init_residual: bool = False


RECIPES: dict[str, Recipe] = {
    "vgg13_bn-shapes": Recipe(epochs=4, images_per_epoch=16384, lr=3e-3, channels_last=False),
    "resnet18-shapes": Recipe(epochs=6, images_per_epoch=16384, lr=3e-3, channels_last=False),
    "efficientnet_b0-shapes": Recipe(epochs=3, images_per_epoch=16384, lr=5e-3, processes=2, fused_adamw=True,
                                     zero_init_residual=True),
    "densenet121-shapes": Recipe(epochs=3, images_per_epoch=16384, lr=3e-3, processes=2, fused_adamw=True),
}


def accuracy(model: nn.Module, data: Benchmark, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``data``."""
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(data.images[i:i + batch_size]).argmax(1) == data.labels[i:i + batch_size]).sum())
                   for i in range(0, len(data), batch_size))
    return hits / len(data)


def shard(images: int, processes: int, rank: int) -> tuple[int, int]:
    """The ``(start, count)`` of the images of one epoch's draw that process ``rank`` trains on."""
    count = images // processes
    return rank * count, count


def _average(tensors: list[torch.Tensor], processes: int) -> None:
    """Replace each tensor by its mean over the processes (one all-reduce of one flat buffer)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat.div_(processes)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def _rank_spread(model: nn.Module) -> float:
    """Largest difference between any process's parameters and process 0's (0 when they stayed in step)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    first = flat.clone()
    dist.broadcast(first, 0)
    spread = (flat - first).abs().max().reshape(1)
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    return float(spread)


def zero_init_residual(model: nn.Module) -> None:
    """Start every residual MBConv block of ``model`` as the identity: zero its last BN's scale.

    The branch then adds nothing until training moves that scale, which lets a deep narrow
    network learn from the first steps (the "zero-init residual" of Goyal et al. 2017).
    """
    for block in model.modules():
        if isinstance(block, efficientnet.MBConv) and block.use_res_connect:
            nn.init.zeros_(block.block[-1][1].weight)


def _fit(name: str, recipe: Recipe, seed: int, rank: int = 0, log=print) -> tuple[nn.Module, dict]:
    """Train ``name`` as process ``rank`` of ``recipe.processes``; return the model and its training figures.

    Every process starts from the same initialisation, trains on its own shard of each
    epoch's draw (``recipe.batch_size / processes`` images per step) and averages the
    gradients with the others before each optimiser step, so the parameters stay identical;
    at the end the BN running statistics are averaged over the processes too.
    """
    processes = recipe.processes
    torch.manual_seed(seed)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = ARCHITECTURES[name]().to(memory_format=memory_format)
    if recipe.zero_init_residual:
        zero_init_residual(model)
    if rank:
        torch.manual_seed(10_000 * rank + seed)  # each process its own dropout draws
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=recipe.fused_adamw)
    start, count = shard(recipe.images_per_epoch, processes, rank)
    batch = recipe.batch_size // processes
    steps = count // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    order = torch.Generator().manual_seed(10_000 * rank + seed)
    val_start, val_count = shard(VALIDATION_IMAGES, processes, rank)
    validation = shapes_benchmark(val_count, seed=VALIDATION_SEED, start=val_start)
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(recipe.epochs):
        data = shapes_benchmark(count, seed=1000 * seed + epoch + 1, start=start)
        perm = torch.randperm(count, generator=order)
        model.train()
        total = 0.0
        for i in range(steps):
            idx = perm[i * batch:(i + 1) * batch]
            loss = loss_fn(model(data.images[idx].contiguous(memory_format=memory_format)), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if processes > 1:
                _average([p.grad for p in params], processes)
            opt.step()
            schedule.step()
            total += loss.item()
        progress = torch.tensor([total / steps, accuracy(model, validation)])
        if processes > 1:
            _average([progress], processes)
        if rank == 0:
            log(f"{name} epoch {epoch + 1}/{recipe.epochs}: loss {progress[0]:.3f}, validation accuracy "
                f"{progress[1]:.3f}, {time.perf_counter() - wall:.0f} s wall, "
                f"{time.process_time() - cpu:.0f} s CPU")
    cpu = torch.tensor([time.process_time() - cpu], dtype=torch.float64)
    figures = {"threads": torch.get_num_threads(), "processes": processes}
    if processes > 1:
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        _average(buffers, processes)
        dist.all_reduce(cpu)
        figures["rank_parameter_spread"] = _rank_spread(model)
    figures["train_cpu_s"] = round(float(cpu), 1)
    return model.eval(), figures


def _process(rank: int, name: str, recipe: Recipe, seed: int, threads: int, folder: str) -> None:
    """One data-parallel training process; process 0 writes the trained state and figures to ``folder``."""
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=recipe.processes)
    try:
        model, figures = _fit(name, recipe, seed, rank, log=partial(print, flush=True))
        if rank == 0:
            torch.save({"state": model.state_dict(), "figures": figures}, f"{folder}/trained.pt")
    finally:
        dist.destroy_process_group()


def train(name: str, recipe: Recipe, seed: int = 0, threads: int = THREADS, log=print) -> tuple[nn.Module, dict]:
    """Train ``name`` by ``recipe`` on ``threads`` cores; return the model in eval mode and its sidecar record.

    With ``recipe.processes > 1`` the cores are split among that many data-parallel
    processes, for models whose many small convolutions a second thread barely speeds up.
    """
    if not 0 <= seed < 1000:
        raise ValueError(f"seed {seed}: use 0..999 so the training seeds never meet the test or validation seed")
    if recipe.batch_size % recipe.processes or recipe.images_per_epoch % recipe.processes:
        raise ValueError(f"{recipe.processes} processes must divide the batch size and the images per epoch")
    wall = time.perf_counter()
    if recipe.processes == 1:
        torch.set_num_threads(threads)
        model, figures = _fit(name, recipe, seed, log=log)
    else:
        with tempfile.TemporaryDirectory(prefix="canonc-train-") as folder:
            mp.spawn(_process, args=(name, recipe, seed, max(1, threads // recipe.processes), folder),
                     nprocs=recipe.processes)
            trained = torch.load(f"{folder}/trained.pt")
        model = ARCHITECTURES[name]()
        model.load_state_dict(trained["state"])
        model.eval()
        figures = trained["figures"]
    wall = time.perf_counter() - wall
    torch.set_num_threads(threads)
    test = accuracy(model, shapes_benchmark(TEST_IMAGES, seed=TEST_SEED))
    record = {"name": name, "test_accuracy": test, "test_images": TEST_IMAGES, "test_seed": TEST_SEED,
              "train_wall_s": round(wall, 1), **figures, "seed": seed,
              "params": sum(p.numel() for p in model.parameters()), "recipe": asdict(recipe),
              "torch": torch.__version__}
    return model, record


def save(name: str, model: nn.Module, record: dict) -> None:
    """Write the weights (safetensors) and the JSON sidecar of ``name`` atomically."""
    weights, side = checkpoint_paths(name)
    CHECKPOINTS.mkdir(exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
    atomic_write(side, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))


def main(argv: list[str] | None = None) -> int:
    """Train the named model and write its checkpoint; exit 1 when it misses the accuracy bar."""
    p = argparse.ArgumentParser(prog="python -m models.train_shapes", description=__doc__.splitlines()[0])
    p.add_argument("name", choices=list(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-accuracy", type=float, default=0.95, help="write the checkpoint only above this")
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads (default %(default)s)")
    args = p.parse_args(argv)
    model, record = train(args.name, RECIPES[args.name], args.seed, args.threads)
    print(json.dumps(record))
    if record["test_accuracy"] < args.min_accuracy:
        print(f"{args.name}: test accuracy {record['test_accuracy']:.3f} < {args.min_accuracy}; not written",
              file=sys.stderr)
        return 1
    save(args.name, model, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
