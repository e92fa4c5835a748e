"""The tier planner works from presampled ids and a BatchSpec alone, with no loader."""

from __future__ import annotations

import numpy as np
import pytest

from graphsys.errors import TrainingConfigError
from graphsys.samplers.offline import SamplingLog
from graphsys.storage.planner import BatchSpec, plan_tiers

ROWS, ROW = 2_000, 64
SPEC = BatchSpec(fanouts=(4, 4), batch_size=32, seed=7, num_rows=ROWS, batches_per_epoch=40)


def _batches(n: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    # Skewed like sampled input nodes: low ids are read far more often.
    return [np.unique((rng.pareto(1.5, 300) * 50).astype(np.int64) % ROWS) for _ in range(n)]


def test_plan_from_ids_shares_add_up_and_record_the_spec() -> None:
    plan = plan_tiers(_batches(), SPEC, ROW, device_cache=200 * ROW, victim=50 * ROW,
                      host_cache=500 * ROW, lookahead=4)
    share = plan.expected_share
    assert share["device"] + share["victim"] + share["host"] + share["disk"] == \
        pytest.approx(1, abs=1e-9)
    assert 0 < share["device"] < 1
    assert (plan.fanouts, plan.batch_size, plan.seed, plan.num_rows,
            plan.batches_per_epoch, plan.presample_batches) == ((4, 4), 32, 7, ROWS, 40, 16)
    plan.check(SPEC)
    with pytest.raises(TrainingConfigError, match="fanouts"):
        plan.check(BatchSpec((5, 5), 32, 7, ROWS, 40))


def test_a_sampling_log_plans_like_its_batches() -> None:
    batches = _batches()
    sizes = np.cumsum([0] + [len(b) for b in batches])
    log = SamplingLog("fp", [0], len(batches), np.concatenate(batches), sizes)
    budgets = dict(device_cache=100 * ROW, victim=0, host_cache=300 * ROW)
    assert plan_tiers(log, SPEC, ROW, **budgets) == plan_tiers(batches, SPEC, ROW, **budgets)


def test_plan_refuses_bad_budgets_and_no_batches() -> None:
    with pytest.raises(ValueError, match="victim must be >= 0"):
        plan_tiers(_batches(), SPEC, ROW, device_cache=0, victim=-1, host_cache=0)
    with pytest.raises(ValueError, match="batches is empty"):
        plan_tiers([], SPEC, ROW, device_cache=0, victim=0, host_cache=0)
