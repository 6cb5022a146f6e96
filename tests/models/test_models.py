"""One suite over every registered model, plus the family's fixed facts."""

import dataclasses
import re

import pytest
import torch
import torchvision
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import botnet
from botnet.layers import BoTBlock, Bottleneck
from botnet.models import ModelConfig, get_model_entry, summarize

MODELS = botnet.list_models()
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Two sizes: square and non-square odd, small enough for CI, at least 32 (the largest downsampling).
SIZES = [(64, 64), (45, 67)]


def is_s1(name: str) -> bool:
    return get_model_entry(name).config.stages[3].stride == 1


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_every_parameter_learns(name, device):
    torch.manual_seed(0)
    # zero_init_last=False: with the last BN at zero, the inner layers of each block get zero gradient at init.
    model = botnet.create_model(name, num_classes=7, zero_init_last=False, drop_rate=0.0, drop_path_rate=0.0)
    model.to(device).train()
    for size in SIZES:
        model.zero_grad()
        x = torch.randn(2, 3, *size, device=device)
        logits = model(x)
        assert logits.shape == (2, 7)
        assert torch.isfinite(logits).all()
        torch.nn.functional.cross_entropy(logits, torch.tensor([1, 5], device=device)).backward()
        for param_name, param in model.named_parameters():
            assert param.grad is not None, f"{param_name} got no gradient at {size}"
            assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient at {size}"
            assert param.grad.abs().sum() > 0, f"{param_name} got a zero gradient at {size}"


@pytest.mark.parametrize("name", MODELS)
def test_features_only(name):
    model = botnet.create_model(name, features_only=True).eval()
    height, width = 96, 70
    with torch.no_grad():
        features = model(torch.randn(1, 3, height, width))
    config = get_model_entry(name).config
    if config.stem == "small":
        strides = [1, 2, 4, 8]
    else:
        strides = [4, 8, 16, 16 if is_s1(name) else 32]
    assert [f["reduction"] for f in model.feature_info] == strides
    assert len(features) == 4
    for feature, info, stride in zip(features, model.feature_info, strides):
        assert feature.shape == (1, info["num_chs"], -(-height // stride), -(-width // stride))
    assert not hasattr(model, "fc")


def test_out_indices_drop_unused_stages():
    model = botnet.create_model("botnet50", features_only=True, out_indices=(0, 2))
    assert not hasattr(model, "layer3") and not hasattr(model, "layer4")
    features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1:] for f in features] == [(64, 32, 32), (512, 8, 8)]
    with pytest.raises(ValueError, match="out_indices"):
        botnet.create_model("botnet50", features_only=True, out_indices=(1, 5))


def test_model_interface():
    torch.manual_seed(0)
    model = botnet.create_model("botnet50", num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, model.num_features, 2, 2) and model.num_features == 2048
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (2, 2048)
        torch.testing.assert_close(model.forward_head(features), model(x))
        torch.testing.assert_close(model.fc(pooled), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, 2048)
    assert [f["module"] for f in model.feature_info] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # the fast CPU/GPU conv layout


def test_resnet50_loads_torchvision_weights_strictly():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    for module in reference.modules():  # make the norms non-trivial
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
    # Our models keep conv weights channels_last; compare in the same layout (same kernels, same rounding).
    reference.eval().to(memory_format=torch.channels_last)
    ours = botnet.create_model("resnet50").eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))
    # The loader gives the same result, classifier included.
    fresh = botnet.create_model("resnet50").eval()
    loaded = botnet.load_resnet_weights(fresh, reference.state_dict(), include_classifier=True)
    assert len(loaded) == len(reference.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), reference(x))


