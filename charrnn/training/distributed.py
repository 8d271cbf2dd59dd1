"""Several processes through torchrun: PyTorch's process group, nothing home-made.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and the rendezvous address) for every
worker; a plain `charrnn train` sees none of them and runs as a world of one, where
every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import CharrnnError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    # Small CPU-side agreements (elapsed time, stop requests) go over gloo even when the
    # gradients use NCCL, so agreeing on them never waits on the GPU stream.
    control: object | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's share of the batch's streams: a contiguous block of rows."""
        per_rank = batch_size // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    # ---- collectives ------------------------------------------------------------------------
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.sum(tensor).div_(self.size) if self.distributed else tensor

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """The longest elapsed time and whether any rank was asked to stop.

        Every rank must take the same number of steps with the same learning rate, and
        both depend on the clock when a run is bounded by time.
        """
        if not self.distributed:
            return elapsed, stop
        values = torch.tensor([elapsed, 1.0 if stop else 0.0], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.control)
        return values[0].item(), bool(values[1].item())

    def gather_rows(self, tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's block of rows, concatenated in rank order (the global batch)."""
        if not self.distributed:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def from_environment() -> World:
    """The world torchrun describes, or a world of one."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise CharrnnError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if not 0 <= rank < max(size, 1):
        raise CharrnnError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank=rank, size=max(size, 1), local_rank=local_rank)


def start(world: World, device: torch.device) -> tuple[World, torch.device]:
    """Joins the process group (NCCL on CUDA, gloo on the CPU) and picks this rank's device."""
    if not world.distributed:
        return world, device
    if device.type == "mps":
        raise CharrnnError("distributed training runs on CUDA or the CPU, not MPS; use --device cpu")
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        world.control = dist.new_group(backend="gloo") if backend == "nccl" else None
    except (RuntimeError, ValueError) as e:  # e.g. WORLD_SIZE set by hand, without torchrun's address
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CharrnnError(f"cannot join the {backend} process group ({first}); start with torchrun") from None
    return world, device
