"""Online RFT with the PRM on the tiny demo config: τ fitted at iteration 1 on the dev subset at
the baseline's T, the same τ at iteration 2 (after a resume from iteration 1's checkpoint), and
baseline.prm_threshold="0.0" holding the paper's τ = 0 without a fit."""
import json
import shutil

import numpy as np
import pytest

from bstar_jax.analysis import runlog
from bstar_jax.bstar import balance
from bstar_jax.bstar import experiment as loop
from bstar_jax.core import mesh as mesh_lib
from test_loop import tiny as demo_tiny  # the tiny demo config with dotted overrides

# P_0's warm start, the PRM and two iterations with their compiles: about 2 CPU-minutes.
pytestmark = pytest.mark.slow


def tiny(workdir, **overrides):
    """configs/demo.py:tiny, online RFT with the PRM; 16 dev queries x 16 samples, so that P_0
    (a few % correct at T = 1) has correct dev responses for the fit to weigh."""
    return demo_tiny(workdir, variants=("online_rft",), use_prm=(True,),
                     **{"data.num_dev": 16, "search.samples_per_query": 16, **overrides})


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Iteration 1, then the same config with iterations=2: the second start resumes after
    iteration 1 and must read the fitted τ from its checkpoint, not fit again."""
    work = tmp_path_factory.mktemp("fitted")
    mesh = mesh_lib.make_mesh()
    loop.run(tiny(work, iterations=1), mesh)
    loop.run(tiny(work, iterations=2), mesh)
    return work


def test_online_rft_with_the_prm_fits_tau_at_iteration_1_and_holds_it(fitted):
    rows = {r["iteration"]: r for r in runlog.read_metrics(str(fitted))}
    c = tiny(fitted)
    assert sorted(rows) == [0, 1, 2] and {r["variant"] for r in rows.values()} == {"online_rft+prm"}
    first, second = rows[1], rows[2]
    # The fit: one row of the balance table, at the baseline's T, over B-STaR's τ grid.
    table = json.loads((fitted / "searches" / "online_rft+prm_iter001.json").read_text())
    assert table["temperatures"] == [c.baseline.temperature] and table["thresholds"] == list(c.search.thresholds)
    scores = np.asarray(table["balance_score"][0])
    assert scores.max() > 0  # P_0 answers some dev queries: the fit is informative
    best = max(i for i, s in enumerate(scores) if s >= scores.max() - balance.TIE_TOL)  # ties: the higher τ
    assert first["fitted_threshold"] == first["threshold"] == c.search.thresholds[best]
    assert first["temperature"] == second["temperature"] == c.baseline.temperature
    assert first["search_balance_score"] == pytest.approx(scores.max())
    # Held: iteration 2, in a run resumed from iteration 1's checkpoint, uses the same τ and did not
    # fit again (a τ lost in the restart would have meant a second fit and a second table).
    assert second["fitted_threshold"] == second["threshold"] == first["threshold"]
    assert second["search_balance_score"] is None
    assert sorted(p.name for p in (fitted / "searches").iterdir()) == ["online_rft+prm_iter001.json"]
    assert f"τ = {first['threshold']:g} fitted at its first iteration" in (fitted / "report.md").read_text()


def test_a_number_holds_that_tau_without_a_fit(fitted, tmp_path):
    """baseline.prm_threshold="0.0": the paper's τ = 0 (same P_0 and PRM as the fitted run)."""
    shutil.copytree(fitted / "p0", tmp_path / "p0")
    c = tiny(tmp_path, iterations=1, **{"baseline.prm_threshold": "0.0", "prm.path": str(fitted / "prm")})
    loop.run(c, mesh_lib.make_mesh())
    rows = {r["iteration"]: r for r in runlog.read_metrics(str(tmp_path))}
    assert rows[1]["threshold"] == 0.0 and rows[1]["temperature"] == 1.0
    assert "fitted_threshold" not in rows[1] and rows[1]["search_balance_score"] is None
    assert not (tmp_path / "searches").exists()
