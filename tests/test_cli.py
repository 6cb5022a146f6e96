import json
import os
import subprocess
import sys

import pytest

import botnet
from botnet.cli import main


def test_info_json(capsys):
    assert main(["info", "botnet50_s1", "--img-size", "64", "48", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = botnet.create_model("botnet50_s1")
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["img_size"] == [64, 48]
    assert report["stages"]["layer4"] == [1, 2048, 4, 3]
    assert report["flops"] == 2 * report["macs"] > 0
    assert report["paper_params_m"] == 20.8


def test_info_text_names_the_unit(capsys):
    assert main(["info", "resnet50", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "25,557,032" in out and "multiply-adds" in out and "c5" in out and "1 x 2048 x 2 x 2" in out


@pytest.mark.parametrize("name", botnet.list_models())
def test_info_every_model(name, capsys):
    """Every registered model's c5 line shows the channels its head gets (a final conv's, where it has one)."""
    assert main(["info", name, "--img-size", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    model = botnet.create_model(name, num_classes=0)
    c5 = next(line for line in lines if line.strip().startswith("c5"))
    assert c5.split()[1] == model.feature_info[-1]["module"] and f"1 x {model.num_features} x" in c5


def test_unknown_model_is_one_line_error(capsys):
    assert main(["info", "botnet_t8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown model 'botnet_t8'" in err and "did you mean" in err


def test_bad_img_size(capsys):
    with pytest.raises(SystemExit):
        main(["info", "botnet50", "--img-size", "1", "2", "3"])


def test_module_entry_point_lists_models():
    result = subprocess.run([sys.executable, "-m", "botnet", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == botnet.list_models()


def _failing_list(monkeypatch, error):
    def fail(args):
        raise error

    monkeypatch.setattr("botnet.cli._cmd_list", fail)
    from botnet.cli import build_parser

    real_build = build_parser

    def build():  # the parser binds the handler at build time
        parser = real_build()
        for action in parser._actions:
            if action.dest == "command":
                action.choices["list"].set_defaults(func=fail)
        return parser

    monkeypatch.setattr("botnet.cli.build_parser", build)


@pytest.mark.parametrize(
    ("error", "code", "match"),
    [
        (PermissionError(13, "Permission denied", "/runs/x"), 2, "no permission to use /runs/x"),
        (OSError(28, "No space left on device", "/runs/x/last.pt"), 2, "no space left to write /runs/x/last.pt"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"), 2, "out of memory"),
        (botnet.DatasetError("class 'cat' has no readable images"), 2, "class 'cat' has no readable images"),
        (botnet.TrainingDiverged("the loss became nan"), 1, "the loss became nan"),
        (TypeError("unsupported operand"), 1, r"internal error: TypeError: unsupported operand \(this is a bug: run with --debug"),
        (AssertionError(), 1, r"internal error: AssertionError \(this is a bug"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_every_failure_is_one_line_with_its_exit_code(error, code, match, monkeypatch, capsys):
    _failing_list(monkeypatch, error)
    assert main(["list"]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(match, err), err


@pytest.mark.parametrize("argv", [["--debug", "list"], ["list", "--debug"]])
def test_debug_shows_the_traceback_in_any_position(argv, monkeypatch, capsys):
    _failing_list(monkeypatch, TypeError("unsupported operand"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "unsupported operand" in err


def test_debug_follows_detect_subcommands():
    from botnet.cli import build_parser

    args = build_parser().parse_args(["detect", "eval", "--checkpoint", "x", "--debug"])
    assert args.debug is True
    assert build_parser().parse_args(["detect", "eval", "--checkpoint", "x"]).debug is False


def test_errors_raised_in_data_loader_workers_keep_their_message():
    import torch.utils.data

    from botnet.errors import describe

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise botnet.DatasetError(f"cannot read image /data/{index}.jpg: truncated")

    with pytest.raises(botnet.DatasetError) as caught:
        next(iter(torch.utils.data.DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # how PyTorch re-raises it in the main process
    assert describe(caught.value) == "cannot read image /data/0.jpg: truncated"


def test_file_names_that_are_not_utf8_print_escaped(tmp_path, capsys):
    name = os.fsdecode(b"bad-\xff.png")
    assert main(["eval", "--checkpoint", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at" in err and "\\udcff" in err
