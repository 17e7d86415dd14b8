"""Post-processing chosen on out-of-fold predictions: the rules, the choice on hand-made arrays with
known answers, and predict / Segmenter / bundles applying a run's postprocessing.json."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mammoseg.evaluation.metrics import dice_iou
from mammoseg.inference.oof import MIN_GAIN, THRESHOLDS, Candidates, candidate_grid, choose_postprocessing, image_scores
from mammoseg.inference.postprocess import (
    PostProcessing,
    StalePostProcessing,
    drop_components,
    postprocessed_mask,
    run_postprocessing,
)
from mammoseg.io import read_csv, read_png, write_png
from mammoseg.layouts import RunLayout

from prepared_factory import Case, make_prepared, write_prepared
from run_factory import write_random_run


def _square(prob: np.ndarray, top: int, left: int, side: int, value: float) -> None:
    prob[top : top + side, left : left + side] = value


# --------------------------------------------------------------------------- applying a rule


def test_rules_drop_exactly_the_small_and_the_less_probable_components():
    prob = np.full((16, 16), 0.1, np.float32)
    _square(prob, 1, 1, 3, 0.9)  # A: 9 px, peak 0.9
    _square(prob, 10, 10, 2, 0.7)  # B: 4 px, peak 0.7
    prob[12, 12] = 0.6  # touches B diagonally: 8-connected, so B is 5 px
    a = np.zeros((16, 16), bool)
    a[1:4, 1:4] = True
    b = (prob >= 0.5) & ~a
    assert b.sum() == 5
    everything = np.where(prob >= 0.5, 255, 0)
    np.testing.assert_array_equal(postprocessed_mask(prob, PostProcessing()), everything)
    np.testing.assert_array_equal(postprocessed_mask(prob, PostProcessing(min_area=5)), everything)  # B is 5 px
    np.testing.assert_array_equal(postprocessed_mask(prob, PostProcessing(min_area=6)), np.where(a, 255, 0))
    np.testing.assert_array_equal(postprocessed_mask(prob, PostProcessing(keep_most_probable=True)), np.where(a, 255, 0))
    # at 0.65 the pixel at (12, 12) falls out: B is 4 px
    np.testing.assert_array_equal(postprocessed_mask(prob, PostProcessing(0.65, min_area=5)), np.where(a, 255, 0))
    # the dropped pixels are set to 0, everything else is left as it was
    cut = drop_components(prob, PostProcessing(min_area=6))
    np.testing.assert_array_equal(cut[b], 0)
    np.testing.assert_array_equal(cut[~b], prob[~b])
    assert drop_components(prob, PostProcessing()) is prob  # the default changes nothing


def test_keep_most_probable_keeps_the_highest_peak_not_the_largest():
    prob = np.zeros((12, 12), np.float32)
    _square(prob, 0, 0, 4, 0.6)  # large, peak 0.6
    _square(prob, 8, 8, 2, 0.8)  # small, peak 0.8
    kept = postprocessed_mask(prob, PostProcessing(keep_most_probable=True)) > 0
    assert kept.sum() == 4 and kept[8:10, 8:10].all()
    # min area first, then the most probable of what is left
    kept = postprocessed_mask(prob, PostProcessing(min_area=5, keep_most_probable=True)) > 0
    assert kept.sum() == 16 and kept[0:4, 0:4].all()
    empty = np.zeros((12, 12), np.float32)
    assert not postprocessed_mask(empty, PostProcessing(min_area=3, keep_most_probable=True)).any()


def test_a_rule_is_checked():
    for bad in ({"threshold": 1.5}, {"min_area": -1}, {"min_area": 2.5}, {"keep_most_probable": "yes"}):
        with pytest.raises(ValueError):
            PostProcessing(**bad)


# --------------------------------------------------------------------------- the grid and the scores


def test_candidate_grid_is_the_documented_one():
    assert THRESHOLDS == (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
    assert candidate_grid(256).min_areas == (0, 8, 16, 32, 64, 128, 256)
    assert candidate_grid(512).min_areas == (0, 32, 64, 128, 256, 512, 1024)
    assert candidate_grid(64).min_areas == (0, 1, 2, 4, 8, 16)  # 8/16 = 0.5 rounds to 0


def test_image_scores_equal_dice_of_the_post_processed_mask():
    rng = np.random.default_rng(4)
    prob = rng.random((24, 24)).astype(np.float32) ** 3
    _square(prob, 5, 5, 6, 0.75)
    reference = np.zeros((24, 24), np.uint8)
    reference[6:12, 6:12] = 255
    grid = Candidates(THRESHOLDS, (0, 2, 5, 30))
    scores = image_scores(prob, reference, grid)
    assert scores.shape == (13, 4, 2)
    for ti, t in enumerate(grid.thresholds):
        for ai, a in enumerate(grid.min_areas):
            for ki, keep in enumerate((False, True)):
                expected = dice_iou(postprocessed_mask(prob, PostProcessing(t, a, keep)), reference)[0]
                assert scores[ti, ai, ki] == pytest.approx(expected, abs=1e-12), (t, a, keep)
    # empty reference and nothing predicted: 1; empty reference, something predicted: 0
    empty = np.zeros((24, 24), np.uint8)
    assert image_scores(np.zeros((24, 24), np.float32), empty, grid).min() == 1.0
    assert image_scores(np.full((24, 24), 0.9, np.float32), empty, grid)[:, 0, 0].max() == 0.0


# --------------------------------------------------------------------------- the choice, known answers

GRID = Candidates(THRESHOLDS, (0, 8, 32))


def _scores(*pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.stack([image_scores(p, r, GRID) for p, r in pairs])


def _mass_and_blob(blob_side: int = 2, blob_peak: float = 0.9) -> list[tuple[np.ndarray, np.ndarray]]:
    """A 16 px mass predicted exactly (Dice 1), and a mass-free image with one small blob (Dice 0)."""
    prob, ref = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.uint8)
    _square(prob, 4, 4, 4, 0.9)
    ref[4:8, 4:8] = 255
    fp = np.zeros((32, 32), np.float32)
    _square(fp, 20, 20, blob_side, blob_peak)
    return [(prob, ref), (fp, np.zeros((32, 32), np.uint8))]


def test_min_area_removing_the_false_positive_blob_raises_mean_dice_from_half_to_one():
    choice = choose_postprocessing(_scores(*_mass_and_blob()), GRID)
    assert choice.rule == PostProcessing(0.5, 8, False)
    threshold, area, keep = choice.steps
    assert (threshold["step"], threshold["taken"], threshold["dice_before"], threshold["dice_after"]) == \
        ("threshold", False, 0.5, 0.5)  # every threshold ties: the default stays
    assert (area["step"], area["taken"], area["best"], area["dice_before"], area["dice_after"]) == \
        ("min_area", True, 8, 0.5, 1.0)
    assert area["candidates"] == {"0": 0.5, "8": 1.0, "32": 0.5}  # 32 px also drops the 16 px mass
    assert (keep["taken"], keep["dice_before"], keep["dice_after"]) == (False, 1.0, 1.0)
    np.testing.assert_array_equal(choice.dice_default, [1.0, 0.0])
    np.testing.assert_array_equal(choice.dice_chosen, [1.0, 1.0])


def test_threshold_is_chosen_first():
    faint, ref = np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8)
    _square(faint, 2, 2, 4, 0.45)  # a mass seen at 0.45: found from threshold 0.45 down
    ref[2:6, 2:6] = 255
    haze = np.zeros((16, 16), np.float32)
    _square(haze, 8, 8, 3, 0.3)  # a mass-free image's haze: a false positive up to threshold 0.3
    choice = choose_postprocessing(_scores((faint, ref), (haze, np.zeros((16, 16), np.uint8))), GRID)
    # 0.2-0.3: 0.5; 0.35-0.45: 1.0; 0.5-0.8: 0.5 -> the first best, 0.35
    assert choice.rule == PostProcessing(0.35, 0, False)
    assert choice.steps[0]["candidates"] == {f"{t:g}": (1.0 if 0.35 <= t <= 0.45 else 0.5) for t in THRESHOLDS}
    assert [s["taken"] for s in choice.steps] == [True, False, False]


def test_keep_most_probable_where_no_area_separates_the_components():
    prob, ref = np.zeros((32, 32), np.float32), np.zeros((32, 32), np.uint8)
    _square(prob, 2, 2, 4, 0.95)  # the mass
    _square(prob, 20, 20, 4, 0.85)  # a false positive of the same size, above every threshold
    ref[2:6, 2:6] = 255
    choice = choose_postprocessing(_scores((prob, ref)), GRID)
    assert choice.rule == PostProcessing(0.5, 0, True)
    assert choice.steps[2]["dice_before"] == pytest.approx(2 * 16 / 48) and choice.steps[2]["dice_after"] == 1.0


def test_a_gain_within_the_margin_keeps_the_default():
    scores = np.full((2, len(GRID.thresholds), len(GRID.min_areas), 2), 0.6)
    scores[0, 0, :, :] += MIN_GAIN  # threshold 0.2 is better by MIN_GAIN / 2 on the mean: not enough
    scores[:, :, 1, :] += MIN_GAIN * 3  # area 8 is better by 3 × MIN_GAIN: taken
    choice = choose_postprocessing(scores, GRID)
    assert choice.rule == PostProcessing(0.5, 8, False)
    assert choice.steps[0]["best"] == 0.2 and not choice.steps[0]["taken"]
    with pytest.raises(ValueError, match="do not match"):
        choose_postprocessing(scores[:, :3], GRID)


def test_a_step_that_lowers_one_folds_mean_is_not_taken():
    """Fold 0's two images gain 0.3 at threshold 0.2 and 0.05 at 0.8, fold 1's image loses 0.1 at 0.2:
    the mean's best (0.2, +0.167) hurts fold 1, so the fold-agreeing 0.8 (+0.033) is taken instead;
    without fold numbers the mean's best is."""
    scores = np.full((3, len(GRID.thresholds), len(GRID.min_areas), 2), 0.5)
    t02, t08 = GRID.thresholds.index(0.2), GRID.thresholds.index(0.8)
    scores[:2, t02] += 0.3
    scores[2, t02] -= 0.1
    scores[:2, t08] += 0.05
    agreed = choose_postprocessing(scores, GRID, folds=[0, 0, 1])
    assert agreed.rule.threshold == 0.8 and agreed.steps[0]["best"] == 0.2
    assert agreed.steps[0]["folds_agree"]["0.2"] is False and agreed.steps[0]["folds_agree"]["0.8"] is True
    assert agreed.steps[0]["dice_after"] == pytest.approx(0.5 + 0.1 / 3)
    assert choose_postprocessing(scores, GRID).rule.threshold == 0.2
    with pytest.raises(ValueError, match="2 fold numbers for 3 images"):
        choose_postprocessing(scores, GRID, folds=[0, 1])


