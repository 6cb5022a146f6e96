"""Test-wide settings."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_share_of_the_cores():
    """Under pytest-xdist, each worker process takes its share of the cores for PyTorch's threads, so two
    workers on two cores do not fight over them (the suite's results do not depend on the thread count)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield


@pytest.fixture(autouse=True, scope="session")
def _few_timed_steps():
    """A new run's plan times 2 + 6 steps before it starts: a whole epoch or more of the suite's short runs.
    Here it times 1 + 2, enough for plans whose numbers no test compares with this machine's (the tests of
    the plan fix the timed seconds themselves). Processes a test starts (torchrun) time the usual steps."""
    from botnet.training import plan

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan, "TIMED_WARMUP", 1)
        patch.setattr(plan, "TIMED_STEPS", 2)
        yield


@pytest.fixture(autouse=True, scope="session")
def _image_check_cache(tmp_path_factory):
    """Image checks are cached per run of the suite, never in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOTNET_CACHE_DIR", str(tmp_path_factory.mktemp("botnet-cache")))
        yield


@pytest.fixture(autouse=True, scope="session")
def _float32_unless_asked():
    """Runs choose their precision by timing steps both ways where bfloat16 is fast; on a busy machine two
    runs of a comparison could choose differently, so in the suite an unset --amp means float32 (the
    tests of the choice set the device's answer themselves)."""
    from botnet.training import plan

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan, "fast_bfloat16", lambda device: False)
        yield


@pytest.fixture
def steady_steps(monkeypatch):
    """``steady_steps(seconds)``: runs plan as if every training step took ``seconds`` in every precision
    (so float32 is kept where the precision is chosen), and keep that plan (the epochs a budget gives are
    not planned again from the real steps' times). The real steps are still timed (and must take some
    time), but the plan no longer depends on how busy the machine is."""
    from botnet.training import engine, plan

    real = plan.time_steps

    def set_step(seconds: float) -> None:
        def timed(*args, **kwargs):
            measured = real(*args, **kwargs)
            assert measured.load >= 0 and all(t > 0 for t in measured.compute)
            return plan.StepTimes(0.0, tuple(seconds for _ in measured.compute), measured.images)

        monkeypatch.setattr(plan, "time_steps", timed)
        monkeypatch.setattr(engine, "replan_steps", lambda planned, *args: planned)

    return set_step
