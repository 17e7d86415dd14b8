"""FROC from probability maps: hand-computed curves, operating points, and agreement with `lesion_counts`."""

import cv2
import numpy as np
import pytest

from mammoseg.evaluation.froc import (
    OPERATING_POINTS,
    FrocCurve,
    envelope,
    froc_curve,
    mean_sensitivity,
    operating_sensitivities,
    sweep_image,
    sweep_thresholds,
)
from mammoseg.evaluation.metrics import lesion_counts

THRESHOLDS = (0.2, 0.5, 0.7, 0.85, 0.95)


def two_images():
    """Two 64×64 images, one 10×10 lesion each, blobs of known probability on a background of 0.

    A: the lesion at 0.8, a false 4×4 blob at 0.3.  B: the lesion at 0.6, a false 3×6 blob at 0.9."""
    prob_a, ref_a = np.zeros((64, 64)), np.zeros((64, 64), bool)
    ref_a[10:20, 10:20] = True
    prob_a[10:20, 10:20] = 0.8
    prob_a[40:44, 40:44] = 0.3
    prob_b, ref_b = np.zeros((64, 64)), np.zeros((64, 64), bool)
    ref_b[30:40, 30:40] = True
    prob_b[30:40, 30:40] = 0.6
    prob_b[5:8, 50:56] = 0.9
    return (prob_a, ref_a), (prob_b, ref_b)


