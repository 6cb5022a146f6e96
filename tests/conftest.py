"""Test-wide settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _image_check_cache(tmp_path_factory):
    """Image checks are cached per run of the suite, never in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOTNET_CACHE_DIR", str(tmp_path_factory.mktemp("botnet-cache")))
        yield
