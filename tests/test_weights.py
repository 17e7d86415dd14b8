"""Pretrained-weight loading: torchvision and GMIC layouts, 1-channel conv1, clear errors.

Checkpoints are built here from the project's own encoders with random values and renamed
keys, so every tensor's destination can be checked by value.
"""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
import torch

from mammoseg.models import build_model
from mammoseg.models.encoders import ResNet22Encoder, ResNet34Encoder
from mammoseg.models.weights import WeightsError, imagenet_cache_path, load_encoder_weights

IMAGENET_FILE = "resnet34-b627a593.pth"


def random_state(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The module's state dict with every tensor replaced by distinct random values."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.randint(1, 1000, (), generator=g)
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g)
    return out


def torchvision_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """A resnet34 ImageNet-style file: encoder keys, an fc classifier, no num_batches_tracked."""
    state = {k: v for k, v in random_state(ResNet34Encoder(), seed).items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    return state


def gmic_name(key: str) -> str:
    """Our ResNet22 key → GMIC's (written out independently of the loader's rules)."""
    if key == "stem.weight":
        return "ds_net.first_conv.weight"
    if key.startswith("final_bn."):
        return "ds_net." + key
    layer, block, rest = key.split(".", 2)
    i = int(layer[len("layer"):]) - 1
    if rest == "downsample.weight":
        rest = "downsample.0.weight"
    return f"ds_net.layer_list.{i}.{block}.{rest}"


def gmic_checkpoint(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(our-layout reference, GMIC-layout file dict with GMIC's other sub-networks beside it)."""
    ours = random_state(ResNet22Encoder(), seed)
    gmic = {gmic_name(k): v for k, v in ours.items()}
    gmic["left_postprocess_net.gn_conv_last.weight"] = torch.randn(2, 256, 1, 1)
    gmic["dn_resnet.conv1.weight"] = torch.randn(64, 1, 7, 7)  # GMIC's local network
    gmic["mil_attn_V.weight"] = torch.randn(128, 512)
    return ours, gmic


def assert_state_equal(module: torch.nn.Module, expected: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    got = module.state_dict()
    for k, v in got.items():
        if k in skip:
            continue
        if k in expected:
            assert torch.equal(v, expected[k].to(v.dtype)), k
        else:
            assert k.endswith("num_batches_tracked"), f"{k} was not in the file"


# --------------------------------------------------------------------------- torchvision layout


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_local_torchvision_checkpoint_loads_every_tensor(tmp_path, wrap):
    state = torchvision_checkpoint()
    path = tmp_path / "resnet34.pth"
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, path)
    model = build_model("resnet34", "unet", encoder_weights=path)
    expected = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert len(model.encoder.state_dict()) - len(expected) == 36  # only num_batches_tracked left
    assert_state_equal(model.encoder, expected)


def test_one_channel_resnet34_sums_conv1_over_rgb(tmp_path):
    state = torchvision_checkpoint(seed=1)
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)
    grey = build_model("resnet34", "fpn", encoder_weights=str(path), in_channels=1).encoder.eval()
    rgb = build_model("resnet34", "fpn", encoder_weights=str(path)).encoder.eval()
    w = state["conv1.weight"]
    expected = w[:, 0:1] + w[:, 1:2] + w[:, 2:3]
    torch.testing.assert_close(grey.conv1.weight, expected, rtol=0, atol=1e-6)
    assert_state_equal(grey, state, skip=("conv1.weight",))
    # a grey image replicated to RGB gives the same stem and layer1 features (deeper ones
    # overflow with unit-variance random weights); relative to their scale, float32 rounding
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        for a, b in list(zip(grey(x), rgb(x.repeat(1, 3, 1, 1))))[:2]:
            assert torch.isfinite(b).all()
            assert float((a - b).abs().max()) <= 1e-5 * float(b.abs().max())


def test_mammoseg_model_state_dict_gives_its_encoder(tmp_path):
    source = build_model("resnet22", "unet")
    for p in source.parameters():
        p.data.normal_()
    path = tmp_path / "model.pt"
    torch.save({"model": source.state_dict()}, path)
    model = build_model("resnet22", "fpn", encoder_weights=path)
    assert_state_equal(model.encoder, source.encoder.state_dict())


# --------------------------------------------------------------------------- GMIC layout


@pytest.mark.parametrize("how", ["gmic-prefix", "plain-path", "wrapped"])
def test_gmic_checkpoint_loads_every_tensor(tmp_path, how):
    ours, gmic = gmic_checkpoint()
    path = tmp_path / "sample_model_1.p"
    torch.save({"state_dict": gmic} if how == "wrapped" else gmic, path)
    spec = f"gmic:{path}" if how == "gmic-prefix" else str(path)
    model = build_model("resnet22", "unet", encoder_weights=spec)
    assert_state_equal(model.encoder, ours)
    assert len([k for k in gmic if k.startswith("ds_net.")]) == len(model.encoder.state_dict())


def test_gmic_checkpoint_without_num_batches_tracked(tmp_path):
    ours, gmic = gmic_checkpoint(seed=2)
    gmic = {k: v for k, v in gmic.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.p"
    torch.save(gmic, path)
    enc = ResNet22Encoder()
    load_encoder_weights(enc, f"gmic:{path}")
    assert_state_equal(enc, {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")})


def test_gmic_missing_and_unknown_keys_are_listed(tmp_path):
    _, gmic = gmic_checkpoint()
    del gmic["ds_net.layer_list.3.1.conv2.weight"]
    del gmic["ds_net.final_bn.bias"]
    gmic["ds_net.layer_list.5.0.conv1.weight"] = torch.randn(3, 3, 3, 3)
    path = tmp_path / "bad.p"
    torch.save(gmic, path)
    with pytest.raises(WeightsError) as err:
        build_model("resnet22", "fpn", encoder_weights=f"gmic:{path}")
    msg = str(err.value)
    assert msg.startswith(str(path))
    assert "2 missing keys: layer4.1.conv2.weight, final_bn.bias" in msg
    assert "1 unexpected keys: layer6.0.conv1.weight" in msg


def test_gmic_file_without_ds_net(tmp_path):
    path = tmp_path / "other.p"
    torch.save({"dn_resnet.conv1.weight": torch.randn(2, 1, 3, 3)}, path)
    with pytest.raises(WeightsError, match=r"no GMIC global-network keys \(ds_net\.\*\).*dn_resnet"):
        build_model("resnet22", "unet", encoder_weights=f"gmic:{path}")


def test_gmic_weights_refused_for_resnet34(tmp_path):
    _, gmic = gmic_checkpoint()
    path = tmp_path / "sample_model_1.p"
    torch.save(gmic, path)
    with pytest.raises(WeightsError, match="GMIC weights fit the resnet22 encoder, not 'resnet34'"):
        build_model("resnet34", "unet", encoder_weights=f"gmic:{path}")


# --------------------------------------------------------------------------- errors


def test_missing_unexpected_and_shape_mismatch_are_all_listed(tmp_path):
    state = torchvision_checkpoint()
    del state["layer3.4.bn2.running_var"]
    state["layer5.0.conv1.weight"] = torch.randn(1)
    state["layer2.0.downsample.0.weight"] = torch.randn(128, 32, 1, 1)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        build_model("resnet34", "unet", encoder_weights=path)
    msg = str(err.value)
    assert str(path) in msg
    assert "1 missing keys: layer3.4.bn2.running_var" in msg
    assert "1 unexpected keys: layer5.0.conv1.weight" in msg
    assert "layer2.0.downsample.0.weight: file (128, 32, 1, 1) vs model (128, 64, 1, 1)" in msg


def test_resnet22_checkpoint_into_resnet34_lists_keys(tmp_path):
    path = tmp_path / "r22.pth"
    torch.save(random_state(ResNet22Encoder(), 0), path)
    with pytest.raises(WeightsError, match=r"missing keys: conv1\.weight, bn1\.weight.*unexpected keys: stem\.weight"):
        build_model("resnet34", "fpn", encoder_weights=path)


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save(torchvision_checkpoint(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=re.escape(str(path)) + r": cannot be read as a PyTorch weights file"):
        build_model("resnet34", "unet", encoder_weights=path)


def test_not_a_checkpoint_and_no_tensors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("this is not a checkpoint\n")
    with pytest.raises(WeightsError, match=re.escape(str(junk))):
        build_model("resnet22", "unet", encoder_weights=junk)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3, "note": "no tensors"}, empty)
    with pytest.raises(WeightsError, match="holds no state dict of tensors"):
        build_model("resnet22", "unet", encoder_weights=empty)
    with pytest.raises(FileNotFoundError, match="nope.pth: weights file not found"):
        build_model("resnet22", "unet", encoder_weights=tmp_path / "nope.pth")


# --------------------------------------------------------------------------- ImageNet via the hub cache


@pytest.fixture
def hub_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return tmp_path / "torch-home"


def test_imagenet_cache_path_follows_torch_home(hub_home):
    assert imagenet_cache_path() == hub_home / "hub" / "checkpoints" / IMAGENET_FILE


def test_imagenet_without_cache_or_network_says_where_to_put_the_file(hub_home, monkeypatch):
    calls = []

    def no_network(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError) as err:
        build_model("resnet34", "unet", encoder_weights="imagenet")
    expected_path = hub_home / "hub" / "checkpoints" / IMAGENET_FILE
    assert f"copy that file to {expected_path}" in str(err.value)
    assert "no route to host" in str(err.value)
    assert calls == [("https://download.pytorch.org/models/resnet34-b627a593.pth", "b627a593")]


def test_imagenet_uses_the_cached_file_without_downloading(hub_home, monkeypatch):
    state = torchvision_checkpoint(seed=5)
    cached = hub_home / "hub" / "checkpoints" / IMAGENET_FILE
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)

    def forbidden(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", forbidden)
    model = build_model("resnet34", "fpn", encoder_weights="imagenet")
    assert_state_equal(model.encoder, {k: v for k, v in state.items() if not k.startswith("fc.")})


def test_imagenet_download_lands_in_the_cache(hub_home, monkeypatch):
    state = torchvision_checkpoint(seed=6)

    def fake_download(url, dst, hash_prefix=None, progress=True):
        assert hash_prefix == "b627a593"  # the hash check is requested
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = build_model("resnet34", "unet", encoder_weights="imagenet")
    assert (hub_home / "hub" / "checkpoints" / IMAGENET_FILE).is_file()
    assert_state_equal(model.encoder, {k: v for k, v in state.items() if not k.startswith("fc.")})


def test_imagenet_refused_for_resnet22(hub_home):
    with pytest.raises(WeightsError, match=r"no ImageNet weights for encoder 'resnet22' \(available for: resnet34\)"):
        build_model("resnet22", "unet", encoder_weights="imagenet")
