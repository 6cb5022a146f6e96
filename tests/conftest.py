"""Test-wide settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _image_check_cache(tmp_path_factory):
    """Image checks are cached per run of the suite, never in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOTNET_CACHE_DIR", str(tmp_path_factory.mktemp("botnet-cache")))
        yield


@pytest.fixture
def steady_steps(monkeypatch):
    """``steady_steps(seconds)``: --time-budget plans as if every training step took ``seconds``. The
    real steps are still timed (and must take some time), but the plan no longer depends on how busy
    the machine is."""
    from botnet.training import engine

    real = engine.time_steps

    def set_step(seconds: float) -> None:
        def timed(*args, **kwargs):
            measured, images = real(*args, **kwargs)
            assert measured > 0
            return seconds, images

        monkeypatch.setattr(engine, "time_steps", timed)

    return set_step
