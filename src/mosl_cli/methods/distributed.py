"""Collectives the SSL losses need, written so that they are identities in a single process.

Under ``torchrun`` (DDP) a contrastive loss must see the negatives of every rank: SimCLR's NT-Xent
gathers the embeddings of all ranks *with* gradients (Chen et al. 2020, §2.2: every other example of
the whole batch is a negative), MoCo enqueues the keys of all ranks *without* gradients (as the
official MoCo code does). Every rank must pass tensors of the same shape (use
``drop_last`` in the sampler).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group is initialised (and has more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def gather_with_grad(x: Tensor) -> Tensor:
    """``[B, ...]`` on each rank → ``[world_size * B, ...]``, rank order, differentiable.

    The backward pass sums the gradients that every rank's loss sends to this rank's slice, so with a
    per-rank loss that averages over its own anchors, DDP's gradient averaging yields exactly the
    gradient of the single-process loss on the concatenated batch.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """``[B, ...]`` on each rank → ``[world_size * B, ...]``, rank order, detached."""
    if not is_distributed():
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)
