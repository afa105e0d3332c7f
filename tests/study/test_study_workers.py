"""Workers of a study share out the points of all its sweeps: one passes to the next sweep as soon
as the current one has no point left for it."""

import pytest

from imp_jax.study import cluster, sweep
from tests.helpers import finished, tiny_sweep


@pytest.mark.slow
def test_a_worker_runs_every_sweep_it_is_given(tmp_path):
    first, second = tiny_sweep(), tiny_sweep()
    first.sweep.width, second.sweep.width = (4,), (6, 8)
    first.imp.levels = second.imp.levels = 1
    dirs = tmp_path / "a", tmp_path / "b"
    worker = cluster.SweepWorker(first, str(dirs[0]), ((second, str(dirs[1])),))
    assert sorted(worker(0)) == ["a/width=4", "b/width=6", "b/width=8"]
    assert all(finished(d / p.name) for d, c in zip(dirs, (first, second), strict=True)
               for p in sweep.points(c))
    # A second worker finds nothing left in either sweep.
    assert sorted(worker(1)) == ["a/width=4", "b/width=6", "b/width=8"]
