"""Choosing the shifting protocol's settings (examples.rl.selection).

The grid search is checked on scores computed by hand, the two stages with a
fake run, the selection's scores against the protocol's own continual
returns on a tiny run, and ``shifting --from-selection`` on the settings it
passes to the agents and the errors it raises.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

pytest.importorskip("gymnax", reason="needs the [rl] extra")

from examples.rl import envs  # noqa: E402  (needs gymnax)
from examples.rl import selection  # noqa: E402
from examples.rl import shifting  # noqa: E402
from examples.rl.config import config_from_flags  # noqa: E402

TINY = [
  "--steps-per-phase=640",  # 5 updates of 4 environments x 32 steps
  "--num-envs=4",
  "--num-steps=32",
  "--num-minibatches=2",
  "--update-epochs=1",
  "--width=16",
  "--phases=3",
]


def peaked_at(best: float):
  """A score that is highest at ``best`` and falls with log-distance from it."""
  return lambda value: -abs(math.log10(value) - math.log10(best))


def test_search_extends_past_an_edge_until_the_best_is_inside():
  grid = selection.Grid("swr_coef", (1e-5, 1e-4, 1e-3), 10.0)
  found = selection.search(grid, peaked_at(1e-2), max_extensions=2)
  values = [value for value, _ in found["tried"]]
  np.testing.assert_allclose(values, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
  assert found["chosen"] == pytest.approx(1e-2)
  assert found["at_edge"] is None


def test_search_reports_an_edge_it_could_not_pass():
  grid = selection.Grid("swr_coef", (1e-5, 1e-4, 1e-3), 10.0)
  found = selection.search(grid, peaked_at(1e-9), max_extensions=1)
  assert found["chosen"] == pytest.approx(1e-6)
  assert found["at_edge"] == "low"
  assert len(found["tried"]) == 4


def test_search_stops_at_the_methods_bound():
  grid = selection.Grid("snp_coef", (0.02, 0.1, 0.5), 5.0)
  found = selection.search(grid, lambda value: value, upper=1.0)
  assert [value for value, _ in found["tried"]] == [0.02, 0.1, 0.5, 1.0]
  assert found["chosen"] == 1.0
  assert found["at_edge"] is None  # a bound is not an edge


def test_search_ranks_a_nan_score_last():
  grid = selection.Grid("cbp_rate", (1e-5, 1e-4, 1e-3), 10.0)
  found = selection.search(
    grid, lambda value: np.nan if value == 1e-3 else value, max_extensions=0
  )
  assert found["chosen"] == 1e-4 and found["at_edge"] is None


def test_select_tunes_vanillas_rate_first_then_each_coefficient_at_it():
  calls = []

  def fake_run(method, config):
    calls.append((method, config))
    best = {"vanilla": 3e-3, "swr": 1e-4}[method]
    value = getattr(config, selection.GRIDS[method].field)
    return {"score": peaked_at(best)(value), "wall_time_s": 0.0}

  args = selection.parse_flags([*TINY, "--methods=swr", "--max-extensions=0"])
  chosen = selection.select(args, fake_run)
  assert chosen["vanilla"]["chosen"] == 3e-3
  assert chosen["vanilla"]["at_edge"] == "high"
  assert chosen["swr"]["chosen"] == 1e-4 and chosen["swr"]["at_edge"] is None
  swr_configs = [config for method, config in calls if method == "swr"]
  assert [config.lr for config in swr_configs] == [3e-3] * 3
  assert [config.swr_coef for config in swr_configs] == [1e-5, 1e-4, 1e-3]
  assert set(chosen["swr"]["runs"]) == {"1e-05", "0.0001", "0.001"}


def test_selection_scores_are_the_protocols_continual_returns():
  args = shifting.parse_flags([*TINY, "--seeds=2", "--methods=vanilla"])
  config = config_from_flags(args, total_steps=640, network="mlp")
  env, env_params = envs.make_env("CartPole-v1")
  seeds = [0, 1]
  keys = shifting.jax.vmap(shifting.jax.random.key)(np.array(seeds))
  shifts = shifting.phase_shifts(env, env_params, seeds, 3)
  scores = selection.continual_scores(
    config, env, env_params, "vanilla", keys, shifts
  )
  runner = shifting.PhaseRunner(config, env, env_params, "vanilla")
  protocol = shifting.run_method(runner, "vanilla", keys, shifts)
  np.testing.assert_array_equal(
    np.array(scores["returns"], float),
    np.array(protocol["phase_returns"], float),
  )
  expected = np.nanmean(np.array(protocol["phase_returns"], float)[:, 1:], 1)
  np.testing.assert_allclose(scores["per_seed"], expected)
  assert scores["score"] == pytest.approx(float(np.mean(expected)))


@pytest.fixture
def selection_file(tmp_path):
  """A selection JSON for TINY's protocol: seeds 1000.., lr and swr chosen."""
  args = shifting.parse_flags(TINY)
  config = config_from_flags(args, total_steps=640, network="mlp")
  entry = {"lr": 3e-3, "at_edge": None, "tried": [], "runs": {}}
  results = {
    "config": {
      **dataclasses.asdict(config),
      "env": "CartPole-v1",
      "phases": 3,
      "steps_per_phase": 640,
      "seed": 1000,
      "seeds": 4,
    },
    "methods": {
      "vanilla": {**entry, "field": "lr", "chosen": 3e-3},
      "swr": {**entry, "field": "swr_coef", "chosen": 1e-5, "at_edge": "low"},
    },
  }
  path = tmp_path / "selection.json"
  path.write_text(json.dumps(results))
  return str(path)