def test_keeping_the_most_probable_of_two_saturated_components_keeps_the_larger():
    prob = np.zeros((16, 16), np.float32)
    _square(prob, 1, 1, 2, 1.0)  # first in label order, 4 px
    _square(prob, 8, 8, 4, 1.0)  # 16 px, the same peak
    mask = postprocessed_mask(prob, PostProcessing(0.5, 0, True))
    assert np.count_nonzero(mask) == 16 and mask[8:12, 8:12].all()


# --------------------------------------------------------------------------- predict, Segmenter and bundles use it


#: At 0.55 these random models' probability has 4 or 5 components on each test image (1 at 0.5).
CHOSEN = PostProcessing(0.55, 0, True)


@pytest.fixture(scope="module")
def chosen_run(tmp_path_factory):
    """A random-weight run (two folds at 64 px) with a hand-written postprocessing.json."""
    from mammoseg.inference.run_identity import run_id

    run = write_random_run(tmp_path_factory.mktemp("runs") / "chosen")
    _write_choice(run, CHOSEN, run_id(run))
    return run


def _write_choice(run: Path, rule: PostProcessing, known_run_id: str) -> None:
    record = {"threshold": rule.threshold, "min_area": rule.min_area, "keep_most_probable": rule.keep_most_probable,
              "oof_dice_default": 0.5, "oof_dice_chosen": 0.75, "n_images": 4, "run_id": known_run_id}
    RunLayout(run).postprocessing.write_text(json.dumps(record), encoding="utf-8")


