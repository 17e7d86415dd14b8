"""Training: schedule, folds, normalisation, exact resume and an end-to-end `mammoseg train`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mammoseg.checkpoint import load_fold_model, normalise_batch, read_checkpoint, unwrap_model
from mammoseg.config import ExperimentConfig, load_config
from mammoseg.training.dataset import PreparedDataset
from mammoseg.training.folds import assign_folds, load_or_create_folds
from mammoseg.io import read_csv, read_png, write_png
from mammoseg.manifest import check_patients_disjoint, load_manifest
from mammoseg.training.schedule import encoder_frozen_at, lr_at_epoch, phase_at_epoch
from mammoseg.seeding import derive_seed
from mammoseg.training.data import compute_norm_stats
from mammoseg.training.engine import dice_per_image
from mammoseg.layouts import FoldFiles
from mammoseg.training.fold import FoldJob, train_fold
from mammoseg.training.state import LOG_COLUMNS

from prepared_factory import make_prepared

TINY = [
    "crop_size=64", "batch_size=2", "num_workers=0", "norm_samples=4", "cache_images=false",
    "n_folds=2", "model.encoder=resnet22", "model.decoder=unet", "model.encoder_weights=null",
]


# ---------------------------------------------------------------------------------------
# schedule


def test_paper_learning_rate_and_loss_at_every_epoch():
    cfg = ExperimentConfig()
    expected_lr = {e: 1e-4 if e <= 40 else 1e-5 if e <= 50 else 1e-6 if e <= 60 else 1e-7 for e in range(1, 81)}
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optimiser.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, cfg.lr_milestones, cfg.lr_gamma)
    for epoch in range(1, 81):
        assert lr_at_epoch(cfg, epoch) == pytest.approx(expected_lr[epoch], rel=1e-12)
        # what the training loop uses: torch's scheduler, stepped once after every epoch
        assert opt.param_groups[0]["lr"] == pytest.approx(expected_lr[epoch], rel=1e-12), epoch
        opt.step()
        sched.step()
        assert phase_at_epoch(cfg, epoch) == ("combo" if epoch <= 20 else "focal_tversky")
        assert encoder_frozen_at(cfg, epoch) == (epoch <= 2)
    with pytest.raises(ValueError):
        phase_at_epoch(cfg, 81)


def test_dice_per_image_known_values():
    logits = torch.full((3, 1, 2, 2), -5.0)
    target = torch.zeros(3, 1, 2, 2)
    logits[0, 0, 0, :] = 5.0  # predicts 2 pixels, reference 1 of them → 2·1/(2+1)
    target[0, 0, 0, 0] = 1
    target[1, 0, 1, 1] = 1  # predicts nothing, reference 1 pixel → 0
    # image 2: both empty → 1
    assert dice_per_image(logits, target).tolist() == pytest.approx([2 / 3, 0.0, 1.0])


# ---------------------------------------------------------------------------------------
# folds


def _rows(n_patients=23, seed=3, all_mass=False):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for j in range(int(rng.integers(1, 4))):
            mass = 1 if all_mass else int(rng.random() < 0.5)
            rows.append({"id": f"{p}_{j}", "patient_id": f"pat{p}", "has_mass": str(mass)})
    return rows


@pytest.mark.parametrize("all_mass", [False, True])
def test_folds_are_patient_disjoint_deterministic_and_complete(all_mass):
    rows = _rows(all_mass=all_mass)
    folds = assign_folds(rows, 5, seed=0)
    assert folds == assign_folds(rows, 5, seed=0)
    assert folds != assign_folds(rows, 5, seed=1)
    assert set(folds) == {r["id"] for r in rows}
    assert sorted(set(folds.values())) == [0, 1, 2, 3, 4]
    by_patient = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], set()).add(folds[r["id"]])
    assert all(len(f) == 1 for f in by_patient.values())
    if not all_mass:  # stratified: every fold holds images with and without a mass
        for k in range(5):
            assert {r["has_mass"] for r in rows if folds[r["id"]] == k} == {"0", "1"}


def test_folds_csv_is_reused_and_checked(tmp_path):
    rows = _rows()
    path = tmp_path / "folds.csv"
    first = load_or_create_folds(path, rows, 5, seed=0)
    saved = read_csv(path)
    assert [r["id"] for r in saved] == [r["id"] for r in rows]
    check_patients_disjoint(saved, "fold")
    # reused even with another seed: the file, not the seed, is the truth for a run
    assert load_or_create_folds(path, rows, 5, seed=99) == first
    with pytest.raises(ValueError, match="folds.csv.*n_folds=4"):
        load_or_create_folds(path, rows, 4, seed=0)
    extra = rows + [{"id": "new", "patient_id": "patX", "has_mass": "0"}]
    with pytest.raises(ValueError, match="folds.csv.*differ"):
        load_or_create_folds(path, extra, 5, seed=0)
    with pytest.raises(ValueError, match="patient"):
        assign_folds(_rows(n_patients=3), 5, seed=0)


# ---------------------------------------------------------------------------------------
# normalisation


def _dataset_of(tmp_path: Path, images: list[np.ndarray]) -> PreparedDataset:
    rows = []
    for i, img in enumerate(images):
        write_png(tmp_path / "images" / f"{i}.png", img)
        write_png(tmp_path / "masks" / f"{i}.png", np.zeros(img.shape, np.uint8))
        rows.append({"id": str(i), "image": f"images/{i}.png", "mask": f"masks/{i}.png"})
    return PreparedDataset(tmp_path, rows, transform=None)


def test_norm_stats_of_a_ramp_dataset(tmp_path):
    ramps = [(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * (k + 1) * 5) for k in range(3)]
    ds = _dataset_of(tmp_path, ramps)
    cfg = ExperimentConfig(batch_size=2, num_workers=0)
    # 6 samples cycle twice through the 3 images, so the statistics are those of all pixels
    stats = compute_norm_stats(ds, 6, seed=0, cfg=cfg, device=torch.device("cpu"))
    # the dataset's scale: float32(uint16) / 65535 in float32
    allpix = (np.concatenate([r.ravel() for r in ramps]).astype(np.float32) / np.float32(65535)).astype(np.float64)
    assert stats["mean"] == pytest.approx(allpix.mean(), rel=1e-10)
    assert stats["std"] == pytest.approx(allpix.std(), rel=1e-10)
    # the dataset itself returns float32 in [0, 1] and a (1, H, W) mask
    image, mask = ds[1]
    assert image.shape == mask.shape == (1, 64, 64) and image.dtype == torch.float32
    assert float(image[0, 0, 1]) == pytest.approx(10 / 65535)


def test_norm_stats_of_a_constant_dataset(tmp_path):
    ds = _dataset_of(tmp_path, [np.full((64, 64), 20000, np.uint16)] * 2)
    cfg = ExperimentConfig(batch_size=4, num_workers=0)
    stats = compute_norm_stats(ds, 3, seed=0, cfg=cfg, device=torch.device("cpu"))
    assert stats["mean"] == float(np.float32(20000) / np.float32(65535))
    assert stats["std"] == 1.0  # SD 0 → 1 (only the mean is removed)


def test_normalise_batch_replicates_grey_for_three_channels():
    x = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 1, 3)
    out = normalise_batch(x, {"mean": 0.5, "std": 0.25}, 3)
    assert out.shape == (1, 3, 1, 3)
    for c in range(3):
        assert out[0, c, 0].tolist() == [-2.0, 0.0, 2.0]
    assert normalise_batch(x, {"mean": 0.5, "std": 0.25}, 1).shape == (1, 1, 1, 3)


# ---------------------------------------------------------------------------------------
# one fold: schedule in force, frozen encoder, exact resume


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("prepared"))


def _fold_rows(data):
    rows = load_manifest(data, split="train")
    return rows[:6], rows[6:]


def test_schedule_frozen_encoder_and_exact_resume(tiny_data, tmp_path):
    cfg = load_config("demo", TINY + ["epochs.combo=2", "epochs.focal_tversky=1", "freeze_encoder_epochs=2",
                                      "lr_milestones=[1, 2]", "optimiser.lr=1e-3"])
    train_rows, val_rows = _fold_rows(tiny_data)
    seen = {}

    def snapshot(model):
        return {k: v.clone() for k, v in model.state_dict().items()}

    def start(epoch, model, opt):
        seen[epoch] = {
            "lr": opt.param_groups[0]["lr"],
            "encoder_grad": {p.requires_grad for p in model.encoder.parameters()},
            "decoder_grad": {p.requires_grad for p in model.decoder.parameters()},
            "state": snapshot(model),
        }

    straight = tmp_path / "straight"
    res = train_fold(FoldJob(cfg, tiny_data, train_rows, val_rows, FoldFiles(0, straight), progress=False),
                     on_epoch_start=start)

    # learning rate and trainable parts in force at each epoch
    assert [seen[e]["lr"] for e in (1, 2, 3)] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert [seen[e]["encoder_grad"] for e in (1, 2, 3)] == [{False}, {False}, {True}]
    assert all(seen[e]["decoder_grad"] == {True} for e in (1, 2, 3))
    enc = [k for k in seen[1]["state"] if k.startswith("encoder.")]
    dec = [k for k in seen[1]["state"] if k.startswith("decoder.") and k.endswith("weight")]
    # frozen epochs 1–2 leave the encoder (weights and BatchNorm statistics) untouched
    assert all(torch.equal(seen[1]["state"][k], seen[3]["state"][k]) for k in enc)
    assert any(not torch.equal(seen[1]["state"][k], seen[3]["state"][k]) for k in dec)

    log = read_csv(straight / "log.csv")
    assert list(log[0]) == list(LOG_COLUMNS)
    assert [r["epoch"] for r in log] == ["1", "2", "3"]
    assert [r["phase"] for r in log] == ["combo", "combo", "focal_tversky"]
    assert [float(r["lr"]) for r in log] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 and math.isfinite(float(r["val_loss"])) for r in log)
    # the best checkpoint is chosen among the final (Focal Tversky) phase's epochs only
    best = read_checkpoint(straight / "best.pt")
    assert best["epoch"] == 3 == res.best_epoch
    assert best["val_loss"] == pytest.approx(float(log[2]["val_loss"]), abs=1e-6)

    # interrupted after epoch 2, then resumed: bit-for-bit the uninterrupted run
    resumed = tmp_path / "resumed"
    train_fold(FoldJob(cfg, tiny_data, train_rows, val_rows, FoldFiles(0, resumed), progress=False),
               stop_after_epoch=2)
    assert read_checkpoint(resumed / "last.pt")["epoch"] == 2
    assert not (resumed / "best.pt").exists()  # no final-phase epoch yet
    train_fold(FoldJob(cfg, tiny_data, train_rows, val_rows, FoldFiles(0, resumed), resume=True, progress=False))
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and b["finished"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, state in a["optimiser"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(state[name], b["optimiser"]["state"][i][name])
    assert a["norm"] == b["norm"]
    for x, y in zip(read_csv(straight / "log.csv"), read_csv(resumed / "log.csv")):
        assert {k: x[k] for k in LOG_COLUMNS if k != "seconds"} == {k: y[k] for k in LOG_COLUMNS if k != "seconds"}


# ---------------------------------------------------------------------------------------
# end to end through the command line


def test_train_command_end_to_end(tiny_data, tmp_path, caplog):
    from mammoseg.cli import main

    run = tmp_path / "run"
    args = ["train", "--config", "demo", "--data", str(tiny_data), "--out", str(run), "--folds", "0",
            "--device", "cpu", "--no-progress", *TINY, "epochs.combo=1", "epochs.focal_tversky=1",
            "freeze_encoder_epochs=1", "lr_milestones=[1]"]
    assert main(args) == 0

    cfg = load_config(run / "config.yaml")
    assert (cfg.name, cfg.batch_size, cfg.crop_size, cfg.total_epochs) == ("demo", 2, 64, 2)
    folds = read_csv(run / "folds.csv")
    train_ids = {r["id"] for r in load_manifest(tiny_data, split="train")}
    assert list(folds[0]) == ["id", "patient_id", "fold"]
    assert {r["id"] for r in folds} == train_ids
    assert {r["fold"] for r in folds} == {"0", "1"}
    check_patients_disjoint(folds, "fold")
    log = read_csv(run / "fold0" / "log.csv")
    assert list(log[0]) == list(LOG_COLUMNS) and len(log) == 2
    assert read_png(run / "fold0" / "learning_curve.png").ndim == 2  # a readable PNG
    assert not (run / "fold1").exists()  # --folds 0

    model, ckpt = load_fold_model(run / "fold0" / "best.pt")
    assert not model.training
    assert ckpt["image_size"] == 64 and ckpt["fold"] == 0 and ckpt["epoch"] == 2
    assert ckpt["breast_crop"] is False  # the prepared folder has no crop columns
    assert ckpt["model_spec"] == {"encoder": "resnet22", "decoder": "unet", "in_channels": 1, "dropout": 0.2}
    assert 0.0 < ckpt["norm"]["mean"] < 1.0 and ckpt["norm"]["std"] > 0.0
    assert ckpt["config"]["name"] == "demo"
    with torch.no_grad():
        out = model(normalise_batch(torch.rand(1, 1, 64, 64), ckpt["norm"], model.in_channels))
    assert out.shape == (1, 1, 64, 64)

    # the same command again: the finished fold is skipped, nothing rewritten
    mtime = (run / "fold0" / "best.pt").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="mammoseg.training"):
        assert main(args) == 0
    assert "already finished" in caplog.text
    assert (run / "fold0" / "best.pt").stat().st_mtime_ns == mtime
    # a different config in the same folder is refused (exit 2, one-line error)
    assert main(args + ["seed=1"]) == 2


def test_checkpoint_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing.pt"
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_fold_model(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_fold_model(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*not a mammoseg"):
        load_fold_model(foreign)


# ---------------------------------------------------------------------------------------
# every Table 1 row, the device rows included, through the real loop


def test_table1_augmentation_with_device_rows_resumes_exactly(tiny_data, tmp_path):
    """The split pipeline (median blur and cutout on the training device) in the real training
    loop: 0 and 2 workers give the same fold, and a fold resumed mid-way ends bit for bit where
    the uninterrupted one does."""
    base = TINY + ["augmentation=table1", "epochs.combo=1", "epochs.focal_tversky=2", "freeze_encoder_epochs=0",
                   "lr_milestones=[]", "optimiser.lr=1e-3", "norm_samples=6"]
    train_rows, val_rows = _fold_rows(tiny_data)
    fired = []

    def count_device_rows(epoch, model, opt):
        fired.append(epoch)

    straight = tmp_path / "straight"
    train_fold(FoldJob(load_config("demo", base), tiny_data, train_rows, val_rows, FoldFiles(0, straight),
                       progress=False), on_epoch_start=count_device_rows)
    workers = tmp_path / "workers"
    train_fold(FoldJob(load_config("demo", [*base, "num_workers=2"]), tiny_data, train_rows, val_rows,
                       FoldFiles(0, workers), progress=False))
    resumed = tmp_path / "resumed"
    cfg = load_config("demo", base)
    train_fold(FoldJob(cfg, tiny_data, train_rows, val_rows, FoldFiles(0, resumed), progress=False),
               stop_after_epoch=2)
    train_fold(FoldJob(cfg, tiny_data, train_rows, val_rows, FoldFiles(0, resumed), resume=True, progress=False))
    a = read_checkpoint(straight / "last.pt")
    for other in (workers, resumed):
        b = read_checkpoint(other / "last.pt")
        assert a["norm"] == b["norm"] and a["epoch"] == b["epoch"] == 3
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (other.name, k)
    assert fired == [1, 2, 3]


def test_device_rows_reach_the_normalisation_statistics(tiny_data):
    """Normalisation statistics see what training sees: with every Table 1 row the statistics of
    the same seeded samples differ from those without the device rows only by those rows."""
    from mammoseg.training.augment import build_train_transform
    from mammoseg.training.device_augment import apply_device_rows

    rows = load_manifest(tiny_data, split="train")
    cfg = ExperimentConfig(batch_size=4, num_workers=0)
    split = PreparedDataset(tiny_data, rows, build_train_transform(64, 64, device_rows=True), with_device_params=True)
    stats = compute_norm_stats(split, 12, seed=3, cfg=cfg, device=torch.device("cpu"))
    # the same 12 samples, augmented by hand: host rows, then the device rows, then the moments
    perm = np.random.default_rng(derive_seed(3, 0)).permutation(len(rows))
    images = []
    for j in range(12):
        image, _, params = split[(int(perm[j % len(rows)]), derive_seed(3, 1, j))]
        images.append(apply_device_rows(image[None], params[None])[0])
    x = torch.stack(images).double()
    assert stats["mean"] == pytest.approx(float(x.mean()), rel=1e-12)
    assert stats["std"] == pytest.approx(float(x.std(unbiased=False)), rel=1e-9)


def test_compile_falls_back_to_eager_when_compilation_fails(caplog):
    from mammoseg.training.model import CompiledWithFallback

    torch.manual_seed(0)
    eager = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    x = torch.rand(2, 1, 8, 8)

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C compiler here")

    net = CompiledWithFallback(eager, backend=broken_backend)
    with caplog.at_level("WARNING", logger="mammoseg.training.model"):
        out = net(x)
    assert torch.equal(out, eager(x))
    assert "torch.compile failed" in caplog.text and "no C compiler here" in caplog.text
    assert net._compiled is None and unwrap_model(net) is eager
    working = CompiledWithFallback(eager, backend="aot_eager")
    torch.testing.assert_close(working(x), eager(x), rtol=0, atol=1e-6)
    assert working._compiled is not None
