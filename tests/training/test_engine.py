"""The training engine's parts every task shares: the schedule, the optimizers by name, grouped batches."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import SequentialSampler

import botnet
from botnet.errors import ConfigError
from botnet.tasks import TrainConfig
from botnet.detection.sampler import GroupedBatchSampler
from botnet.training.engine import _optimizer
from botnet.training.optim import OPTIMIZERS, warmup_cosine
from botnet.training.settings import RunSettings

SETTINGS = dict(epochs=3, batch_size=8, lr=1e-3, weight_decay=0.05, momentum=0.9, warmup_epochs=0.5)


def test_head_epochs_freeze_the_rest():
    """The schedule of head_epochs: the classifier's rate rises at once, the rest stays at zero until then."""
    model = botnet.create_model("botnet_tiny", num_classes=3)
    settings = RunSettings(optimizer="adamw", **SETTINGS)
    optimizer, scheduler = _optimizer(model, settings, SimpleNamespace(head="fc", head_epochs=1), steps=4)
    heads = [group.get("head") for group in optimizer.param_groups]
    assert heads == [False, False, True, True]
    rates = []
    for _ in range(12):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert all(r[0] == r[1] == 0.0 for r in rates[:4]) and all(r[2] > 0 for r in rates[:4])
    assert all(r[0] > 0 for r in rates[4:])


def test_warmup_then_cosine_by_formula():
    factor = warmup_cosine(4, 20)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for step in range(4, 20):
        assert factor(step) == pytest.approx(0.5 * (1 + math.cos((step - 4) / 16 * math.pi)))


@pytest.mark.parametrize("name, kind", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_each_optimizer_name_builds_its_optimizer(name, kind):
    model = torch.nn.Linear(3, 2)
    optimizer, _ = _optimizer(model, RunSettings(optimizer=name, **SETTINGS), SimpleNamespace(head=None, head_epochs=0), steps=2)
    assert type(optimizer) is kind and optimizer.defaults["lr"] == 1e-3
    assert set(OPTIMIZERS) == {"sgd", "adamw"}


def test_an_unknown_optimizer_is_refused_not_taken_for_adamw():
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'; choose one of sgd, adamw"):
        TrainConfig(optimizer="adam").resolve(1)


def test_grouped_batches_keep_to_one_aspect_group_and_lose_no_batch():
    groups = [0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0]
    batches = list(GroupedBatchSampler(SequentialSampler(range(len(groups))), groups, 2))
    assert len(batches) == len(groups) // 2 == 5
    assert [b for b in batches[:4]] == [[0, 2], [1, 4], [3, 6], [5, 7]]  # each full as soon as its group has two
    assert all(len({groups[i] for i in b}) == 1 for b in batches[:4])
    assert sorted(i for b in batches for i in b) == sorted(set(i for b in batches for i in b))  # no image twice
