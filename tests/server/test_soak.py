"""Four minutes of varied load on the default model (a real gunicorn): the worker's memory stays flat after
warm-up, and no request fails. benchmarks/soak.py runs the same load for ten minutes and records it."""

from __future__ import annotations

import pytest

from sie import DEFAULT_MODEL
from sie.testing.server import ServerProcess
from sie.testing.soak import Soak

# The warm-up is over when the varied requests have run for a while, not when the largest ones are done. On a
# 2-core AVX2 EPYC in fp32 the eight largest requests take the first ~60 s; the varied ones then raise RSS until
# ~110 s (10-s means: 610 MB at 30-60 s, 628 at 70-80, 691 at 100-110, then 656-683 to 180 s). A warm-up ending at
# 90 s caught that rise: one CI run read 11.6% growth. Ending at 150 s leaves 90 s of flat load to measure.
WARMUP_S, TOTAL_S = 150.0, 240.0


@pytest.mark.slow
def test_memory_is_flat_under_four_minutes_of_varied_load(default_model_path):
    with ServerProcess(["--device", "cpu", "--model", DEFAULT_MODEL], env={"HF_HUB_OFFLINE": "1"}) as server:
        # Every client starts with the largest request, so the warm-up meets the largest batches of the run.
        result = Soak(server.port, DEFAULT_MODEL, clients=8, seconds=TOTAL_S, sample_s=1.0, largest_first=True,
                      seed=14).run()
    memory = result.memory_growth(WARMUP_S)
    summary = f"{len(result.answers)} requests, memory {memory}"
    assert result.errors() == {}, summary
    assert len(result.answers) > 3 * 8, summary
    assert memory.growth < 0.10, summary
    assert memory.peak_growth < 0.25, summary
