"""Dice/IoU, lesion counting and summaries on hand-made masks with known answers."""

import math

import numpy as np
import pytest

from mammoseg.evaluation.metrics import dice_iou, fmt_mean_sd, lesion_counts, summarise


def blank(h=64, w=64):
    return np.zeros((h, w), dtype=bool)


def test_dice_iou_exact_fractions():
    ref, pred = blank(8, 8), blank(8, 8)
    ref[0, 0:6] = True  # 6 pixels
    pred[0, 3:7] = True  # 4 pixels, 3 shared
    dice, iou = dice_iou(pred, ref)
    assert dice == pytest.approx(2 * 3 / (4 + 6)) and iou == pytest.approx(3 / 7)
    # Dice = 2·IoU / (1 + IoU) must hold for any pair
    assert dice == pytest.approx(2 * iou / (1 + iou))
    # 0/255 uint8 masks (as stored in PNGs) score the same as booleans
    assert dice_iou(pred.astype(np.uint8) * 255, ref.astype(np.uint8) * 255) == (dice, iou)
    # symmetric
    assert dice_iou(ref, pred) == (dice, iou)


def test_identical_and_disjoint():
    ref = blank()
    ref[10:20, 10:20] = True
    assert dice_iou(ref, ref) == (1.0, 1.0)
    other = blank()
    other[40:50, 40:50] = True
    assert dice_iou(other, ref) == (0.0, 0.0)


def test_empty_mask_convention():
    empty, some = blank(), blank()
    some[5, 5] = True
    assert dice_iou(empty, empty) == (1.0, 1.0)
    assert dice_iou(some, empty) == (0.0, 0.0)  # reference empty, prediction not
    assert dice_iou(empty, some) == (0.0, 0.0)  # prediction empty, reference not


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        dice_iou(blank(4, 4), blank(4, 5))
    with pytest.raises(ValueError, match="2-D"):
        dice_iou(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))


def test_lesion_counts_detected_missed_and_false_positive():
    ref, pred = blank(), blank()
    ref[5:15, 5:15] = True  # lesion A, 100 px
    ref[40:50, 40:50] = True  # lesion B, 100 px
    pred[7:17, 5:15] = True  # overlaps A: 80 / 120 = 0.667
    pred[5:15, 40:50] = True  # far from both: a false positive
    assert lesion_counts(pred, ref) == {"n_ref": 2, "n_detected": 1, "n_false_positive": 1}


def test_lesion_iou_threshold_is_inclusive():
    ref, pred = blank(), blank()
    ref[40:50, 40:50] = True  # 100 px
    pred[40:42, 40:50] = True  # 20 px inside: IoU exactly 0.2
    assert lesion_counts(pred, ref, iou_threshold=0.2) == {"n_ref": 1, "n_detected": 1, "n_false_positive": 0}
    assert lesion_counts(pred, ref, iou_threshold=0.25) == {"n_ref": 1, "n_detected": 0, "n_false_positive": 1}


def test_lesion_components_use_8_connectivity():
    ref, pred = blank(), blank()
    ref[10:20, 10:20] = True
    pred[10:15, 10:15] = True
    pred[15:20, 15:20] = True  # touches the first block only at a corner: still one component
    # one component of 50 px inside the 100 px lesion: IoU 0.5
    assert lesion_counts(pred, ref) == {"n_ref": 1, "n_detected": 1, "n_false_positive": 0}
    ref2 = blank()
    ref2[10:15, 10:15] = True
    ref2[15:20, 15:20] = True
    assert lesion_counts(ref2, ref2)["n_ref"] == 1


def test_lesion_counts_empty_cases():
    empty, some = blank(), blank()
    some[3:6, 3:6] = True
    assert lesion_counts(empty, empty) == {"n_ref": 0, "n_detected": 0, "n_false_positive": 0}
    assert lesion_counts(some, empty) == {"n_ref": 0, "n_detected": 0, "n_false_positive": 1}
    assert lesion_counts(empty, some) == {"n_ref": 1, "n_detected": 0, "n_false_positive": 0}
    with pytest.raises(ValueError, match="threshold"):
        lesion_counts(some, some, iou_threshold=0.0)


