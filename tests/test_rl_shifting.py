"""The shifting-observation protocol (examples.rl.shifting) and its helpers.

One tiny run (2 seeds, 3 phases of 5 updates, vanilla and L2 Init at
coefficient 0, which computes vanilla's updates) serves every test of the
protocol; the helpers are checked against hand-computed values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from examples.rl import scores

pytest.importorskip("gymnax", reason="needs the [rl] extra")

from examples.rl import envs  # noqa: E402  (needs gymnax)
from examples.rl import shifting  # noqa: E402

SEEDS = 2
PHASES = 3
TINY = [
  "--steps-per-phase=640",  # 5 updates of 4 environments x 32 steps
  "--num-envs=4",
  "--num-steps=32",
  "--num-minibatches=2",
  "--update-epochs=1",
  "--width=16",
  f"--seeds={SEEDS}",
  f"--phases={PHASES}",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The run's results, its JSON file as written, and its phase runners."""
  runners = []

  class RecordedRunner(shifting.PhaseRunner):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      runners.append(self)

  out = tmp_path_factory.mktemp("shifting") / "shifting.json"
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(shifting, "PhaseRunner", RecordedRunner)
    results = shifting.main(
      [*TINY, "--methods=vanilla,l2_init", "--l2-init-coef=0", f"--out={out}"]
    )
  with open(out) as file:
    written = json.load(file)
  return results, written, runners


def test_the_shift_is_fixed_per_seed_and_phase_and_shared_by_methods(
  tiny_run,
):
  results, _, _ = tiny_run
  env, env_params = envs.make_env("CartPole-v1")
  for seed in range(SEEDS):
    for phase in range(PHASES):
      shift = envs.observation_shift(env, env_params, seed, phase)
      recorded = results["shifts"]
      assert recorded["perm"][seed][phase] == np.asarray(shift.perm).tolist()
      assert recorded["sign"][seed][phase] == np.asarray(shift.sign).tolist()
    assert recorded["perm"][seed][0] == [0, 1, 2, 3]  # phase 1: the identity
  assert recorded["perm"][0][1:] != recorded["perm"][1][1:]
  # L2 Init at coefficient 0 computes vanilla's updates: the same numbers,
  # phase by phase, show that both methods saw the same shifts and keys.
  vanilla, l2_init = (results["methods"][m] for m in ("vanilla", "l2_init"))
  for name in ("phase_returns", "phase_weight_norms", "fresh_returns"):
    assert l2_init[name] == vanilla[name], name


def test_the_first_phase_of_the_continual_agent_is_its_fresh_agent(tiny_run):
  results, _, _ = tiny_run
  for run in results["methods"].values():
    for metric in (*shifting.PHASE_METRICS, "collapsed"):
      continual = np.array(run[f"phase_{metric}"], float)
      fresh = np.array(run[f"fresh_{metric}"], float)
      np.testing.assert_array_equal(continual[:, 0], fresh[:, 0])
    # Later phases continue the agent: its weights are not the fresh ones.
    continual = np.array(run["phase_weight_norms"])[:, 1:]
    assert np.all(continual != np.array(run["fresh_weight_norms"])[:, 1:])


def test_every_phase_runs_one_compiled_program(tiny_run):
  _, _, runners = tiny_run
  assert len(runners) == 2  # one per method
  for runner in runners:
    # Continual and fresh agents, all phases: one compilation.
    assert runner.run._cache_size() == 1


def test_the_json_holds_seed_by_phase_arrays(tiny_run):
  results, written, _ = tiny_run
  for run in written["methods"].values():
    for prefix in ("phase", "fresh"):
      for metric in (*shifting.PHASE_METRICS, "collapsed"):
        assert np.shape(run[f"{prefix}_{metric}"]) == (SEEDS, PHASES)
  assert written["config"]["num_updates_per_phase"] == 5
  assert written["config"]["collapse_entropy"] == shifting.COLLAPSE_ENTROPY
  assert written["summary"] == json.loads(json.dumps(results["summary"]))


def test_the_summary_gap_is_the_mean_over_phases_2_to_k(tiny_run):
  _, written, _ = tiny_run
  run = written["methods"]["vanilla"]
  summary = written["summary"]["vanilla"]
  gaps = [
    np.mean(
      [
        run["phase_returns"][seed][phase] - run["fresh_returns"][seed][phase]
        for phase in range(1, PHASES)
      ]
    )
    for seed in range(SEEDS)
  ]
  np.testing.assert_allclose(summary["gap"]["per_seed"], gaps)
  np.testing.assert_allclose(summary["gap"]["mean"], np.mean(gaps))
  half_width = scipy_stats.t.ppf(0.975, SEEDS - 1) * np.std(gaps, ddof=1)
  half_width /= np.sqrt(SEEDS)
  np.testing.assert_allclose(summary["gap"]["high"], np.mean(gaps) + half_width)
  np.testing.assert_allclose(summary["gap"]["low"], np.mean(gaps) - half_width)
  collapsed = np.array(run["phase_collapsed"])[:, 1:]
  assert summary["collapse_rate"]["continual"] == np.mean(collapsed)
  # L2 Init at 0 is vanilla: no difference, an interval of width 0.
  versus = written["summary"]["l2_init"]["vs_vanilla"]
  assert versus["mean"] == versus["low"] == versus["high"] == 0.0
  assert "vs_vanilla" not in summary


