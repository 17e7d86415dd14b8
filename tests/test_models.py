"""Architecture tests: exact parameter counts (docs/method.md), shapes, layouts, freezing."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mammoseg.models import DECODERS, build_model, count_parameters, register_decoder
from mammoseg.models.encoders import PreActBlock, ResNet22Encoder, ResNet34Encoder

MODELS = [("resnet34", "unet"), ("resnet34", "fpn"), ("resnet22", "unet"), ("resnet22", "fpn")]

# docs/method.md's table (the paper's counts among them): the acceptance numbers.
ENCODER_PARAMS = {("resnet34", 3): 21_284_672, ("resnet34", 1): 21_278_400, ("resnet22", 1): 2_799_536}
DECODER_PARAMS = {
    ("resnet22", "unet"): 4_773_025,
    ("resnet34", "unet"): 6_316_705,
    ("resnet22", "fpn"): 2_338_049,
    ("resnet34", "fpn"): 2_460_929,
}
MODEL_PARAMS = {
    ("resnet22", "unet"): 7_572_561,
    ("resnet22", "fpn"): 5_137_585,
    ("resnet34", "unet"): 27_601_377,
    ("resnet34", "fpn"): 23_745_601,
}


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], nn.Module]:
    torch.manual_seed(0)
    return {key: build_model(*key).eval() for key in MODELS}


def calibrate_bn(model: nn.Module, channels: int, size: int = 64, steps: int = 2) -> None:
    """Give BatchNorm realistic running statistics, so eval-mode logits are O(1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(2, channels, size, size))
    model.eval()


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("key", MODELS, ids=lambda k: "-".join(k))
def test_parameter_counts_match_design(models, key):
    model = models[key]
    assert count_parameters(model.encoder) == ENCODER_PARAMS[(key[0], model.in_channels)]
    assert count_parameters(model.decoder) == DECODER_PARAMS[key]
    assert count_parameters(model) == MODEL_PARAMS[key]
    # all of them trainable, and encoder + decoder is the whole model
    assert count_parameters(model, trainable_only=True) == MODEL_PARAMS[key]
    assert set(dict(model.named_children())) == {"encoder", "decoder"}


def test_one_channel_resnet34_encoder_count():
    assert count_parameters(ResNet34Encoder(in_channels=1)) == 21_278_400
    assert build_model("resnet34", "unet", in_channels=1).in_channels == 1


def test_default_in_channels():
    assert build_model("resnet34", "fpn").in_channels == 3
    assert build_model("resnet22", "fpn").in_channels == 1


# --------------------------------------------------------------------------- layouts


