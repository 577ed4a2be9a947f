"""Train a narrow zoo topology on the shapes benchmark: ``python -m models.train_shapes NAME``.

The recipe: AdamW with a one-cycle learning rate, label smoothing 0.05, batch size 32,
and every epoch a fresh, never-repeated draw of the synthetic benchmark (seed
``1000 * seed + epoch + 1``, never :data:`~canonc.xai.data.TEST_SEED`), two torch
threads, channels-last tensors (faster small convolutions on the CPU; VGG-13-BN and
ResNet-18 were trained in the default layout, and their recipes say so). At the end the model is scored on 1024 held-out test images and written to
``models/checkpoints/NAME.safetensors`` with a JSON sidecar (test accuracy, wall and CPU
time of training, seed, recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import save_file
from torch import nn

from canonc.codegen import atomic_write
from canonc.xai.data import TEST_SEED, Benchmark, shapes_benchmark

from .shapes import ARCHITECTURES, CHECKPOINTS, checkpoint_paths

THREADS = 2
TEST_IMAGES = 1024
VALIDATION_SEED = 2_000_003  # per-epoch progress only; the test split is scored once, at the end


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


RECIPES: dict[str, Recipe] = {
    "vgg13_bn-shapes": Recipe(epochs=4, images_per_epoch=16384, lr=3e-3, channels_last=False),
    "resnet18-shapes": Recipe(epochs=6, images_per_epoch=16384, lr=3e-3, channels_last=False),
    "efficientnet_b0-shapes": Recipe(epochs=6, images_per_epoch=16384, lr=3e-3),
    "densenet121-shapes": Recipe(epochs=3, images_per_epoch=16384, lr=3e-3),
}


def accuracy(model: nn.Module, data: Benchmark, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``data``."""
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(data.images[i:i + batch_size]).argmax(1) == data.labels[i:i + batch_size]).sum())
                   for i in range(0, len(data), batch_size))
    return hits / len(data)


def train(name: str, recipe: Recipe, seed: int = 0, log=print) -> tuple[nn.Module, dict]:
    """Train ``name`` by ``recipe``; return the model in eval mode and its sidecar record."""
    if not 0 <= seed < 1000:
        raise ValueError(f"seed {seed}: use 0..999 so the training seeds never meet the test or validation seed")
    torch.manual_seed(seed)
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = ARCHITECTURES[name]().to(memory_format=memory_format)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * (recipe.images_per_epoch // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    order = torch.Generator().manual_seed(seed)
    validation = shapes_benchmark(512, seed=VALIDATION_SEED)
    wall, cpu = time.perf_counter(), time.process_time()
    for epoch in range(recipe.epochs):
        data = shapes_benchmark(recipe.images_per_epoch, seed=1000 * seed + epoch + 1)
        perm = torch.randperm(len(data), generator=order)
        model.train()
        total = 0.0
        for i in range(len(data) // recipe.batch_size):
            idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            loss = loss_fn(model(data.images[idx].contiguous(memory_format=memory_format)), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item()
        log(f"{name} epoch {epoch + 1}/{recipe.epochs}: loss {total / (i + 1):.3f}, validation accuracy "
            f"{accuracy(model, validation):.3f}, {time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s CPU")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    test = accuracy(model, shapes_benchmark(TEST_IMAGES, seed=TEST_SEED))
    record = {"name": name, "test_accuracy": test, "test_images": TEST_IMAGES, "test_seed": TEST_SEED,
              "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "threads": torch.get_num_threads(),
              "seed": seed, "params": sum(p.numel() for p in model.parameters()), "recipe": asdict(recipe),
              "torch": torch.__version__}
    return model.eval(), record


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
    torch.set_num_threads(args.threads)
    model, record = train(args.name, RECIPES[args.name], args.seed)
    print(json.dumps(record))
    if record["test_accuracy"] < args.min_accuracy:
        print(f"{args.name}: test accuracy {record['test_accuracy']:.3f} < {args.min_accuracy}; not written",
              file=sys.stderr)
        return 1
    save(args.name, model, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