def test_power_against_hand_computed_values():
  # Vanilla's gap -100: the target half-width is 25. The differences' sd is
  # 20: with 3 seeds t(2) 20 / sqrt(3) = 4.303 * 11.55 = 49.7, too wide; the
  # first n with t(n - 1) 20 / sqrt(n) <= 25 is 5 (4: 31.8; 5: 24.8).
  power = shifting.power([-100.0, -120.0, -80.0], [10.0, 30.0, 50.0])
  assert power.target == 25.0
  np.testing.assert_allclose(power.half_width, 4.302653 * 20 / np.sqrt(3))
  assert not power.enough
  assert power.seeds_needed == 5
  narrow = shifting.power([-100.0, -120.0, -80.0], [29.0, 30.0, 31.0])
  assert narrow.enough and narrow.seeds_needed == 2
  assert shifting.power([0.0, 0.0], [1.0, 2.0]).seeds_needed is None
  assert shifting.power([-10.0], [1.0]).seeds_needed is None  # one seed


def test_normalized_score_against_hand_computed_values():
  raw = [[30.0, 4.0, 0.5], [40.0, 2.0, -1.5]]
  normalized = scores.normalized_score(
    raw, random_score=[2.0, 0.5, 0.5], fresh_score=[40.0, 5.0, 1.5]
  )
  # (30 - 2) / 38, (4 - 0.5) / 4.5, 0 / 1; (40 - 2) / 38, 1.5 / 4.5, -2 / 1.
  np.testing.assert_allclose(
    normalized, [[28 / 38, 3.5 / 4.5, 0.0], [1.0, 1.5 / 4.5, -2.0]]
  )
  assert scores.normalized_score(7.0, 2.0, 12.0) == 0.5


def test_normalized_score_names_the_game_without_a_scale():
  with pytest.raises(ValueError, match="for Asterix, so the scale"):
    scores.normalized_score(
      [1.0, 1.0], [0.0, 0.5], [2.0, 0.5], games=["Breakout", "Asterix"]
    )
  with pytest.raises(ValueError, match="for game 1,"):
    scores.normalized_score([1.0, 1.0], [0.0, 0.5], [2.0, 0.5])


@pytest.mark.parametrize(
  "flags, named",
  [
    (["--phases=0"], "--phases"),
    (["--phases=1"], "--phases"),
    (["--steps-per-phase=0"], "--steps-per-phase"),
    (["--seeds=0"], "--seeds"),
    (["--methods=vanilla,nope"], "--methods"),
    (["--env=Breakout-MinAtar"], "--env"),
    (["--calibrate", "--calibrate-steps=1000,0"], "--calibrate-steps"),
  ],
)
def test_bad_inputs_name_the_flag_before_training(flags, named):
  with pytest.raises(ValueError, match=named):
    shifting.main([*TINY, *flags])


def test_calibration_reports_vanilla_per_budget(tmp_path, capsys):
  out = tmp_path / "calibration.json"
  results = shifting.main(
    [*TINY, "--calibrate", "--calibrate-steps=640", f"--out={out}"]
  )
  (row,) = results["calibration"]
  assert row["steps_per_phase"] == 640 and row["num_updates_per_phase"] == 5
  assert (
    row["gap"]
    == shifting.summarize({"vanilla": row["vanilla"]})["vanilla"]["gap"]
  )
  assert np.shape(row["vanilla"]["phase_returns"]) == (SEEDS, PHASES)
  assert "steps_per_phase" not in results["config"]
  printed = capsys.readouterr().out
  assert "excludes 0" in printed.splitlines()[-1]
  with open(out) as file:
    assert json.load(file)["config"]["calibrate_steps"] == [640]


def test_report_table_gaps_and_share_match_a_hand_computation():
  """The methods' table reads phases 2..K: gap, difference, share recovered."""
  from examples.rl import shifting_report

  def run(continual, fresh):
    seeds = len(continual)
    flat = [[0.0] * 3 for _ in range(seeds)]
    return {
      "phase_returns": continual,
      "fresh_returns": fresh,
      "phase_collapsed": [[False] * 3] * seeds,
      "fresh_collapsed": [[False] * 3] * seeds,
      "phase_entropy": flat,
      "fresh_entropy": flat,
    }

  # Phase 1 is left out. Gaps per seed: -100, -80, -120 for vanilla and
  # -40, -30, -50 for swr (its fresh agents score 190): 60% of vanilla's
  # gap recovered, while its continual return gains only +50 (50, 40, 60).
  vanilla = run(
    [[9, 100, 100], [9, 120, 120], [9, 80, 80]],
    [[9, 200, 200], [9, 200, 200], [9, 200, 200]],
  )
  swr = run(
    [[9, 150, 150], [9, 160, 160], [9, 140, 140]],
    [[9, 190, 190], [9, 190, 190], [9, 190, 190]],
  )
  lines = shifting_report.method_lines(
    {"methods": {"vanilla": vanilla, "swr": swr}}
  )
  vanilla_row, swr_row = (line.split(" | ") for line in lines[2:])
  assert vanilla_row[2] == "—"
  assert swr_row[2].startswith("+50.0 [")
  assert vanilla_row[4].startswith("-100.0 [")
  assert swr_row[4].startswith("-40.0 [")
  assert swr_row[5].startswith("+60.0 [")
  assert swr_row[6] == "60%"
