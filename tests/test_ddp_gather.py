"""Negatives across ranks: 2 gloo CPU processes give the one-process loss and gradients.

The gather is the one ``PretrainTask`` uses, Lightning's ``all_gather(x, sync_grads=True)``:
``DDPStrategy.all_gather`` is ``_all_gather_ddp_if_available``, called here directly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.distributed import _all_gather_ddp_if_available

from glcnet.losses import LocalMatchingLoss, NTXentLoss

WORLD = 2


def make_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "z1": torch.randn(6, 5, generator=g, dtype=torch.float64),  # global batch, 3 rows per rank
        "z2": torch.randn(6, 5, generator=g, dtype=torch.float64),
        "p1": torch.randn(4, 3, 5, generator=g, dtype=torch.float64),  # [B, P, d] patches, 2 images per rank
        "p2": torch.randn(4, 3, 5, generator=g, dtype=torch.float64),
        # uneven valid counts per rank: 5 on rank 0, 3 on rank 1
        "valid": torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool),
    }


def losses_and_grads(d: dict[str, torch.Tensor], gather) -> dict[str, torch.Tensor]:
    z1, z2, p1, p2 = (d[k].clone().requires_grad_(True) for k in ("z1", "z2", "p1", "p2"))
    glob = NTXentLoss(0.5)(z1, z2, gather)
    loc = LocalMatchingLoss(0.5)(p1, p2, d["valid"], gather)
    (glob + loc).backward()
    return {"glob": glob.detach(), "loc": loc.detach(), "g_z1": z1.grad, "g_z2": z2.grad,
            "g_p1": p1.grad, "g_p2": p2.grad}


def lightning_gather(x: torch.Tensor) -> torch.Tensor:
    """``[n, ...]`` -> ``[W * n, ...]``, as ``PretrainTask._gather``."""
    return _all_gather_ddp_if_available(x, sync_grads=True).flatten(0, 1)


def worker(rank: int, out_dir: str) -> None:
    # rendezvous through a file: no port to pick, so no clash with other test runs
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=WORLD)
    try:
        full = make_data()
        mine = {k: v.chunk(WORLD)[rank] for k, v in full.items()}  # this rank's rows / images
        res = losses_and_grads(mine, lightning_gather)
        res["world"] = torch.tensor(dist.get_world_size())
        res["ranks"] = lightning_gather(torch.tensor([float(rank)]))
        torch.save(res, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while a peer still talks to it
    finally:
        dist.destroy_process_group()


def test_two_process_loss_and_grads_equal_one_process_on_concatenated_batch(tmp_path):
    # spawn, not fork: a fork after torch has started its OpenMP threads can deadlock the child
    mp.start_processes(worker, args=(str(tmp_path),), nprocs=WORLD, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = losses_and_grads(make_data(), lambda x: x)
    assert all(int(r["world"]) == WORLD for r in ranks)
    torch.testing.assert_close(ranks[0]["ranks"], torch.tensor([0.0, 1.0]))
    for key in ("glob", "loc"):  # DDP optimises the mean over ranks
        assert abs(float(sum(r[key] for r in ranks)) / WORLD - float(single[key])) < 1e-5, key
    for key, n in (("g_z1", 3), ("g_z2", 3), ("g_p1", 2), ("g_p2", 2)):
        # rank r holds d(sum_k L_k)/dx_r; DDP divides parameter gradients by the world size
        got = torch.cat([r[key] for r in ranks]) / WORLD
        torch.testing.assert_close(got, single[key], atol=1e-5, rtol=1e-5)
