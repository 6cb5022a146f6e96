"""Shared settings and helpers of the fuzzing suite (tests/fuzz).

In CI every test tries a fixed, derandomised set of cases (about a minute in
all). ``BOTNET_FUZZ_SCALE=N`` tries N times as many, freshly random each run,
and keeps failing cases in ``.hypothesis/`` to replay them first next time:

    BOTNET_FUZZ_SCALE=50 .venv/bin/python -m pytest tests/fuzz --hypothesis-show-statistics
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

SCALE = max(1, int(os.environ.get("BOTNET_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int) -> settings:
    """``examples`` cases in CI, SCALE times as many (random, remembered) when asked for."""
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        database=None if SCALE == 1 else settings.default.database,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
        print_blob=True,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # "explain" reruns slow cases at length
    )
