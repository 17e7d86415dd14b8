"""DDP: two CPU processes (gloo) train one fold together and agree on the weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from prepared_factory import make_prepared

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, data: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    from mammoseg.config import load_config
    from mammoseg.distributed import env_dist_info, init_distributed, shutdown_distributed
    from mammoseg.layouts import FoldFiles
    from mammoseg.manifest import load_manifest
    from mammoseg.training.fold import FoldJob, train_fold

    info = env_dist_info()
    device = torch.device("cpu")
    init_distributed(info, device)
    cfg = load_config("demo", [
        "crop_size=64", "batch_size=2", "num_workers=0", "norm_samples=4", "cache_images=false",
        "epochs.combo=1", "epochs.focal_tversky=1", "freeze_encoder_epochs=1", "lr_milestones=[5]",
        "optimiser.lr=1e-3",
    ])
    rows = load_manifest(data, split="train")
    saved: dict[str, object] = {}

    def params(model):
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    def start(epoch, model, opt):
        if epoch == 1:
            saved["initial"] = params(model)

    def end(epoch, model, opt):
        saved[f"epoch{epoch}"] = params(model)

    try:
        # 4 training images: one step of 2 images per rank and epoch; 3 validation images split 2 + 1
        job = FoldJob(cfg, Path(data), rows[:4], rows[4:], FoldFiles(0, Path(out) / "fold0"), device=device,
                      info=info, progress=False)
        result = train_fold(job, on_epoch_start=start, on_epoch_end=end)
        saved["val_loss"] = result.best_val_loss
        saved["val_dice"] = result.best_val_dice
        torch.save(saved, Path(out) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


@pytest.mark.timeout(300)
def test_two_gloo_processes_agree_after_each_step(tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    make_prepared(data, n_patients=7, per_patient=1, holdout_patients=0)
    mp.spawn(_worker, args=(_free_port(), str(data), str(out)), nprocs=WORLD, join=True)

    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    for epoch in ("epoch1", "epoch2"):
        assert r0[epoch].keys() == r1[epoch].keys()
        for k in r0[epoch]:
            assert torch.equal(r0[epoch][k], r1[epoch][k]), (epoch, k)
    assert all(torch.equal(r0["initial"][k], r1["initial"][k]) for k in r0["initial"])
    # epoch 1 (frozen encoder) moved only the decoder; epoch 2 moved the encoder too
    changed1 = {k for k in r0["initial"] if not torch.equal(r0["initial"][k], r0["epoch1"][k])}
    changed2 = {k for k in r0["initial"] if not torch.equal(r0["epoch1"][k], r0["epoch2"][k])}
    assert changed1 and all(k.startswith("decoder.") for k in changed1)
    assert any(k.startswith("encoder.") for k in changed2)
    # validation metrics are all-reduced: every rank reports the same numbers
    assert r0["val_loss"] == r1["val_loss"] and r0["val_dice"] == r1["val_dice"]
    # only rank 0 writes the fold's files
    assert sorted(p.name for p in (out / "fold0").iterdir()) == ["best.pt", "last.pt", "learning_curve.png", "log.csv"]
