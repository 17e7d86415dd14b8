"""The folds as one batched model (`StackedEnsemble`, torch.vmap) give the loop's probabilities."""

from __future__ import annotations

import pytest
import torch

from mammoseg.inference.ensemble import StackedEnsemble, ensemble_probability, load_ensemble, looped_probability

from run_factory import write_random_run


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tta", [False, True])
def test_stacked_equals_the_loop(tmp_path, tta):
    members = load_ensemble(write_random_run(tmp_path / "run", folds=(0, 1, 2))).members
    images = torch.rand(2, 1, 96, 80, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        loop = looped_probability(members, images, tta=tta)
        stacked = StackedEnsemble(members)(images, tta=tta)
    assert stacked.shape == loop.shape == (2, 1, 96, 80) and float(loop.std()) > 0.05
    assert float((stacked - loop).abs().max()) < 1e-5
    # each fold's own normalisation counts: swapping two folds' means changes the result
    members[0].norm, members[1].norm = members[1].norm, members[0].norm
    with torch.inference_mode():
        assert float((StackedEnsemble(members)(images, tta=tta) - loop).abs().max()) > 1e-3


@pytest.mark.timeout(60)
def test_ensemble_probability_runs_the_stacked_model_without_autograd(tmp_path):
    members = load_ensemble(write_random_run(tmp_path / "run", folds=(0, 1))).members
    images = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fast = ensemble_probability(members, images)
        assert float((fast - looped_probability(members, images)).abs().max()) < 1e-5
    with torch.enable_grad():  # with autograd: the loop, whose graph reaches every member's weights
        slow = ensemble_probability(members, images)
    assert slow.requires_grad and float((slow.detach() - fast).abs().max()) < 1e-5