def test_resnet34_keys_are_torchvision_layout():
    expected = {"conv1.weight"} | {f"bn1.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            expected |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            expected |= {f"{p}.{m}.{n}" for m in ("bn1", "bn2") for n in bn}
            if b == 0 and layer > 1:
                expected |= {f"{p}.downsample.0.weight"} | {f"{p}.downsample.1.{n}" for n in bn}
    assert set(ResNet34Encoder().state_dict()) == expected


def test_resnet22_structure():
    enc = ResNet22Encoder()
    assert enc.stem.kernel_size == (7, 7) and enc.stem.stride == (2, 2) and enc.stem.padding == (3, 3)
    assert enc.stem.bias is None
    assert enc.pool.kernel_size == 3 and enc.pool.stride == 2 and enc.pool.padding == 0
    for i, (cin, cout, stride) in enumerate(zip((16, 16, 32, 64, 128), (16, 32, 64, 128, 256), (1, 2, 2, 2, 2)), 1):
        first, second = getattr(enc, f"layer{i}")
        # every layer's first block has a bare 1×1 conv shortcut, even 16 → 16 at stride 1
        assert isinstance(first.downsample, nn.Conv2d)
        assert first.downsample.weight.shape == (cout, cin, 1, 1) and first.downsample.stride == (stride, stride)
        assert first.conv1.stride == (stride, stride) and second.downsample is None
    assert enc.final_bn.num_features == 256


def test_encoder_feature_shapes_and_declared_channels():
    x = torch.randn(1, 1, 512, 512)
    with torch.no_grad():
        feats22 = ResNet22Encoder().eval()(x)
        feats34 = ResNet34Encoder(in_channels=1).eval()(x)
    # ResNet22: 512 -conv/2-> 256 -pool(3,2,0)-> 127, then stride-2 3×3 convs: 64, 32, 16, 8
    assert [tuple(f.shape[1:]) for f in feats22] == [(16, 127, 127), (32, 64, 64), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert [tuple(f.shape[1:]) for f in feats34] == [(64, 256, 256), (64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16)]
    assert ResNet22Encoder.out_channels == (16, 32, 64, 128, 256)
    assert ResNet34Encoder.out_channels == (64, 64, 128, 256, 512)
    # final features of ResNet22 are after final_bn + ReLU
    assert feats22[-1].min() >= 0


def _randomise_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g)
            m.running_mean = torch.randn(n, generator=g)
            m.running_var = torch.rand(n, generator=g) + 0.5


@pytest.mark.parametrize("downsample", [True, False])
def test_preact_block_matches_gmic_formula(downsample):
    torch.manual_seed(0)
    cin, cout, stride = (8, 16, 2) if downsample else (16, 16, 1)
    block = PreActBlock(cin, cout, stride, downsample=downsample).eval()
    _randomise_bn(block)
    x = torch.randn(2, cin, 9, 11)

    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    a = F.relu(bn(x, block.bn1))
    h = F.conv2d(a, block.conv1.weight, stride=stride, padding=1)
    h = F.conv2d(F.relu(bn(h, block.bn2)), block.conv2.weight, padding=1)
    residual = F.conv2d(a, block.downsample.weight, stride=stride) if downsample else x
    with torch.no_grad():
        out = block(x)
    torch.testing.assert_close(out, h + residual, rtol=1e-5, atol=1e-5)
    # no ReLU after the addition: negative outputs survive
    assert out.min() < 0


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("key", MODELS, ids=lambda k: "-".join(k))
@pytest.mark.parametrize("size", [64, 100, 448, 512, (64, 97), (130, 77)])
def test_forward_shape(models, key, size):
    h, w = size if isinstance(size, tuple) else (size, size)
    model = models[key]
    with torch.no_grad():
        out = model(torch.randn(1, model.in_channels, h, w))
    assert out.shape == (1, 1, h, w)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("key", [("resnet34", "unet"), ("resnet22", "fpn")], ids=lambda k: "-".join(k))
def test_train_step_gives_finite_gradients_everywhere(key):
    torch.manual_seed(0)
    model = build_model(*key).train()
    out = model(torch.randn(2, model.in_channels, 64, 72))
    out.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_wrong_input_channels_is_a_clear_error(models):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        models[("resnet22", "unet")](torch.randn(1, 3, 64, 64))


def test_dropout_and_spec():
    model = build_model("resnet22", "fpn", dropout=0.35)
    assert model.decoder.head.dropout.p == 0.35
    assert model.model_spec == {"encoder": "resnet22", "decoder": "fpn", "in_channels": 1, "dropout": 0.35}
    with pytest.raises(ValueError, match="dropout"):
        build_model("resnet22", "fpn", dropout=1.5)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet50'; known: resnet22, resnet34"):
        build_model("resnet50", "unet")
    with pytest.raises(ValueError, match=r"unknown decoder 'linknet'; known: fpn, unet"):
        build_model("resnet22", "linknet")


def test_registry_adds_a_decoder_with_one_entry():
    @register_decoder("tiny-test-head")
    class TinyHead(nn.Module):
        def __init__(self, encoder_channels, dropout=0.2):
            super().__init__()
            self.conv = nn.Conv2d(encoder_channels[-1], 1, 1)
            self.channels = tuple(encoder_channels)

        def forward(self, features, size):
            return F.interpolate(self.conv(features[-1]), size=tuple(size), mode="bilinear")

    try:
        model = build_model("resnet22", "tiny-test-head").eval()
        assert model.decoder.channels == (16, 32, 64, 128, 256)
        assert count_parameters(model.decoder) == 256 + 1
        with torch.no_grad():
            assert model(torch.randn(1, 1, 70, 90)).shape == (1, 1, 70, 90)
        with pytest.raises(ValueError, match="already registered"):
            register_decoder("tiny-test-head")(TinyHead)
    finally:
        DECODERS.pop("tiny-test-head")


# --------------------------------------------------------------------------- freezing


def _bn_modes(module: nn.Module) -> set[bool]:
    return {m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d)}