def _ensemble_prob(run: Path, image: np.ndarray) -> np.ndarray:
    import torch

    from mammoseg.inference.ensemble import batch_probability, load_ensemble

    with torch.inference_mode():
        return batch_probability(load_ensemble(run).members, [image], torch.device("cpu"))[0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(2)
    cases = [Case(f"img{i}", f"p{i}", rng.integers(0, 65535, (64, 64), dtype=np.uint16), split="holdout")
             for i in range(2)]
    write_prepared(data, cases)
    return data


def _predict(run: Path, data: Path, out: Path, *flags: str) -> None:
    from mammoseg.cli import main

    assert main(["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--input", str(data),
                 "--out", str(out), *flags]) == 0


def test_predict_applies_the_runs_choice_and_threshold_overrides_only_the_threshold(chosen_run, prepared, tmp_path):
    from mammoseg.inference.ensemble import threshold_probability

    probs = {i: _ensemble_prob(chosen_run, read_png(prepared / "images" / f"{i}.png")) for i in ("img0", "img1")}
    chosen = CHOSEN
    for flags, rule in (((), chosen), (("--threshold", "0.6"), replace(chosen, threshold=0.6)),
                        (("--no-postprocessing",), None)):
        out = tmp_path / "-".join(flags or ("chosen",))
        _predict(chosen_run, prepared, out, *flags)
        settings = json.loads((out / "predict.json").read_text())
        for image_id, prob in probs.items():
            mask = read_png(out / "masks" / f"{image_id}.png")
            expected = threshold_probability(prob, 0.5) if rule is None else postprocessed_mask(prob, rule)
            sure = np.abs(prob - (rule.threshold if rule else 0.5)) > 1e-4
            np.testing.assert_array_equal(mask[sure], expected[sure])
        if rule is None:
            assert settings["threshold"] == 0.5 and "postprocessing" not in settings
        else:
            assert settings["threshold"] == rule.threshold
            assert settings["postprocessing"] == {"min_area": 0, "keep_most_probable": True}
    # the chosen rule really drops something on these images (else the test could not fail)
    assert all((postprocessed_mask(p, chosen) != threshold_probability(p, 0.55)).any() for p in probs.values())


def test_a_run_without_a_choice_predicts_as_before(prepared, tmp_path):
    from mammoseg.inference.ensemble import threshold_probability

    run = write_random_run(tmp_path / "old")
    out = tmp_path / "pred"
    _predict(run, prepared, out)
    for image_id in ("img0", "img1"):
        prob = _ensemble_prob(run, read_png(prepared / "images" / f"{image_id}.png"))
        np.testing.assert_array_equal(read_png(out / "masks" / f"{image_id}.png"), threshold_probability(prob, 0.5))
    settings = json.loads((out / "predict.json").read_text())
    assert settings["threshold"] == 0.5 and "postprocessing" not in settings


def test_resumed_predict_keeps_the_choice_and_a_changed_one_is_refused(prepared, tmp_path):
    from mammoseg.cli import main
    from mammoseg.inference.run_identity import run_id

    run = write_random_run(tmp_path / "run")
    _write_choice(run, PostProcessing(0.5, 0, True), run_id(run))
    out = tmp_path / "pred"
    _predict(run, prepared, out)
    _predict(run, prepared, out, "--resume")  # same settings: continues
    _write_choice(run, PostProcessing(0.5, 3, False), run_id(run))
    args = ["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--input", str(prepared), "--out",
            str(out), "--resume"]
    assert main(args) == 2  # other post-processing: --resume refuses


def test_a_choice_made_for_other_fold_models_is_refused(tmp_path, prepared, capsys):
    from mammoseg.cli import main

    run = write_random_run(tmp_path / "run")
    _write_choice(run, PostProcessing(0.4, 0, True), "0123456789abcdef")
    with pytest.raises(StalePostProcessing, match="postprocessing.json: chosen for other fold models"):
        run_postprocessing(RunLayout(run), "fedcba9876543210")
    args = ["predict", "--device", "cpu", "--no-progress", "--run", str(run), "--input", str(prepared), "--out",
            str(tmp_path / "pred")]
    assert main(args) == 2
    assert "chosen for other fold models" in capsys.readouterr().err
    assert main(args + ["--no-postprocessing"]) == 0


def test_original_grid_input_gets_the_decision_of_the_model_grid(chosen_run, tmp_path):
    """A non-square raster: components are chosen on the model grid, then the mask is made on the image's own
    grid; Segmenter gives the same mask as predict."""
    from mammoseg.geometry import invert_probability, standardise
    from mammoseg.inference.segmenter import Segmenter

    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 65535, (90, 70), dtype=np.uint16)
    folder = tmp_path / "in"
    write_png(folder / "mg.png", pixels)
    out = tmp_path / "pred"
    _predict(chosen_run, folder, out)
    standard = standardise(pixels, 64)
    prob = _ensemble_prob(chosen_run, standard.image)
    rule = CHOSEN
    back = invert_probability(drop_components(prob, rule), standard.plan)
    mask = read_png(out / "masks" / "mg.png")
    assert mask.shape == (90, 70)
    sure = np.abs(back - rule.threshold) > 1e-4
    np.testing.assert_array_equal(mask[sure], np.where(back >= rule.threshold, 255, 0)[sure])
    raw = invert_probability(prob, standard.plan)
    assert ((raw >= rule.threshold) & (mask == 0)).any()  # a component dropped on the model grid is gone here
    segmenter = Segmenter.from_run(chosen_run, device="cpu")
    assert segmenter.rule == rule
    result = segmenter.segment(folder / "mg.png")
    np.testing.assert_array_equal(result.mask, mask)
    np.testing.assert_allclose(result.probability, invert_probability(prob, standard.plan), atol=1e-6)  # raw
    assert Segmenter.from_run(chosen_run, device="cpu", postprocessing=False).rule == PostProcessing()


