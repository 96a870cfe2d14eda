"""Launching one or several processes: how many a launcher (``accelerate launch``, ``torchrun``, MPI) started, this
process's rank, the one writer of an output folder (the main process, holding the folder's stage lock) and the data
parallelism of a loop whose gradients are averaged by hand (:class:`Parallel`)."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Dict, Iterator, List

if TYPE_CHECKING:
    import torch

from .utils import StylsegError

#: the variables through which a launcher (accelerate launch / torchrun, MPI) tells a process how many there are
LAUNCHER_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def launched_processes() -> int:
    """How many processes ``accelerate launch`` / ``torchrun`` started (1 when run plainly)."""
    for key in LAUNCHER_VARS:
        if os.environ.get(key, "").isdigit():
            return max(1, int(os.environ[key]))
    return 1


class Parallel:
    """Data parallelism for the fine-tuning loop, through ``accelerate`` when several processes run.

    Every process draws the same global batch (the index generator is seeded alike) and keeps its
    own contiguous slice (:meth:`shard`); :meth:`average_grads` averages the gradients over the processes
    with ``Accelerator.reduce`` before the optimizer step. With one process every method is the identity.

    The gradients are reduced explicitly rather than by wrapping D_B and the SPN in DDP
    (``accelerator.prepare``), as DiffAE training does: an iteration of the per-step loop makes several
    backward passes, and ``stylize.spn_role=guard`` takes the SPN's gradient with
    ``torch.autograd.grad``, which DDP's gradient hooks do not see.
    """

    def __init__(self, device: torch.device):
        self.world, self.rank, self.acc = 1, 0, None
        self.device = device
        if launched_processes() > 1:
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=device.type == "cpu")
            self.world, self.rank, self.device = self.acc.num_processes, self.acc.process_index, self.acc.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int, setting: str = "stylize.batch_size") -> None:
        if batch_size % self.world:
            raise StylsegError(f"{setting}={batch_size} does not split over {self.world} processes; "
                               f"use a multiple of {self.world} (--set {setting}=...) or launch "
                               f"fewer processes")

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch (B, ...) -> (B/N, ...)."""
        if self.world == 1:
            return x
        n = x.shape[0] // self.world
        return x[self.rank * n:(self.rank + 1) * n]

    def average_grads(self, params: List[torch.Tensor]) -> None:
        if self.world == 1:
            return
        import torch

        grads = self.acc.reduce([p.grad if p.grad is not None else torch.zeros_like(p) for p in params],
                                reduction="mean")
        for p, g in zip(params, grads):
            p.grad = g

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        """Per-process loss values -> their mean over the processes (for the history)."""
        if self.world == 1 or not values:
            return values
        import torch

        keys = sorted(values)
        v = self.acc.reduce(torch.tensor([values[k] for k in keys], device=self.device, dtype=torch.float64),
                            reduction="mean")
        return dict(zip(keys, v.tolist()))

    def wait(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()


#: the variables through which a launcher tells a process its rank
RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK")


def launch_rank() -> int:
    """This process's rank among those a launcher started (0 when run plainly)."""
    for key in RANK_VARS:
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


@contextmanager
def main_writer(out_dir: os.PathLike, what: str, main: bool) -> Iterator[None]:
    """The main process (``main``) writes ``out_dir`` and holds its stage lock (:func:`stylseg.lock.stage_lock`)
    meanwhile; the other processes of a launch write nothing and take no lock."""
    from .lock import stage_lock

    with stage_lock(out_dir, what) if main else nullcontext():
        yield
