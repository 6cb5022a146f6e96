"""Export: ONNX files that onnxruntime runs at any size, torch.export programs, and what is refused."""

import json
import os

import pytest
import torch
from torch import nn

import botnet
from botnet.cli import main
from botnet.detection.models import create_detector
from botnet.errors import ConfigError, ExportError
from botnet.export import onnx_metadata, to_exported_program, to_onnx
from botnet.tasks import TrainConfig, train
from botnet.tasks.classification import load_model

ort = pytest.importorskip("onnxruntime")


def relative_error(got, expected: torch.Tensor) -> float:
    return float((torch.as_tensor(got) - expected).abs().max() / expected.abs().max())


def random_norms(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    train(TrainConfig(epochs=1, output_dir=str(run_dir)))
    return str(run_dir / "model.safetensors")


def test_cli_onnx_equals_eager_at_any_size_and_carries_metadata(digits_checkpoint, tmp_path, capsys):
    output = str(tmp_path / "digits.onnx")
    assert main(["export", "--checkpoint", digits_checkpoint, "--output", output]) == 0
    assert "checked in onnxruntime" in capsys.readouterr().out
    model, meta = load_model(digits_checkpoint)
    session = ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    # The built size, an odd non-square size, the smallest accepted size and a large one; batch 1 and 3.
    for batch, height, width in [(1, 24, 24), (3, 37, 29), (1, 8, 8), (3, 16, 96)]:
        images = torch.rand(batch, 1, height, width)
        (got,) = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        assert relative_error(got, expected) <= 1e-4, (batch, height, width)
    written = onnx_metadata(output)
    for key in ("classes", "mean", "std", "model"):
        assert written[key] == meta[key], key
    assert written["outputs"] == ["logits"] and "any batch, height and width" in written["input"]
    assert "classes" in session.get_modelmeta().custom_metadata_map  # what an onnxruntime user sees


def test_cli_pt2_static_and_its_metadata(digits_checkpoint, tmp_path):
    output = str(tmp_path / "digits.pt2")
    assert main(["export", "--checkpoint", digits_checkpoint, "--format", "pt2", "--static", "32", "32",
                 "--output", output]) == 0  # fmt: skip
    extra = {"botnet.json": ""}
    program = torch.export.load(output, extra_files=extra)
    model, meta = load_model(digits_checkpoint)
    assert json.loads(extra["botnet.json"])["classes"] == meta["classes"]
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert relative_error(program.module()(images), model(images)) <= 1e-4
    with pytest.raises(Exception, match="32"):  # the size is fixed
        program.module()(torch.rand(3, 1, 40, 32))


def test_features_only_backbone_onnx_at_three_sizes(tmp_path):
    torch.manual_seed(0)
    model = random_norms(botnet.create_model("botnet26t_256", features_only=True, width_multiplier=0.25)).eval()
    result = to_onnx(model, tmp_path / "features.onnx", example=torch.rand(2, 3, 96, 96))
    assert result["outputs"] == [info["module"] for info in model.feature_info]
    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    for batch, height, width in [(1, 96, 96), (3, 65, 127), (1, 32, 48)]:
        images = torch.rand(batch, 3, height, width)
        got = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        for level, (a, b) in enumerate(zip(got, expected)):
            assert a.shape == b.shape and relative_error(a, b) <= 1e-4, (level, height, width)


def test_exported_program_at_symbolic_sizes():
    torch.manual_seed(0)
    model = random_norms(botnet.create_model("eca_botnext26ts_256", num_classes=6, width_multiplier=0.25)).train()
    program = to_exported_program(model, example=torch.rand(2, 3, 64, 64))
    assert model.training  # put back as it was
    model.eval()
    for shape in [(2, 3, 64, 64), (3, 3, 97, 45), (5, 3, 256, 256)]:
        images = torch.rand(*shape)
        with torch.no_grad():
            assert relative_error(program.module()(images), model(images)) <= 1e-4, shape


def test_whole_detector_is_refused_with_the_way_out():
    detector = create_detector("fasterrcnn", "botnet_tiny", 3, img_size=64, min_size=64, max_size=64)
    with pytest.raises(ConfigError, match=r"detector.backbone"):
        to_onnx(detector, "never.onnx")
    assert not os.path.exists("never.onnx")


@pytest.mark.filterwarnings("ignore")  # the deprecated exporter's and tracer's own warnings
def test_legacy_tracing_exporter_is_refused(tmp_path):
    """The TorchScript tracer records the position tables for one size only: refused, pointing to dynamo=True."""
    model = botnet.create_model("botnet_tiny", num_classes=3).eval()
    with pytest.raises(Exception, match="dynamo=True"):
        torch.onnx.export(model, (torch.rand(1, 3, 24, 24),), str(tmp_path / "legacy.onnx"), dynamo=False)
    with pytest.raises(Exception, match="records the position"):
        torch.jit.trace(model, torch.rand(1, 3, 24, 24))


class _DiffersWhenExported(nn.Module):
    """A model whose exported graph computes something else (what the check must catch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) * (1.01 if torch.compiler.is_exporting() else 1.0)


@pytest.mark.parametrize("format", ["onnx", "pt2"])
def test_a_wrong_graph_is_never_written(format, tmp_path):
    path = tmp_path / "wrong.onnx"
    with pytest.raises(ExportError, match="differs from the eager model"):
        if format == "onnx":
            to_onnx(_DiffersWhenExported(), path, example=torch.rand(2, 3, 16, 16))
        else:
            to_exported_program(_DiffersWhenExported(), example=torch.rand(2, 3, 16, 16))
    assert not path.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_model_exports_and_stays_on_its_gpu(tmp_path):
    """ONNX from a model on a GPU (written from a CPU copy, the model left where it was), and a torch.export
    program that runs on the GPU, each equal to the CPU model's float32 outputs."""
    torch.manual_seed(0)
    model = random_norms(botnet.create_model("botnet26t_256", num_classes=5, width_multiplier=0.25)).eval()
    images = torch.rand(3, 3, 80, 112)
    with torch.no_grad():
        expected = model(images)
    model.cuda()
    result = to_onnx(model, tmp_path / "gpu.onnx", example=torch.rand(2, 3, 64, 64, device="cuda"))
    assert next(model.parameters()).is_cuda
    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    assert relative_error(session.run(None, {"images": images.numpy()})[0], expected) <= 1e-4
    program = to_exported_program(model, example=torch.rand(2, 3, 64, 64, device="cuda"))
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        got = program.module()(images.cuda())
    assert got.is_cuda and relative_error(got.cpu(), expected) <= 1e-4
