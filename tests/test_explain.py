"""Attention maps and relative position logits: against the layer's own formula and timm's extractor."""

import os

import pytest
import torch
from PIL import Image

import botnet
from botnet.cli import main
from botnet.explain import attention_maps, query_index, record_attention, relative_position_maps
from botnet.layers import MHSA, resize_position_table
from botnet.tasks import TrainConfig, train


def small_model(**overrides):
    torch.manual_seed(0)
    return botnet.create_model("botnet26t_256", num_classes=3, width_multiplier=0.25, zero_init_last=False, **overrides)


def test_maps_are_the_probabilities_that_give_each_layers_output():
    model = small_model().train()
    images = torch.rand(2, 3, 64, 80)
    inputs, outputs = {}, {}

    def keep(module, args, out):
        inputs[module], outputs[module] = args[0], out

    for layer in model.modules():
        if isinstance(layer, MHSA):
            layer.register_forward_hook(keep)
    maps = attention_maps(model, images)
    assert model.training and all(m.impl == "auto" for m in model.modules() if isinstance(m, MHSA))  # put back
    assert set(maps) == {n for n, m in model.named_modules() if isinstance(m, MHSA)}
    for name, probs in maps.items():
        layer = model.get_submodule(name)
        batch, channels, height, width = inputs[layer].shape
        assert probs.shape == (2, layer.heads, height * width, height * width)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
        # probabilities times the values, heads concatenated, is the layer's output
        v = layer.qkv(inputs[layer]).flatten(2)[:, -channels:].unflatten(1, (layer.heads, -1)).transpose(-1, -2)
        out = (probs @ v).transpose(-1, -2).reshape(batch, channels, height, width)
        torch.testing.assert_close(out, outputs[layer], atol=1e-5, rtol=1e-4)


def test_a_downsampling_block_attends_before_its_pooling():
    model = small_model().eval()
    records = record_attention(model, torch.rand(1, 3, 96, 64))
    first_c5 = records["layer4.0.mhsa"]  # stride-2 BoT block: attends at c4's size, 6x4
    assert first_c5.size == (6, 4) and records["layer4.1.mhsa"].size == (3, 2)


def test_timm_attention_extract_sees_the_same_maps():
    timm_utils = pytest.importorskip("timm.utils")
    model = small_model().eval()
    images = torch.rand(2, 3, 64, 64)
    ours = attention_maps(model, images)
    theirs = timm_utils.AttentionExtract(model, names=["*mhsa.softmax"], method="fx")(images)
    assert {k.removesuffix(".softmax") for k in theirs} == set(ours)
    for name, probs in theirs.items():
        torch.testing.assert_close(probs, ours[name.removesuffix(".softmax")])


def test_relative_position_maps_by_brute_force():
    model = small_model().eval()
    images = torch.rand(2, 3, 64, 96)
    name = "layer4.0.mhsa"
    layer = model.get_submodule(name)
    record = record_attention(model, images)[name]
    height, width = record.size
    maps = relative_position_maps(layer, record)
    assert maps.shape == (layer.heads, 2 * height - 1, 2 * width - 1)
    d = layer.qk_head_dim
    s = d**-0.5 if layer.scale_position else 1.0
    rel_h = resize_position_table(layer.rel_h, 2 * height - 1).detach()
    rel_w = resize_position_table(layer.rel_w, 2 * width - 1).detach()
    for head in range(layer.heads):
        mean_query = record.queries[:, head].reshape(-1, d).mean(0)
        for dy in (-(height - 1), 0, height - 1):
            for dx in (-(width - 1), 1, width - 1):
                expected = s * mean_query @ (rel_h[dy + height - 1] + rel_w[dx + width - 1])
                torch.testing.assert_close(maps[head, dy + height - 1, dx + width - 1], expected)


def test_query_points():
    assert query_index((0.0, 0.0), (4, 5)) == 0
    assert query_index((1.0, 1.0), (4, 5)) == 19
    assert query_index((0.5, 0.5), (4, 5)) == 2 * 5 + 2
    with pytest.raises(ValueError, match="fractions"):
        query_index((1.5, 0.0), (4, 5))


def test_a_model_without_attention_says_so():
    with pytest.raises(ValueError, match="no attention layers"):
        attention_maps(botnet.create_model("resnet50", num_classes=2), torch.rand(1, 3, 64, 64))


def test_cli_draws_maps_and_position_logits(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(TrainConfig(epochs=1, output_dir=str(run_dir)))
    image = tmp_path / "digit.png"
    Image.new("L", (24, 24), 0).save(image)
    output = str(tmp_path / "maps.png")
    checkpoint = str(run_dir / "model.safetensors")
    assert main(["attention", "--checkpoint", checkpoint, str(image), "--points", "0.5,0.5", "--output", output]) == 0
    assert "layer4.0.mhsa (6x6)" in capsys.readouterr().out
    for path in (output, str(tmp_path / "maps_position.png")):
        assert os.path.getsize(path) > 10_000 and Image.open(path).size[0] > 400
    assert main(["attention", "--checkpoint", checkpoint, str(image), "--points", "2,0.5"]) == 2
    assert "fractions" in capsys.readouterr().err