def test_summarise_known_values():
    s = summarise([0.2, 0.4, 0.9], [0.1, 0.3, 0.8], seed=0, n_boot=500)
    assert s["n"] == 3
    assert s["dice_mean"] == pytest.approx(0.5)
    assert s["dice_sd"] == pytest.approx(math.sqrt((0.3**2 + 0.1**2 + 0.4**2) / 2))  # ddof = 1
    assert s["dice_median"] == pytest.approx(0.4)
    assert s["iou_mean"] == pytest.approx(0.4) and s["iou_median"] == pytest.approx(0.3)
    lo, hi = s["dice_ci95"]
    assert 0.2 <= lo <= 0.5 <= hi <= 0.9
    assert summarise([0.2, 0.4, 0.9], [0.1, 0.3, 0.8], seed=0, n_boot=500)["dice_ci95"] == [lo, hi]


def test_summarise_bootstrap_matches_normal_theory():
    rng = np.random.default_rng(1)
    d = rng.normal(0.7, 0.2, size=400)
    s = summarise(d, d, seed=3, n_boot=2000)
    half_width_theory = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    lo, hi = s["dice_ci95"]
    assert (hi - lo) / 2 == pytest.approx(half_width_theory, rel=0.12)
    assert (lo + hi) / 2 == pytest.approx(d.mean(), abs=0.25 * half_width_theory)


def test_summarise_edge_cases():
    s = summarise([0.8], [0.6])
    assert s["dice_sd"] is None and s["dice_ci95"] == [0.8, 0.8]
    assert summarise([0.5] * 5, [0.5] * 5)["dice_ci95"] == [0.5, 0.5]
    with pytest.raises(ValueError, match="no values"):
        summarise([], [])
    assert fmt_mean_sd(0.76771, 0.21344) == "0.7677 ± 0.2134"
    assert fmt_mean_sd(0.5, None) == "0.5000 ± n/a"


def _four_views(patient_scores):
    """Dice per image and its patient id: four views per patient."""
    dices = [d for scores in patient_scores for d in scores]
    patients = [f"p{i}" for i, scores in enumerate(patient_scores) for _ in scores]
    return dices, patients


@pytest.mark.timeout(30)
def test_patient_bootstrap_is_wider_when_a_patients_views_score_alike():
    # 12 patients, each scoring the same on all four views: 12 independent draws, not 48.
    dices, patients = _four_views([[v] * 4 for v in np.linspace(0.1, 0.95, 12)])
    by_image = summarise(dices, dices, seed=7, n_boot=4000)
    by_patient = summarise(dices, dices, seed=7, n_boot=4000, patients=patients)
    assert (by_image["ci_unit"], by_image["n_patients"]) == ("image", None)
    assert (by_patient["ci_unit"], by_patient["n_patients"]) == ("patient", 12)
    width_image = by_image["dice_ci95"][1] - by_image["dice_ci95"][0]
    width_patient = by_patient["dice_ci95"][1] - by_patient["dice_ci95"][0]
    # resampling 12 patients instead of 48 images: about sqrt(48 / 12) = 2 times as wide
    assert width_patient == pytest.approx(2 * width_image, rel=0.2)
    assert by_patient["dice_mean"] == by_image["dice_mean"]


@pytest.mark.timeout(30)
def test_patient_bootstrap_of_patients_with_equal_means_has_no_spread():
    # Every patient's views average 0.5: any resample of patients has mean 0.5 exactly, while
    # resampling the images one by one scatters the mean.
    dices, patients = _four_views([[0.2, 0.8, 0.3, 0.7]] * 10)
    assert summarise(dices, dices, seed=0, n_boot=500, patients=patients)["dice_ci95"] == [0.5, 0.5]
    lo, hi = summarise(dices, dices, seed=0, n_boot=500)["dice_ci95"]
    assert hi - lo > 0.1


@pytest.mark.timeout(30)
def test_patient_bootstrap_is_reproducible_and_falls_back_to_images():
    rng = np.random.default_rng(5)
    dices = rng.uniform(0, 1, 40).tolist()
    patients = [f"p{i // 4}" for i in range(40)]
    first = summarise(dices, dices, seed=3, n_boot=1000, patients=patients)
    assert summarise(dices, dices, seed=3, n_boot=1000, patients=patients) == first  # bit for bit
    assert summarise(dices, dices, seed=4, n_boot=1000, patients=patients)["dice_ci95"] != first["dice_ci95"]
    # one image without a patient id: the images are resampled, as without any ids
    patients[5] = ""
    fallback = summarise(dices, dices, seed=3, n_boot=1000, patients=patients)
    assert fallback["ci_unit"] == "image"
    assert fallback["dice_ci95"] == summarise(dices, dices, seed=3, n_boot=1000)["dice_ci95"]
    with pytest.raises(ValueError, match="40 Dice values but 3 patient ids"):
        summarise(dices, dices, patients=["a", "b", "c"])
