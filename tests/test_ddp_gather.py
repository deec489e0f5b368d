"""Negatives across ranks: 2 gloo CPU processes give the one-process loss and gradients.

The gather is the one ``PretrainTask`` uses, Lightning's ``all_gather(x, sync_grads=True)``:
``DDPStrategy.all_gather`` is ``_all_gather_ddp_if_available``, called here directly.
Also the MoCo machinery across ranks: queue InfoNCE over valid rows, queue pushes of the
gathered keys, batch shuffle (samples and their boxes travel together), VICRegL's statistics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.fabric.utilities.distributed import _all_gather_ddp_if_available

from glcnet.losses import LocalMatchingLoss, MoCoInfoNCE, NTXentLoss, VICRegLLoss
from glcnet.ssl.momentum import KeyQueue, shuffle, unshuffle

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
        "q": torch.randn(8, 5, generator=g, dtype=torch.float64),  # queue InfoNCE: queries, keys, row validity
        "k": torch.randn(8, 5, generator=g, dtype=torch.float64),
        "qvalid": torch.tensor([1, 1, 0, 1, 0, 0, 1, 1], dtype=torch.bool),  # 3 on rank 0, 2 on rank 1
        "g1": torch.randn(8, 6, generator=g, dtype=torch.float64),  # VICRegL: global [B, e], local [B, 3, 3, e]
        "g2": torch.randn(8, 6, generator=g, dtype=torch.float64),
        "l1": torch.randn(8, 3, 3, 6, generator=g, dtype=torch.float64),
        "l2": torch.randn(8, 3, 3, 6, generator=g, dtype=torch.float64),
        "pos1": torch.rand(8, 3, 3, 2, generator=g, dtype=torch.float64) * 16,
        "pos2": torch.rand(8, 3, 3, 2, generator=g, dtype=torch.float64) * 16,
    }


QUEUE = torch.randn(10, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # same on every rank


GRADS = ("z1", "z2", "p1", "p2", "q", "g1", "l1")


def losses_and_grads(d: dict[str, torch.Tensor], gather) -> dict[str, torch.Tensor]:
    x = {k: d[k].clone().requires_grad_(k in GRADS) for k in d}
    glob = NTXentLoss(0.5)(x["z1"], x["z2"], gather)
    loc = LocalMatchingLoss(0.5, fn_topk=2)(x["p1"], x["p2"], d["valid"], gather)
    moco = MoCoInfoNCE(0.3, fn_topk=2)(x["q"], x["k"], QUEUE, d["qvalid"], gather)
    vic_g, vic_l = VICRegLLoss(matches=(4, 2))(x["g1"], x["g2"], x["l1"], x["l2"], d["pos1"], d["pos2"], gather)
    (glob + loc + moco + vic_g + vic_l).backward()
    return {"glob": glob.detach(), "loc": loc.detach(), "moco": moco.detach(), "vic_g": vic_g.detach(),
            "vic_l": vic_l.detach(), **{f"g_{k}": x[k].grad for k in GRADS}}


def push_valid_keys(d: dict[str, torch.Tensor], gather) -> torch.Tensor:
    """GLCNet-M's patch-queue push: keys of the valid rows of every rank, in rank order."""
    queue = KeyQueue(12, 5).double()
    queue.bank.copy_(QUEUE[:1].expand(12, 5))
    ok = gather(d["qvalid"].float()) > 0.5
    queue.read_and_push(gather(d["k"])[ok], push=True)
    return queue.bank


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
        res["queue"] = push_valid_keys(mine, lightning_gather)
        # batch shuffle over both ranks: sample i holds i, its boxes 10 i
        ids = torch.arange(4.0) + 4 * rank
        images, boxes = ids[:, None, None, None].expand(4, 2, 3, 3), ids[:, None, None].expand(4, 3, 4) * 10
        torch.manual_seed(0)  # rank 0 draws the permutation (lightly broadcasts it): not the identity for seed 0
        xs, (bs,), idx = shuffle(images, boxes)
        res["shuffled"], res["shuffled_boxes"] = xs[:, 0, 0, 0], bs[:, 0, 0]
        res["unshuffled"] = unshuffle(xs.mean(dim=(1, 2, 3)), idx)
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
    for key in ("glob", "loc", "moco", "vic_g", "vic_l"):  # DDP optimises the mean over ranks
        assert abs(float(sum(r[key] for r in ranks)) / WORLD - float(single[key])) < 1e-5, key
    for key in GRADS:
        # rank r holds d(sum_k L_k)/dx_r; DDP divides parameter gradients by the world size
        got = torch.cat([r[f"g_{key}"] for r in ranks]) / WORLD
        torch.testing.assert_close(got, single[f"g_{key}"], atol=1e-5, rtol=1e-5, msg=key)
    one_queue = push_valid_keys(make_data(), lambda x: x)
    for r in ranks:  # every rank's queue = the one-process queue
        torch.testing.assert_close(r["queue"], one_queue)
    shuffled = torch.cat([r["shuffled"] for r in ranks])
    assert sorted(shuffled.tolist()) == list(range(8)) and shuffled.tolist() != list(range(8))
    for r, rank in zip(ranks, range(WORLD)):
        torch.testing.assert_close(r["shuffled_boxes"], r["shuffled"] * 10)  # boxes went with their samples
        torch.testing.assert_close(r["unshuffled"], torch.arange(4.0) + 4 * rank)