def test_botnet50_c1_to_c4_load_torchvision_weights(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval().to(memory_format=torch.channels_last)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = botnet.create_model("botnet50").eval()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("layer4")}
    loaded = botnet.load_resnet_weights(model, path)
    assert loaded and not any(k.startswith(("layer4", "fc")) for k in loaded)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("layer4"))
    x = torch.randn(1, 3, 80, 112)
    stem = torch.nn.Sequential(reference.conv1, reference.bn1, reference.relu, reference.maxpool)
    c1_c4 = torch.nn.Sequential(stem, reference.layer1, reference.layer2, reference.layer3)
    with torch.no_grad():
        ours = model.layer3(model.layer2(model.layer1(model.maxpool(model.forward_stem(x)))))
        torch.testing.assert_close(ours, c1_c4(x))


def test_load_resnet_weights_errors(tmp_path):
    model = botnet.create_model("botnet50")
    resnet101 = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match="lacks"):
        botnet.load_resnet_weights(model, resnet101)
    wrong = botnet.create_model("resnet50", stem_width=32).state_dict()
    with pytest.raises(ValueError, match="differ in shape"):
        botnet.load_resnet_weights(model, {**torchvision.models.resnet50().state_dict(), "conv1.weight": wrong["conv1.weight"]})
    with pytest.raises(FileNotFoundError):
        botnet.load_resnet_weights(model, tmp_path / "missing.pth")
    payload = tmp_path / "payload.pth"
    torch.save({"conv1.weight": torch.zeros(1), "hook": print}, payload)  # a pickle that would call code
    with pytest.raises(ValueError, match="cannot read"):
        botnet.load_resnet_weights(model, payload)


def test_parameter_counts():
    counts = {name: summarize(botnet.create_model(name), 64).params for name in ["resnet50", "botnet50", "botnet50_s1"]}
    assert counts["resnet50"] == 25_557_032
    for name in ["botnet50", "botnet50_s1"]:
        assert abs(counts[name] - 20.8e6) / 20.8e6 < 0.01, (name, counts[name])


def test_flops_count_attention_and_match_resnet():
    """The counter sees the convolutions exactly as for torchvision's ResNet-50, and sees the attention."""
    ours = summarize(botnet.create_model("resnet50"), 224)
    reference = torchvision.models.resnet50(weights=None).eval()
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.zeros(1, 3, 224, 224))
    assert ours.flops == counter.get_total_flops()
    bot = summarize(botnet.create_model("botnet50", position_encoding="none"), 224)
    # botnet50 - resnet50 = (qkv - conv2) in three c5 blocks + attention (q k^T and attn v).
    d, heads = 128, 4
    conv2 = 2 * (512 * 512 * 9) * (7 * 7) * 3
    qkv = 2 * (512 * 1536) * (14 * 14 + 7 * 7 + 7 * 7)
    attention = sum(2 * 2 * heads * n * n * d for n in (14 * 14, 7 * 7, 7 * 7))
    assert bot.flops - ours.flops == qkv + attention - conv2


def test_stage_shapes_and_min_size():
    model = botnet.create_model("botnet50_s1")
    summary = summarize(model, (100, 61))
    assert summary.stage_shapes[-1] == ("layer4", (1, 2048, 7, 4))
    small = botnet.create_model("botnet50", small_stem=True, num_classes=10)
    assert small.min_input_size == 8
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert summarize(small, 32).stage_shapes[1] == ("layer1", (1, 256, 32, 32))


def test_overrides_place_blocks():
    model = botnet.create_model("botnet50", bot_blocks=(0, 0, 1, -1), heads=8, position_encoding="absolute")
    assert [type(b) for b in model.layer3] == [Bottleneck] * 5 + [BoTBlock]
    assert all(isinstance(b, BoTBlock) for b in model.layer4)
    assert model.layer3[-1].mhsa.feat_size == (14, 14) and model.layer3[-1].mhsa.heads == 8
    assert model.layer4[0].mhsa.position_encoding == "absolute"
    only_c4 = botnet.create_model("resnet50", bot_blocks=(0, 0, 1, 0))
    assert sum(isinstance(m, BoTBlock) for m in only_c4.modules()) == 1
    s2 = botnet.create_model("botnet50_s1", c5_stride=2)
    assert s2.feature_info[-1]["reduction"] == 32
    deeper = botnet.create_model("botnet50", depths=(1, 1, 2, 5), width_multiplier=0.25)
    assert len(deeper.layer4) == 5 and all(isinstance(b, BoTBlock) for b in deeper.layer4)
    assert deeper.num_features == 512