def test_a_bundle_carries_the_choice(chosen_run, tmp_path, monkeypatch):
    from mammoseg.bundle.store import resolve_model
    from mammoseg.bundle.writer import write_bundle
    from mammoseg.inference.run_identity import run_id

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manifest = write_bundle(chosen_run, tmp_path / "chosen.mseg")
    assert manifest.threshold == 0.55 and "postprocessing.json" in manifest.members
    source = resolve_model(tmp_path / "chosen.mseg")
    assert run_postprocessing(RunLayout(source.run_dir), run_id(source.run_dir)) == CHOSEN
    contract = json.loads((source.run_dir / "contract.json").read_text())
    assert contract["postprocessing"]["keep_most_probable"] is True


def test_the_report_states_the_choice():
    from mammoseg.report import postprocessing_line

    record = {"threshold": 0.45, "min_area": 16, "keep_most_probable": False, "n_images": 40,
              "oof_dice_default": 0.61, "oof_dice_chosen": 0.7}
    assert postprocessing_line(record) == (
        "- post-processing chosen on 40 out-of-fold images: threshold 0.45, minimum component area 16 px, most "
        "probable component only: no; OOF mean DCS 0.6100 (threshold 0.5, every component) → 0.7000")
    assert postprocessing_line(None) == "- post-processing: none chosen (threshold 0.5, every component)"