class Stop(Exception):
  pass


def test_from_selection_runs_each_method_at_its_chosen_setting(
  selection_file, monkeypatch, capsys
):
  configs = {}

  def recording_runner(config, env, env_params, method):
    configs[method] = config
    if len(configs) == 2:
      raise Stop  # both configs seen: no need to train

  monkeypatch.setattr(shifting, "PhaseRunner", recording_runner)
  monkeypatch.setattr(shifting, "run_method", lambda *args: {})
  with pytest.raises(Stop):
    shifting.main(
      [*TINY, "--seeds=2", "--methods=vanilla,swr"]
      + [f"--from-selection={selection_file}"]
    )
  assert configs["vanilla"].lr == 3e-3
  assert configs["swr"].lr == 3e-3 and configs["swr"].swr_coef == 1e-5
  assert configs["vanilla"].swr_coef == 1e-4  # the flag's default, unused
  assert "swr's chosen swr_coef=1e-05 lies at the low edge" in (
    capsys.readouterr().out
  )


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--lr=1e-2"], "--lr: --from-selection sets each method's chosen"),
    (["--swr-coef=1e-3"], "--swr-coef: --from-selection sets"),
    (["--phases=4"], "--phases 4 differs from --from-selection's 3"),
    (["--num-envs=8"], "--num-envs 8 differs"),
    (["--seed=999"], "--seed/--seeds: seeds [1000]"),
    (["--methods=vanilla,redo"], "--methods: redo not chosen"),
    (["--calibrate"], "--from-selection: --calibrate runs vanilla"),
  ],
)
def test_from_selection_refuses_what_would_not_be_its_choice(
  selection_file, flags, message
):
  defaults = [*TINY, "--seeds=2", "--methods=vanilla,swr"]
  with pytest.raises(ValueError, match=message.replace("[", r"\[")):
    shifting.main([*defaults, *flags, f"--from-selection={selection_file}"])


def test_the_report_marks_each_choice_and_names_the_setting():
  from examples.rl import shifting_report  # pylint: disable=g-import-not-at-top

  selection_results = {
    "config": {"seed": 1000, "seeds": 4},
    "wall_time_s": 120.0,
    "methods": {
      "vanilla": {
        "field": "lr",
        "chosen": 3e-3,
        "at_edge": None,
        "tried": [[1e-3, 150.0], [3e-3, 210.5], [9e-3, 190.0]],
      },
      "swr": {
        "field": "swr_coef",
        "chosen": 1e-5,
        "at_edge": "low",
        "tried": [[1e-5, 220.0], [1e-4, 200.0]],
      },
    },
  }
  lines = shifting_report.selection_lines(selection_results)
  assert "Selection seeds 1000..1003 (4)" in lines[0]
  assert (
    "| vanilla | --lr | 0.001: 150.0, **0.003: 210.5**, 0.009: 190.0 |"
    in (lines[4])
  )
  assert lines[5].endswith("| 1e-05 (at the low edge) |")
  run = {"selection": {"chosen": {"swr": {"lr": 3e-3, "swr_coef": 1e-5}}}}
  assert shifting_report._setting(run, "swr") == "swr (swr_coef 1e-05)"
  run["selection"]["chosen"]["vanilla"] = {"lr": 3e-3}
  assert shifting_report._setting(run, "vanilla") == "vanilla (lr 0.003)"


def test_kernel_norms_are_each_kernels_norm_averaged_over_seeds():
  from examples.rl import layer_norms  # pylint: disable=g-import-not-at-top

  params = {
    "params": {
      "Dense_0": {"kernel": np.array([[[3.0, 4.0]], [[0.0, 1.0]]])},
      "head": {"kernel": np.ones((2, 2, 2)), "bias": np.ones((2, 2))},
    }
  }
  norms = layer_norms.kernel_norms(params)
  assert list(norms) == ["params/Dense_0/kernel", "params/head/kernel"]
  np.testing.assert_allclose(norms["params/Dense_0/kernel"], [5.0, 1.0])
  np.testing.assert_allclose(norms["params/head/kernel"], [2.0, 2.0])