def test_t_model_settings():
    model = botnet.create_model("botnet_t7")
    assert model.img_size == (384, 384)
    assert model.layer4[0].mhsa.feat_size == (24, 24)  # stride-1 c5 at 384 / 16
    assert all(b.se is not None for stage in (model.layer1, model.layer2, model.layer3) for b in stage)
    assert not any(isinstance(m, torchvision.ops.SqueezeExcitation) for m in model.layer4.modules())
    assert isinstance(model.act1, torch.nn.SiLU) and model.head_drop.p > 0
    rates = [getattr(b.drop_path, "p", 0.0) for stage in model.stages for b in stage]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.1)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean botnet50"):
        botnet.create_model("botnet5")
    with pytest.raises(TypeError, match="unknown model setting.*valid"):
        botnet.create_model("botnet50", head=4)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.randn(3, 64, 64), ValueError, "4-D.*unsqueeze"),
        (torch.randn(1, 1, 64, 64), ValueError, "built for 3 input channels, got 1"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "floating-point.*ToDtype"),
        (torch.randn(1, 3, 64, 20), ValueError, "too small for botnet50: the smallest is 32x32"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_model_input_errors(x, error, match):
    model = botnet.create_model("botnet50", num_classes=2)
    with pytest.raises(error, match=match):
        model(x)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(heads=3), "heads=3 does not divide"),
        (dict(position_encoding="learned"), "unknown position_encoding 'learned'"),
        (dict(act_layer="tanh"), "unknown act_layer"),
        (dict(bot_blocks=(0, 0, 7, 3)), "bot_blocks must be in 0..6"),
        (dict(bot_blocks=(0, 3)), "four"),
        (dict(c5_stride=4), "stride must be 1 or 2"),
        (dict(drop_rate=1.5), "drop_rate"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        botnet.create_model("botnet50", **overrides)


# create_model's overrides that are not ModelConfig fields (ModelConfig.with_overrides turns them into stages).
STAGE_OVERRIDES = ("bot_blocks", "depths", "c5_stride", "width_multiplier", "small_stem")


def test_create_model_docstring_lists_every_override():
    """Every ModelConfig field create_model accepts as a keyword has its own line ("- name: ...") in
    create_model's docstring, so the two cannot drift apart."""
    config = get_model_entry("botnet50").config
    accepted = []
    for field in dataclasses.fields(ModelConfig):
        try:
            config.with_overrides(**{field.name: getattr(config, field.name)})
        except TypeError:  # not an override (stages: given by depths, bot_blocks, ...)
            continue
        accepted.append(field.name)
    assert {f.name for f in dataclasses.fields(ModelConfig)} - set(accepted) == {"stages"}
    stage_values = dict(
        bot_blocks=(0, 0, 0, -1), depths=(3, 4, 6, 3), c5_stride=2, width_multiplier=1.0, small_stem=False
    )
    assert tuple(stage_values) == STAGE_OVERRIDES
    config.with_overrides(**stage_values)  # accepted, so documented below too
    doc = botnet.create_model.__doc__
    missing = [name for name in (*accepted, *STAGE_OVERRIDES) if not re.search(rf"^\s*- {name}: \S", doc, re.M)]
    assert not missing, f"create_model's docstring does not describe {', '.join(missing)}"


def test_torch_compile_fullgraph_any_size():
    """Dynamo traces the whole model without graph breaks at several sizes, forward and backward."""
    torch.manual_seed(0)
    model = botnet.create_model("botnet50", num_classes=5, width_multiplier=0.25, depths=(1, 1, 2, 2))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    for size in [(64, 64), (45, 71)]:
        x = torch.randn(2, 3, *size)
        compiled(x).sum().backward()
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
        model.train()


def test_torch_compile_inductor_matches_eager():
    torch.manual_seed(0)
    model = botnet.create_model("botnet50", num_classes=5, width_multiplier=0.25, depths=(1, 1, 1, 2)).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, dynamic=False)(x), model(x), atol=1e-4, rtol=1e-4)


