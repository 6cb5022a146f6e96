"""timm's BoTNets: the architectures as registry entries, their checkpoints loaded exactly, the Hub's
cache layout, conversion with metadata, and fine-tuning from them. timm is the independent reference."""

import copy
import json
import os
import sys

import pytest
import torch
from safetensors.torch import save_file

import botnet
from botnet.cli import main
from botnet.errors import CheckpointError, ConfigError, MissingFileError
from botnet.models import convert_timm_state_dict, get_model_entry, imagenet_classes, list_pretrained
from botnet.tasks.classification import load_model

timm = pytest.importorskip("timm")

TIMM_MODELS = ["botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256", "botnet50ts_256"]
PUBLISHED = ["botnet26t_256", "sebotnet33ts_256", "eca_botnext26ts_256"]


def random_timm_model(name: str, seed: int = 0) -> torch.nn.Module:
    """timm's model at random weights with random batch-norm statistics and affine parameters (so that
    no block is the identity and a wrongly mapped norm shows)."""
    torch.manual_seed(seed)
    model = timm.create_model(name).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(1, 0.2)
                module.bias.normal_(0, 0.2)
    return model


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    """Each timm model's state dict as timm publishes it (safetensors), with the model."""
    folder = tmp_path_factory.mktemp("timm")
    files = {}
    for name in TIMM_MODELS:
        model = random_timm_model(name)
        path = str(folder / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        files[name] = (path, model)
    return files


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_same_architecture_as_timm(name):
    ours = botnet.create_model(name)
    theirs = timm.create_model(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    converted = convert_timm_state_dict(theirs.state_dict())
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in ours.state_dict().items()}


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_logits_equal_timm_at_256(name, timm_files):
    path, theirs = timm_files[name]
    ours = botnet.create_model(name, pretrained=path).eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        assert relative_error(ours(x), theirs(x)) <= 1e-4
    # In training mode, with gradients (the attention's training paths) and batch statistics, which
    # amplify float32 rounding over two images: in float64 the two agree to rounding.
    theirs, ours = copy.deepcopy(theirs).double().train(), ours.double().train()
    assert relative_error(ours(x.double()).detach(), theirs(x.double()).detach()) <= 1e-9


@pytest.mark.parametrize("name", PUBLISHED)
def test_features_equal_timm_features_only(name, timm_files):
    path, theirs = timm_files[name]
    timm_features = timm.create_model(  # timm loading the same file its own way
        name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=path)
    ).eval()
    ours = botnet.create_model(name, pretrained=path, features_only=True, out_indices=(0, 1, 2, 3, 4)).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        expected, got = timm_features(x), ours(x)
    timm_info = timm_features.feature_info.get_dicts()
    for level, (a, b, info) in enumerate(zip(got, expected, ours.feature_info)):
        if level == 0 and timm_info[0]["reduction"] != info["reduction"]:
            continue  # timm's stem feature of a pool-less stem is its second conv; ours is the stem's output
        assert a.shape == b.shape and info["num_chs"] == b.shape[1]
        assert relative_error(a, b) <= 1e-4, f"level {level}"


@pytest.mark.parametrize("size", [(224, 224), (320, 320), (256, 384)])
def test_runs_where_timm_refuses(size, timm_files):
    path, theirs = timm_files["eca_botnext26ts_256"]
    ours = botnet.create_model("eca_botnext26ts_256", pretrained=path).eval()
    x = torch.randn(1, 3, *size)
    with pytest.raises(AssertionError):  # timm's attention asserts its built size
        theirs(x)
    with torch.no_grad():
        logits = ours(x)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def test_built_for_another_size_equals_resampled_at_run_time(timm_files):
    """Loading into a model built for 128 resamples the tables by the rule the layer uses at run time."""
    path, _ = timm_files["botnet26t_256"]
    at_256 = botnet.create_model("botnet26t_256", pretrained=path).eval()
    at_128 = botnet.create_model("botnet26t_256", pretrained=path, img_size=128).eval()
    assert at_128.layer4[0].mhsa.rel_h.shape[0] == 15
    assert any("resampled" in note for note in at_128.pretrained_cfg["notes"])
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(at_128(x), at_256(x), atol=1e-5, rtol=1e-4)


def test_timm_pth_and_metadata(timm_files, tmp_path):
    path, theirs = timm_files["sebotnet33ts_256"]
    pth = tmp_path / "weights.pth"
    torch.save(theirs.state_dict(), pth)
    model = botnet.create_model("sebotnet33ts_256", pretrained=pth).eval()
    cfg = model.pretrained_cfg
    assert cfg["classifier"] == "loaded" and cfg["tensors"] == len(model.state_dict())
    assert cfg["crop_fraction"] == 0.94 and cfg["interpolation"] == "bicubic" and cfg["img_size"] == 256
    assert cfg["classes"] == imagenet_classes() and len(cfg["classes"]) == 1000 and cfg["classes"][0] == "tench"
    assert cfg["mean"] == [0.485, 0.456, 0.406]