def test_two_images_hand_computed_curve():
    (prob_a, ref_a), (prob_b, ref_b) = two_images()
    a = sweep_image(prob_a, ref_a, THRESHOLDS)
    b = sweep_image(prob_b, ref_b, THRESHOLDS)
    assert (a.n_ref, b.n_ref) == (1, 1)
    assert a.detected.tolist() == [1, 1, 1, 0, 0] and a.false_positives.tolist() == [1, 0, 0, 0, 0]
    assert b.detected.tolist() == [1, 1, 0, 0, 0] and b.false_positives.tolist() == [1, 1, 1, 1, 0]

    curve = froc_curve([a, b], THRESHOLDS)
    assert (curve.n_ref, curve.n_images) == (2, 2)
    assert curve.sensitivity.tolist() == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert curve.fp_per_image.tolist() == [1.0, 0.5, 0.5, 0.5, 0.0]
    assert curve.rows()[1] == {"threshold": 0.5, "sensitivity": 1.0, "fp_per_image": 0.5, "n_detected": 2,
                               "n_false_positives": 1}

    by_point = operating_sensitivities(curve)
    # 0.125, 0.25: only the t=0.95 point (no FP, nothing found); 0.5: the best of the three points
    # at 0.5 FP/image; 1: t=0.2; 2, 4, 8: the curve ends at 1 FP/image, so its last sensitivity.
    assert by_point == {0.125: 0.0, 0.25: 0.0, 0.5: 1.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    assert mean_sensitivity(by_point) == pytest.approx(5 / 7)


def test_never_that_few_false_positives_gives_zero():
    (prob_a, ref_a), (prob_b, ref_b) = two_images()
    prob_b[60:62, 0:2] = 1.0  # a false positive no threshold removes
    curve = froc_curve([sweep_image(prob_a, ref_a, THRESHOLDS), sweep_image(prob_b, ref_b, THRESHOLDS)], THRESHOLDS)
    assert curve.fp_per_image.tolist() == [1.5, 1.0, 1.0, 1.0, 0.5]
    assert operating_sensitivities(curve, (0.25, 0.5, 1.0)) == {0.25: 0.0, 0.5: 0.0, 1.0: 1.0}


def test_a_halo_that_swallows_the_lesion_is_a_false_positive():
    """At a low threshold the lesion merges into a large halo: IoU 100/1600 < 0.2, so missed and one FP."""
    prob, ref = np.zeros((64, 64)), np.zeros((64, 64), bool)
    prob[0:40, 0:40] = 0.3
    prob[10:20, 10:20] = 0.9
    ref[10:20, 10:20] = True
    sweep = sweep_image(prob, ref, (0.2, 0.5))
    assert sweep.detected.tolist() == [0, 1] and sweep.false_positives.tolist() == [1, 0]
    # with a lower lesion IoU the halo detects it
    assert sweep_image(prob, ref, (0.2, 0.5), lesion_iou=0.05).detected.tolist() == [1, 1]


def test_image_without_lesion_counts_its_false_positives_only():
    prob, ref = np.zeros((32, 32)), np.zeros((32, 32), bool)
    prob[2:4, 2:4], prob[20:22, 20:22] = 0.4, 0.7
    sweep = sweep_image(prob, ref, THRESHOLDS)
    assert sweep.n_ref == 0 and sweep.detected.tolist() == [0] * 5
    assert sweep.false_positives.tolist() == [2, 1, 1, 0, 0]


def test_sweep_equals_lesion_counts_at_every_threshold():
    """Random smooth maps with several blobs: the sweep's counts are `lesion_counts` of each thresholded map."""
    rng = np.random.default_rng(3)
    for _ in range(3):
        prob = cv2.GaussianBlur(rng.random((96, 128)), (0, 0), 3)
        prob = (prob - prob.min()) / (prob.max() - prob.min())
        ref = cv2.GaussianBlur(rng.random((96, 128)), (0, 0), 4) > 0.53
        thresholds = sweep_thresholds()
        sweep = sweep_image(prob, ref, thresholds, lesion_iou=0.1)
        for i, t in enumerate(thresholds):
            counts = lesion_counts(prob >= t, ref, iou_threshold=0.1)
            assert (sweep.n_ref, sweep.detected[i], sweep.false_positives[i]) == (
                counts["n_ref"], counts["n_detected"], counts["n_false_positive"]), t
        assert sweep.n_ref >= 2 and sweep.detected.max() >= 1 and sweep.false_positives.max() >= 2


def test_sweep_thresholds_grid_and_extra_levels():
    grid = sweep_thresholds()
    assert len(grid) == 99 + 9 + 9
    assert (grid[0], grid[98], grid[99], grid[107], grid[108], grid[-1]) == (0.01, 0.99, 0.991, 0.999, 0.9991, 0.9999)
    assert all(b > a for a, b in zip(grid, grid[1:]))
    assert sweep_thresholds([0.5]) == grid  # already on the grid
    assert sweep_thresholds([0.425]) == tuple(sorted(grid + (0.425,)))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        sweep_thresholds([0.0])
    assert OPERATING_POINTS == (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def test_bad_input_is_refused():
    prob, ref = np.zeros((8, 8)), np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="one shape"):
        sweep_image(prob, np.zeros((8, 9), bool), THRESHOLDS)
    with pytest.raises(ValueError, match="increasing"):
        sweep_image(prob, ref, (0.5, 0.2))
    with pytest.raises(ValueError, match="no reference lesions"):
        froc_curve([sweep_image(prob, ref, THRESHOLDS)], THRESHOLDS)


def test_an_operating_point_takes_the_best_sensitivity_within_its_budget():
    """The halo image: at 0.2 the lesion is missed and the halo is 1 FP/image; at 0.5 it is found
    with none. Within a budget of 1 FP/image the reader has the 0.5 point: sensitivity 1, not 0."""
    prob, ref = np.zeros((64, 64)), np.zeros((64, 64), bool)
    prob[0:40, 0:40] = 0.3
    prob[10:20, 10:20] = 0.9
    ref[10:20, 10:20] = True
    curve = froc_curve([sweep_image(prob, ref, (0.2, 0.5, 0.95))], (0.2, 0.5, 0.95))
    assert curve.sensitivity.tolist() == [0.0, 1.0, 0.0] and curve.fp_per_image.tolist() == [1.0, 0.0, 0.0]
    assert operating_sensitivities(curve, (0.125, 1.0, 8.0)) == {0.125: 1.0, 1.0: 1.0, 8.0: 1.0}


def test_the_plotted_envelope_is_the_operating_point_rule_at_every_level():
    fp = [1.0, 0.5, 0.5, 2.0, 0.0, 0.5]
    sens = [0.25, 0.75, 0.5, 0.5, 0.0, 0.25]
    levels, best = envelope(fp, sens)
    assert levels.tolist() == [0.0, 0.5, 1.0, 2.0]
    assert best.tolist() == [0.0, 0.75, 0.75, 0.75]
    # the same numbers as operating_sensitivities at those levels (4 images, 4 lesions)
    curve = FrocCurve(tuple(range(6)), np.array(sens) * 4, np.array(fp) * 4, 4, 4)
    assert operating_sensitivities(curve, tuple(levels)) == dict(zip(levels.tolist(), best.tolist()))
