"""Losses against values computed by hand in plain Python (the definitions in docs/method.md, "Losses")."""

import math

import pytest
import torch

from mammoseg.training.losses import combo_loss, focal_tversky_loss, soft_jaccard, tversky_index

EPS = 1e-6


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bce(x: float, g: float) -> float:
    p = sig(x)
    return -(g * math.log(p) + (1 - g) * math.log(1 - p))


def jaccard_by_hand(xs, gs, eps=EPS):
    ps = [sig(x) for x in xs]
    inter = sum(p * g for p, g in zip(ps, gs))
    return (inter + eps) / (sum(ps) + sum(gs) - inter + eps)


def tversky_by_hand(xs, gs, alpha=0.7, eps=EPS):
    ps = [sig(x) for x in xs]
    tp = sum(p * g for p, g in zip(ps, gs))
    fn = sum((1 - p) * g for p, g in zip(ps, gs))
    fp = sum(p * (1 - g) for p, g in zip(ps, gs))
    return (tp + eps) / (tp + alpha * fn + (1 - alpha) * fp + eps)


# Two 2×2 images: one with a mass in two pixels, one with an empty mask.
X1, G1 = [2.0, -1.0, 0.5, -3.0], [1, 1, 0, 0]
X2, G2 = [-2.0, 1.0, -4.0, 0.0], [0, 0, 0, 0]


def as_tensor(values):
    return torch.tensor(values, dtype=torch.float64).reshape(1, 1, 2, 2).float()


def batch(*images):
    return torch.cat([as_tensor(v) for v in images])


def test_combo_single_image_matches_hand_value():
    expected_bce = sum(bce(x, g) for x, g in zip(X1, G1)) / 4
    expected = 0.5 * expected_bce + 0.5 * (1 - jaccard_by_hand(X1, G1))
    got = combo_loss(as_tensor(X1), as_tensor(G1)).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # the weight moves the balance between the two terms
    got_w = combo_loss(as_tensor(X1), as_tensor(G1), weight=0.2).item()
    assert got_w == pytest.approx(0.8 * expected_bce + 0.2 * (1 - jaccard_by_hand(X1, G1)), rel=1e-5)


def test_combo_empty_mask_eps_role():
    # Σg = 0, so J = eps / (Σp + eps): almost 0 as soon as anything is predicted -> (1 - J) ≈ 1.
    ps = [sig(x) for x in X2]
    j = EPS / (sum(ps) + EPS)
    assert jaccard_by_hand(X2, G2) == pytest.approx(j)
    assert soft_jaccard(as_tensor(X2), as_tensor(G2)).item() == pytest.approx(j, rel=1e-4)
    expected = 0.5 * sum(bce(x, 0) for x in X2) / 4 + 0.5 * (1 - j)
    assert combo_loss(as_tensor(X2), as_tensor(G2)).item() == pytest.approx(expected, rel=1e-5)
    # An empty prediction on an empty mask: J = eps/(~0 + eps) ≈ 1, the Jaccard term vanishes.
    very_negative = as_tensor([-30.0] * 4)
    assert soft_jaccard(very_negative, as_tensor(G2)).item() == pytest.approx(1.0, abs=1e-3)


def test_combo_batch_is_mean_of_images_for_jaccard_and_pixel_mean_for_bce():
    expected_bce = (sum(bce(x, g) for x, g in zip(X1, G1)) + sum(bce(x, g) for x, g in zip(X2, G2))) / 8
    expected_j = (jaccard_by_hand(X1, G1) + jaccard_by_hand(X2, G2)) / 2
    got = combo_loss(batch(X1, X2), batch(G1, G2)).item()
    assert got == pytest.approx(0.5 * expected_bce + 0.5 * (1 - expected_j), rel=1e-5)
    # equal-sized images: the batch loss is the mean of the single-image losses
    single = [combo_loss(as_tensor(X1), as_tensor(G1)).item(), combo_loss(as_tensor(X2), as_tensor(G2)).item()]
    assert got == pytest.approx(sum(single) / 2, rel=1e-5)
    # ...but not the Jaccard of the pooled pixels (per-image sums, not batch sums)
    pooled_j = jaccard_by_hand(X1 + X2, G1 + G2)
    assert got != pytest.approx(0.5 * expected_bce + 0.5 * (1 - pooled_j), rel=1e-3)


def test_focal_tversky_matches_hand_values():
    ti1, ti2 = tversky_by_hand(X1, G1), tversky_by_hand(X2, G2)
    assert tversky_index(batch(X1, X2), batch(G1, G2)).tolist() == pytest.approx([ti1, ti2], rel=1e-4)
    ft1, ft2 = (1 - ti1) ** 0.75, (1 - ti2) ** 0.75
    assert focal_tversky_loss(as_tensor(X1), as_tensor(G1)).item() == pytest.approx(ft1, rel=1e-5)
    assert focal_tversky_loss(batch(X1, X2), batch(G1, G2)).item() == pytest.approx((ft1 + ft2) / 2, rel=1e-5)
    # alpha weighs false negatives: alpha = 0.5 gives the Dice-like symmetric index
    ti_half = tversky_by_hand(X1, G1, alpha=0.5)
    got = focal_tversky_loss(as_tensor(X1), as_tensor(G1), alpha=0.5, gamma=1.0).item()
    assert got == pytest.approx(1 - ti_half, rel=1e-5)


def test_tversky_weights_false_negatives_more_with_alpha_07():
    # image A misses one mass pixel (FN), image B adds one false pixel (FP): same magnitude
    g = [1, 1, 0, 0]
    miss = as_tensor([20.0, -20.0, -20.0, -20.0])
    extra = as_tensor([20.0, 20.0, 20.0, -20.0])
    loss_fn = focal_tversky_loss(miss, as_tensor(g)).item()
    loss_fp = focal_tversky_loss(extra, as_tensor(g)).item()
    # TI_fn = 1/(1+0.7), TI_fp = 2/(2+0.3)
    assert loss_fn == pytest.approx((1 - 1 / 1.7) ** 0.75, rel=1e-4)
    assert loss_fp == pytest.approx((1 - 2 / 2.3) ** 0.75, rel=1e-4)
    assert loss_fn > loss_fp


def test_perfect_prediction_gives_near_zero_loss():
    g = batch(G1, [0, 1, 1, 0])
    logits = (g * 2 - 1) * 30.0
    assert combo_loss(logits, g).item() < 1e-6
    assert focal_tversky_loss(logits, g).item() < 1e-4


def test_gradients_finite_including_perfect_and_empty_cases():
    g = batch(G1, G2)
    for logits in (batch(X1, X2), (g * 2 - 1) * 30.0):
        for fn in (combo_loss, focal_tversky_loss):
            x = logits.clone().requires_grad_(True)
            fn(x, g).backward()
            assert torch.isfinite(x.grad).all()


def test_float32_under_half_inputs_and_autocast():
    x16, g16 = batch(X1, X2).to(torch.bfloat16), batch(G1, G2).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = combo_loss(x16, g16)
        ft = focal_tversky_loss(x16, g16)
    assert out.dtype == torch.float32 and ft.dtype == torch.float32
    ref = combo_loss(x16.float(), g16.float()).item()
    assert out.item() == pytest.approx(ref, rel=1e-6)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ in shape"):
        combo_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3))