def test_new_classifier_and_one_channel(timm_files):
    path, theirs = timm_files["botnet26t_256"]
    model = botnet.create_model("botnet26t_256", pretrained=path, num_classes=5, in_chans=1).eval()
    assert model.pretrained_cfg["classifier"] == "new" and model.fc.out_features == 5
    stem = theirs.state_dict()["stem.conv1.conv.weight"]
    torch.testing.assert_close(model.conv1[0].weight, stem.sum(1, keepdim=True))
    gray = torch.rand(1, 1, 256, 256)
    with torch.no_grad():  # a grey image in RGB gives the same features as the summed filters on one channel
        rgb_model = botnet.create_model("botnet26t_256", pretrained=path).eval()
        torch.testing.assert_close(
            model.forward_features(gray), rgb_model.forward_features(gray.expand(1, 3, -1, -1)), atol=1e-4, rtol=1e-4
        )


def test_wrong_or_damaged_files_are_named(timm_files, tmp_path):
    path, theirs = timm_files["botnet26t_256"]
    with pytest.raises(CheckpointError, match="it holds botnet26t_256 weights"):
        botnet.create_model("eca_botnext26ts_256", pretrained=path)
    state = dict(theirs.state_dict())
    del state["stages.3.1.self_attn.qkv.weight"]
    state["extra.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(broken))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) missing, e.g. layer4.1.mhsa.qkv.weight; 1 unexpected"):
        botnet.create_model("botnet26t_256", pretrained=broken)
    with pytest.raises(CheckpointError, match="of another shape"):
        botnet.create_model("botnet26t_256", pretrained=path, heads=8)
    with pytest.raises(MissingFileError):
        botnet.create_model("botnet26t_256", pretrained=tmp_path / "absent.safetensors")
    with pytest.raises(ConfigError, match="has no published weights"):
        botnet.create_model("botnet50", pretrained=True)


def write_hub_cache(root, hub_id: str, weights: str) -> None:
    """The Hugging Face cache layout: models--OWNER--NAME/{refs/main, snapshots/REVISION/FILE}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = root / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    os.symlink(weights, snapshot / "model.safetensors")


def test_published_weights_from_the_hub_cache_offline(timm_files, tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path, theirs = timm_files["botnet26t_256"]
    info = get_model_entry("botnet26t_256").pretrained
    with pytest.raises(MissingFileError, match=f"download {info.url}"):
        botnet.create_model("botnet26t_256", pretrained=True)
    write_hub_cache(tmp_path, info.hub_id, path)
    model = botnet.create_model("botnet26t_256", pretrained=True).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert relative_error(model(x), theirs(x)) <= 1e-4
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(MissingFileError, match=r"pip install 'botnet\[hub\]'"):
        botnet.create_model("botnet26t_256", pretrained=True)


def test_convert_then_predict_and_eval_use_the_weights_preprocessing(timm_files, tmp_path, capsys):
    path, theirs = timm_files["sebotnet33ts_256"]
    out = str(tmp_path / "se.safetensors")
    assert main(["convert", path, "--model", "sebotnet33ts_256", "--output", out]) == 0
    model, meta = load_model(out)
    assert meta["crop_fraction"] == 0.94 and meta["interpolation"] == "bicubic" and len(meta["classes"]) == 1000
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert relative_error(model(x), theirs(x)) <= 1e-4
    # predict: the file's bicubic resize to floor(256 / 0.94) = 272 and centre crop, then timm's own
    # pipeline for the same weights gives the same top class, named with ImageNet's names.
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray((torch.rand(300, 400, 3) * 255).byte().numpy()).save(image)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", out, str(image), "--json", "--top-k", "1"]) == 0
    label = json.loads(capsys.readouterr().out)[0]["predictions"][0]["label"]
    data_config = timm.data.resolve_data_config({}, model=theirs)
    assert data_config["crop_pct"] == 0.94
    transform = timm.data.create_transform(**data_config)
    with torch.no_grad():
        expected = theirs(transform(Image.open(image).convert("RGB"))[None]).argmax(1).item()
    assert label == imagenet_classes()[expected]


def test_finetune_loads_all_but_the_head_and_records_it(timm_files, tmp_path):
    from PIL import Image

    for split, count in (("train", 6), ("val", 2)):
        for c in ("a", "b"):
            folder = tmp_path / "data" / split / c
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 40), (200, 20, 20) if c == "a" else (20, 20, 200)).save(folder / f"{i}.png")
    path, theirs = timm_files["botnet26t_256"]
    run = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "data"), "--model", "botnet26t_256", "--pretrained", path]
    assert main([*args, "--img-size", "64", "--epochs", "2", "--batch-size", "4", "--workers", "0", "--output-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"] == "finetune" and config["head_epochs"] == 1 and config["pretrained"] == path
    loaded = summary["pretrained"]
    assert loaded["source"] == path and loaded["classifier"] == "new" and loaded["tensors"] == 192
    # During the head epoch only the classifier moved: after the run every other tensor has moved too.
    trained, _ = load_model(str(run / "model.safetensors"))
    before = convert_timm_state_dict(theirs.state_dict())
    assert not torch.equal(trained.state_dict()["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])



def test_the_published_weights_are_listed():
    assert set(list_pretrained()) == set(PUBLISHED)