def test_vmap_over_a_model_in_eval_mode():
    torch.manual_seed(0)
    model = botnet.create_model("botnet_tiny", num_classes=5).eval()
    x = torch.randn(2, 3, 3, 24, 24)
    out = torch.func.vmap(model)(x)
    with torch.no_grad():
        expected = torch.stack([model(batch) for batch in x])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def random_norms(model: torch.nn.Module) -> torch.nn.Module:
    """BN scales and statistics away from their initial values, so every block changes the output."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", MODELS)
def test_fx_symbolic_trace_and_feature_extraction(name):
    """torch.fx traces every model at symbolic sizes (the traced graph runs at any size), and
    torchvision's create_feature_extractor reaches the feature maps and each BoT block's attention.
    In float64, so that the traced (reference) path and eager's fused kernels agree to rounding."""
    torch.manual_seed(0)
    model = random_norms(botnet.create_model(name, num_classes=5, width_multiplier=0.25)).double().eval()
    traced = torch.fx.symbolic_trace(model)
    nodes = get_graph_node_names(model)[1]
    softmaxes = [n for n in nodes if n.endswith("mhsa.softmax")]
    assert len(softmaxes) == sum(isinstance(m, botnet.layers.MHSA) for m in model.modules())
    c5 = model.feature_info[-1]["module"]
    extractor = create_feature_extractor(
        model, {c5: "c5", **{n: n for n in softmaxes[-1:]}}
    )
    for size in SIZES:
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(traced(x), model(x), atol=1e-10, rtol=1e-10)
            features = extractor(x)
            torch.testing.assert_close(features["c5"], model.forward_features(x), atol=1e-10, rtol=1e-10)
        for n in softmaxes[-1:]:
            probs = features[n]
            assert probs.dim() == 4 and probs.shape[-1] == probs.shape[-2]
            torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))


def test_fx_traced_checks_stay_in_the_graph():
    traced = torch.fx.symbolic_trace(botnet.create_model("botnet_tiny", num_classes=3).eval())
    with pytest.raises(AssertionError, match="built for 3 input channels"):
        traced(torch.randn(1, 1, 24, 24))


@pytest.mark.parametrize("name", ["botnet_tiny", "eca_botnext26ts_256", "botnet50ts_256"])
def test_gradient_penalty_double_backward(name):
    """create_graph=True through every BoT block, training mode (auto takes the CPU probs path), equal to
    the reference path's second derivatives."""
    torch.manual_seed(0)
    model = botnet.create_model(name, num_classes=3, width_multiplier=0.25, zero_init_last=False).double().train()
    x = torch.randn(2, 3, 40, 36, dtype=torch.float64, requires_grad=True)

    def penalty_grads(impl):
        botnet.layers.set_attention_impl(model, impl)
        (grad_x,) = torch.autograd.grad(model(x).logsumexp(-1).sum(), x, create_graph=True)
        return torch.autograd.grad(grad_x.square().sum(), list(model.parameters()))

    for got, want in zip(penalty_grads("auto"), penalty_grads("reference")):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)


def test_attn_impl_override_reaches_every_layer():
    torch.manual_seed(0)
    model = random_norms(botnet.create_model("botnet26t_256", num_classes=4, attn_impl="reference")).eval()
    layers = [m for m in model.modules() if isinstance(m, botnet.layers.MHSA)]
    assert layers and all(layer.impl == "reference" for layer in layers)
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        reference = model(x)
        previous = botnet.layers.set_attention_impl(model, "fused")
        torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-4)
    assert set(previous.values()) == {"reference"}
    with pytest.raises(ValueError, match="unknown attn_impl 'flash'"):
        botnet.create_model("botnet_tiny", attn_impl="flash")
