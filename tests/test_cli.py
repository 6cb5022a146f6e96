import json
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