def test_freeze_and_unfreeze_encoder():
    torch.manual_seed(0)
    model = build_model("resnet22", "unet")
    model.freeze_encoder()
    model.train()
    assert model.encoder_frozen
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert _bn_modes(model.encoder) == {False} and _bn_modes(model.decoder) == {True}
    enc_stats = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec_mean = model.decoder.d1.conv1[1].running_mean.clone()
    model(torch.randn(2, 1, 64, 64)).mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    for k, v in model.encoder.state_dict().items():  # running stats untouched
        assert torch.equal(v, enc_stats[k]), k
    assert not torch.equal(model.decoder.d1.conv1[1].running_mean, dec_mean)
    # eval / train round trip keeps the frozen encoder's BN in eval
    model.eval().train()
    assert _bn_modes(model.encoder) == {False}

    model.unfreeze_encoder()
    assert not model.encoder_frozen
    assert all(p.requires_grad for p in model.parameters())
    assert _bn_modes(model.encoder) == {True}
    model.eval()
    assert _bn_modes(model) == {False}
    model.train()
    assert _bn_modes(model.encoder) == {True}


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("key", MODELS, ids=lambda k: "-".join(k))
def test_channels_last_matches_contiguous(key):
    torch.manual_seed(0)
    model = build_model(*key)
    calibrate_bn(model, model.in_channels)
    x = torch.randn(1, model.in_channels, 96, 80)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    # Randomly initialised logits reach ~100, and oneDNN sums channels_last convolutions in
    # another order: compare relative to the logit scale (measured ~1.5e-5 of it).
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) <= 1e-4 * scale


@pytest.mark.parametrize("key", [("resnet34", "unet"), ("resnet22", "fpn")], ids=lambda k: "-".join(k))
def test_autocast_bfloat16_on_cpu(key):
    torch.manual_seed(0)
    model = build_model(*key)
    calibrate_bn(model, model.in_channels)
    x = torch.randn(1, model.in_channels, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    out = out.float().flatten()
    corr = torch.corrcoef(torch.stack([out, ref.flatten()]))[0, 1]
    assert corr > 0.99, float(corr)


def _compiled_output(model: nn.Module, x: torch.Tensor, **options) -> torch.Tensor:
    try:
        with torch.no_grad():
            return torch.compile(model, **options)(x)
    except Exception as exc:  # toolchain problems (no C compiler, ...) are environmental, not ours
        pytest.skip(f"torch.compile unavailable here: {type(exc).__name__}: {str(exc)[:200]}")


@pytest.mark.slow
def test_torch_compile_traces_whole_graph():
    """Dynamo captures the model as one graph (no breaks); aot_eager needs no C compiler (~5 s)."""
    torch.manual_seed(0)
    model = build_model("resnet22", "fpn").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(x)
    out = _compiled_output(model, x, backend="aot_eager", fullgraph=True)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MAMMOSEG_TEST_INDUCTOR") != "1",
    reason="inductor's first C++ build takes ~60 s on 2 cores; set MAMMOSEG_TEST_INDUCTOR=1 to run",
)
def test_torch_compile_inductor():
    torch.manual_seed(0)
    model = build_model("resnet22", "fpn").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref = model(x)
    out = _compiled_output(model, x)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