# --------------------------------------------------------------------------- a trained run chooses its own

TINY = ["crop_size=64", "batch_size=2", "num_workers=0", "norm_samples=4", "cache_images=false", "n_folds=2",
        "model.encoder=resnet22", "model.decoder=unet", "model.encoder_weights=null", "epochs.combo=1",
        "epochs.focal_tversky=1", "freeze_encoder_epochs=0", "lr_milestones=[]", "optimiser.lr=1e-3"]


def test_a_trained_run_chooses_on_its_out_of_fold_predictions(tmp_path, caplog):
    import torch

    from mammoseg.config import load_config
    from mammoseg.evaluation.metrics import dice_iou
    from mammoseg.inference.ensemble import batch_probability, load_ensemble, threshold_probability
    from mammoseg.inference.oof import ensure_postprocessing
    from mammoseg.training import run_cross_validation

    data = make_prepared(tmp_path / "prepared", n_patients=6, per_patient=2, holdout_patients=1, seed=1)
    cfg = load_config("demo", TINY)
    run, layout = tmp_path / "run", RunLayout(tmp_path / "run")
    with caplog.at_level("INFO", logger="mammoseg.training"):
        run_cross_validation(cfg, data, run, folds=[0], device="cpu", progress=False)
    assert not layout.postprocessing.exists() and "fold(s) 1 not trained" in caplog.text  # a partial run
    run_cross_validation(cfg, data, run, device="cpu", progress=False)
    record = json.loads(layout.postprocessing.read_text())
    rule = PostProcessing(record["threshold"], record["min_area"], record["keep_most_probable"])

    # Independently: each fold's model on its own validation images, read straight from the prepared folder.
    folds = read_csv(layout.folds_csv)
    default, chosen = {}, {}
    for k in (0, 1):
        members = load_ensemble(run, folds=[k]).members
        for row in (r for r in folds if r["fold"] == str(k)):
            image = read_png(data / "images" / f"{row['id']}.png")
            reference = read_png(data / "masks" / f"{row['id']}.png")
            with torch.inference_mode():
                prob = batch_probability(members, [image], torch.device("cpu"))[0]
            default[row["id"]] = dice_iou(threshold_probability(prob, 0.5), reference)[0]
            chosen[row["id"]] = dice_iou(postprocessed_mask(prob, rule), reference)[0]
    assert record["n_images"] == len(folds) == 10
    assert record["oof_dice_default"] == pytest.approx(np.mean(list(default.values())), abs=1e-9)
    assert record["oof_dice_chosen"] == pytest.approx(np.mean(list(chosen.values())), abs=1e-9)
    assert record["steps"][0]["dice_before"] == pytest.approx(record["oof_dice_default"])
    assert record["steps"][-1]["dice_after"] == pytest.approx(record["oof_dice_chosen"])
    assert record["grid"]["min_areas"] == [0, 1, 2, 4, 8, 16]
    per_image = {r["id"]: r for r in read_csv(layout.oof_dice)}
    assert set(per_image) == set(default)
    for image_id, r in per_image.items():
        assert float(r["dice_default"]) == pytest.approx(default[image_id], abs=1e-6)
        assert float(r["dice_chosen"]) == pytest.approx(chosen[image_id], abs=1e-6)
    print(f"OOF mean Dice {record['oof_dice_default']:.4f} -> {record['oof_dice_chosen']:.4f} ({rule.describe()})")

    # Rerun: kept; chosen for other models: chosen anew.
    stamp = layout.postprocessing.stat().st_mtime_ns
    run_cross_validation(cfg, data, run, device="cpu", progress=False)
    assert layout.postprocessing.stat().st_mtime_ns == stamp
    layout.postprocessing.write_text(json.dumps({**record, "run_id": "0" * 16}))
    again, recomputed = ensure_postprocessing(run, data)
    assert recomputed and again["run_id"] == record["run_id"] and again["oof_dice_chosen"] == record["oof_dice_chosen"]
