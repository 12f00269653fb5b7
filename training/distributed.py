"""Process-group set-up for torchrun (DistributedDataParallel); a single process otherwise."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from models.precision import pick_device

# The other ranks wait in broadcast() while rank 0 decodes every image once (training.prepare):
# on a large dataset without the image cache that outlasts NCCL's 10-minute collective timeout.
OBJECT_TIMEOUT = timedelta(hours=12)


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    objects: dist.ProcessGroup | None = None    # gloo group for broadcast(), long timeout

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str | None) -> Context:
    """Read torchrun's environment; NCCL on CUDA, gloo on the CPU."""
    want = pick_device(device).type
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(device=torch.device(want))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    dist.init_process_group("nccl" if want == "cuda" else "gloo", rank=rank, world_size=world)
    return Context(rank, world, dev, dist.new_group(backend="gloo", timeout=OBJECT_TIMEOUT))


def all_sum(values: list[float], ctx: Context) -> list[float]:
    if ctx.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(obj: object, ctx: Context) -> object:
    """Rank 0's object on every rank (for work done once, like the image check), sent over the
    CPU group: no pickle travels through the GPU, and the wait may last as long as that work."""
    if ctx.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx.objects)
    return box[0]


def teardown(ctx: Context) -> None:
    if ctx.world > 1:
        dist.destroy_process_group()
