"""The PPO agent of examples/rl: it learns, compiles once, checkpoints, errs.

One module-scoped run per method (vanilla, swr: 2 seeds vmapped, 30,000
CartPole steps each, one compiled program) serves every test, so the file
costs three compilations of the agent on CartPole (one more for the ReDo
test): swr's program starts from runner states, so the orbax test goes on
with it from a restored state.
"""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import optax
import pytest

from examples import methods
from examples.rl import agent
from examples.rl import envs
from examples.rl import ppo
from examples.rl import records
from examples.rl.agent import make_agent
from examples.rl.config import METHODS
from examples.rl.config import Config
from examples.rl.train import Metrics
from examples.rl.train import make_train
from optax_swr import baselines

pytest.importorskip("gymnax", reason="needs the [rl] extra")

# 30,000 steps are 117 updates of 8 environments x 32 steps. Measured on 16
# seeds (keys 0 and 1, 8 each), the mean return over the second half of the
# updates is 140 to 214 for vanilla and 133 to 245 for swr (coef 1e-4, the
# output layer's 0); a uniformly random policy gets about 22.
CONFIG = Config(total_steps=30_000)
SEEDS = 2
MIN_RETURN = 100.0


class CountingEnv:
  """A wrapper that counts how often ``step`` is traced."""

  def __init__(self, env):
    self._env = env
    self.traces = 0

  def __getattr__(self, name):
    return getattr(self._env, name)

  def reset(self, key, params=None):
    return self._env.reset(key, params)

  def step(self, key, state, action, params=None):
    self.traces += 1
    return self._env.step(key, state, action, params)


@pytest.fixture(scope="module")
def runs():
  """Per method: the env, the jitted vmapped train, its final state, metrics.

  vanilla's run starts from keys; swr's from the new agents of the same keys
  (``train(key)`` starts from ``new_agent(key)``): one program that takes
  runner states without environments, as the orbax test's restored one.
  """
  results = {}
  for method in ("vanilla", "swr"):
    env, env_params = envs.make_env("CartPole-v1")
    env = CountingEnv(env)
    train = make_train(CONFIG, env, env_params, method)
    run = jax.jit(
      jax.vmap(functools.partial(train, num_updates=CONFIG.num_updates))
    )
    start = _keys(0)
    if method == "swr":
      network, built, _ = make_agent(CONFIG, env, env_params, method)
      obs_shape = envs.observation_shape(env, env_params)
      start = jax.vmap(
        functools.partial(agent.new_agent, network, built.tx, obs_shape)
      )(start)
      # Committed to the device, as the arrays orbax restores are: jit
      # compiles again for uncommitted ones.
      start = jax.device_put(start, jax.devices()[0])
    runner_state, measured = run(start)
    results[method] = (env, train, run, runner_state, measured)
  return results


def _keys(seed: int) -> jax.Array:
  return jax.random.split(jax.random.key(seed), SEEDS)


@pytest.mark.parametrize("method", ["vanilla", "swr"])
def test_learns_cartpole(runs, method):
  returns = np.asarray(runs[method][4].returns)  # [seed, update]
  assert returns.shape == (SEEDS, CONFIG.num_updates)
  second_half = np.nanmean(returns[:, CONFIG.num_updates // 2 :], axis=1)
  assert np.all(second_half > MIN_RETURN), second_half


def test_metrics_are_per_update_and_seed(runs):
  """Shapes and ranges are smoke checks; the real one: the total weight norm
  is the sum of the per-layer norms recorded with it."""
  measured = runs["swr"][4]
  num_layers = 3  # Dense_0, Dense_1, head
  assert np.asarray(measured.layer_norms).shape == (
    SEEDS,
    CONFIG.num_updates,
    num_layers,
  )
  np.testing.assert_allclose(
    measured.weight_norms, np.sum(measured.layer_norms, axis=-1), rtol=1e-5
  )
  for name in ("dormant_fraction", "effective_rank", "entropy", "value_error"):
    values = np.asarray(getattr(measured, name))
    assert values.shape == (SEEDS, CONFIG.num_updates), name
    assert np.all(np.isfinite(values)), name
  assert np.all(
    (0 <= measured.dormant_fraction) & (measured.dormant_fraction <= 1)
  )
  assert np.all(measured.effective_rank >= 1)
  assert np.all(measured.value_error >= 0)


def test_the_update_compiles_once(runs):
  env, _, run, _, _ = runs["vanilla"]
  # One trace of the rollout's step for all the updates of the run...
  assert env.traces == 1
  # ...and none for another run of the same shapes.
  _, measured = run(_keys(1))
  jax.block_until_ready(measured)
  assert env.traces == 1
  assert run._cache_size() == 1


def test_train_state_round_trips_through_orbax(runs, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint", reason="needs [checkpoint]")
  _, _, run, runner_state, _ = runs["swr"]
  train_state = runner_state.train_state
  path = tmp_path / "agent"
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, train_state)
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(
      path, jax.tree.map(ocp.utils.to_shape_dtype_struct, train_state)
    )
  assert jax.tree.structure(restored) == jax.tree.structure(train_state)
  for saved, loaded in zip(
    jax.tree.leaves(train_state), jax.tree.leaves(restored)
  ):
    np.testing.assert_array_equal(saved, loaded)
  np.testing.assert_array_equal(
    optax.tree.get(restored.opt_state, "reference_norms"),
    optax.tree.get(train_state.opt_state, "reference_norms"),
  )
  # The restored agent goes on exactly as the one that was saved, for a
  # whole run on new environments, with the program that trained it.
  saved = agent.without_envs(runner_state)
  _, expected = run(saved)
  _, resumed = run(saved._replace(train_state=restored))
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert run._cache_size() == 1  # the restored state compiled nothing new


def test_json_traces_are_thinned_and_keep_every_episode(runs):
  """What a script writes: the metrics after updates 1, 1 + k, ..., and the
  last; the episodes that ended between two of them counted at the second;
  summaries from every update."""
  measured = jax.tree.map(np.asarray, runs["swr"][4])
  num_updates = CONFIG.num_updates
  config = records.trace_config(num_updates)
  kept = config["trace_updates"]
  every = config["trace_every"]
  assert len(kept) <= records.TRACE_POINTS and every > 1
  assert kept[:2] == [1, 1 + every] and kept[-1] == num_updates
  written = json.loads(json.dumps(records.record(measured), allow_nan=False))
  traced = Metrics(
    **{name: np.array(written[name], float) for name in Metrics._fields}
  )
  index = np.array(kept) - 1
  np.testing.assert_array_equal(
    traced.layer_norms, measured.layer_norms[:, index]
  )
  np.testing.assert_array_equal(traced.entropy, measured.entropy[:, index])
  np.testing.assert_array_equal(
    traced.value_error, measured.value_error[:, index]
  )
  starts = [0, *(index[:-1] + 1)]
  for point, (start, end) in enumerate(zip(starts, index + 1)):
    np.testing.assert_array_equal(
      traced.episodes[:, point], measured.episodes[:, start:end].sum(axis=1)
    )
  np.testing.assert_allclose(
    records.recent_return(traced, fraction=1.0),
    records.recent_return(measured, fraction=1.0),
    rtol=1e-6,
  )
  last = round(num_updates * records.FINAL_FRACTION)
  np.testing.assert_allclose(
    written["final"]["layer_norms"],
    measured.layer_norms[:, -last:].mean(axis=1),
    rtol=1e-6,
  )
  np.testing.assert_array_equal(
    written["final"]["returns"], records.recent_return(measured)
  )
  for num_updates in (1, 2, 39, 40, 41, 390, 3906):
    every = records.trace_every(num_updates)
    kept = records.traced_updates(num_updates, every)
    assert len(kept) <= records.TRACE_POINTS, num_updates
    assert kept[0] == 1 and kept[-1] == num_updates


def test_unknown_env_lists_the_valid_ones():
  with pytest.raises(ValueError, match="CartPole-v1.*SpaceInvaders-MinAtar"):
    envs.make_env("CartPole-v0")
  with pytest.raises(ValueError, match="unknown gymnax environment 'Pong'"):
    ppo.main(["--env", "Pong", "--methods", "vanilla"])


def test_unknown_method_lists_the_valid_ones():
  with pytest.raises(ValueError, match="'dqn'.*vanilla,swr,l2,l2_init"):
    ppo.main(["--methods", "vanilla,dqn"])


def test_every_method_comes_from_the_registry_with_its_flags():
  env, env_params = envs.make_env("CartPole-v1")
  for name in METHODS:
    _, built, _ = make_agent(CONFIG, env, env_params, name)
    assert name in methods.REGISTRY
    if built.intervene is not None:  # an interval flag for each
      assert CONFIG.intervene_every(name) >= 1
    hook = agent.loop_hook(built)
    # Each method acts once: between updates, or in the minibatch loop.
    assert hook is None or built.intervene is None, name
  assert agent.loop_hook(make_agent(CONFIG, env, env_params, "cbp")[1])
  # The output layer's lambda is 0 unless set (the old default: --swr-coef).
  old = Config(swr_coef=1e-3, swr_head_coef=1e-3)
  assert old.coefs("swr") == (1e-3, 1e-3) and CONFIG.coefs("swr") == (1e-4, 0)
  assert CONFIG.coefs("swr_redo") == (1e-4, 0.1, 0.0)
  assert CONFIG.keeps_outputs("swr") and not old.keeps_outputs("swr")


def test_redo_recycles_dormant_units():
  if not hasattr(baselines, "redo"):
    pytest.skip("this optax_swr has no baselines.redo")
  # tau 0.5: some units are below half their layer's mean activity.
  config = Config(total_steps=512, redo_every=2, redo_tau=0.5)
  env, env_params = envs.make_env("CartPole-v1")
  train = make_train(config, env, env_params, "redo")
  runner_state, measured = jax.jit(train, static_argnums=1)(
    jax.random.key(0), 2
  )
  # ReDo acted after the second update: the recycled units of the last
  # hidden layer have zero outgoing weights, and so zero rows in the head.
  head = np.asarray(runner_state.train_state.params["head"]["kernel"])
  assert 0 < np.sum(np.all(head == 0, axis=1)) < len(head)
  assert np.all(np.isfinite(measured.weight_norms))


def test_train_takes_the_env_params_per_seed_and_its_own_output():
  """Per-seed env params under vmap, and a second call that does not compile."""
  config = Config(total_steps=512)
  env, env_params = envs.make_env("CartPole-v1")
  train = make_train(config, env, env_params, "vanilla")
  run = jax.jit(jax.vmap(train, in_axes=(0, None, 0)), static_argnums=1)
  keys = jax.random.split(jax.random.key(0), 2)
  per_seed = jax.tree.map(lambda x: jax.numpy.stack([x, x]), env_params)
  per_seed = per_seed.replace(gravity=jax.numpy.asarray([9.8, 30.0]))
  state, measured = run(keys, 2, per_seed)
  for seed, gravity in enumerate((9.8, 30.0)):
    alone, alone_measured = jax.jit(train, static_argnums=1)(
      keys[seed], 2, env_params.replace(gravity=gravity)
    )
    np.testing.assert_allclose(
      measured.weight_norms[seed], alone_measured.weight_norms, rtol=1e-5
    )
  # The default params are the ones make_train was given.
  _, default_measured = jax.jit(train, static_argnums=1)(keys[0], 2)
  np.testing.assert_allclose(
    measured.weight_norms[0], default_measured.weight_norms, rtol=1e-5
  )
  # Its own output goes back in, with other params, without a new compile.
  state, _ = run(state, 2, per_seed)
  state, _ = run(state, 2, per_seed.replace(gravity=per_seed.gravity * 2))
  assert run._cache_size() == 2  # the key start, then the runner state


def test_observation_shift_is_fixed_per_seed_and_phase():
  env, env_params = envs.make_env("CartPole-v1")
  shift = lambda seed, phase: envs.observation_shift(
    env, env_params, seed, phase
  )
  first = shift(3, 0)
  np.testing.assert_array_equal(first.perm, np.arange(4))
  np.testing.assert_array_equal(first.sign, np.ones(4))
  a = shift(3, 5)
  np.testing.assert_array_equal(a.perm, shift(3, 5).perm)
  np.testing.assert_array_equal(a.sign, shift(3, 5).sign)
  np.testing.assert_array_equal(np.sort(a.perm), np.arange(4))
  assert set(np.asarray(a.sign)) <= {-1.0, 1.0}
  others = [shift(4, 5), shift(3, 6)]
  assert all(
    not (np.array_equal(a.perm, o.perm) and np.array_equal(a.sign, o.sign))
    for o in others
  )
  # The wrapped environment's observation is the base one, shifted.
  shifted = envs.ShiftedObservation(env)
  key = jax.random.key(0)
  obs, _ = shifted.reset(key, a)
  base, _ = env.reset(key, env_params)
  np.testing.assert_allclose(obs, np.asarray(base)[np.asarray(a.perm)] * a.sign)


def test_observation_shift_refuses_image_observations():
  env, env_params = envs.make_env("Breakout-MinAtar")
  with pytest.raises(ValueError, match="--env.*vector"):
    envs.observation_shift(env, env_params, 0, 1)


def test_a_shifted_environment_trains_with_per_seed_shifts():
  config = Config(total_steps=512)
  env, env_params = envs.make_env("CartPole-v1")
  shifted = envs.ShiftedObservation(env)
  shifts = [envs.observation_shift(env, env_params, seed, 1) for seed in (0, 1)]
  per_seed = jax.tree.map(lambda *x: jax.numpy.stack(x), *shifts)
  train = make_train(config, shifted, shifts[0], "vanilla")
  run = jax.jit(jax.vmap(train, in_axes=(0, None, 0)), static_argnums=1)
  _, measured = run(jax.random.split(jax.random.key(0), 2), 2, per_seed)
  assert np.all(np.isfinite(np.asarray(measured.weight_norms)))


def test_continuous_actions_are_refused():
  env, env_params = envs.make_env("Pendulum-v1")
  with pytest.raises(ValueError, match="Discrete action space"):
    make_agent(CONFIG, env, env_params, "vanilla")


def test_minatar_games_share_one_padded_interface():
  from examples.rl import continual  # pylint: disable=g-import-not-at-top

  for game in ("Breakout", "Seaquest"):
    env = continual.PaddedMinAtar(game)
    obs, _ = env.reset(jax.random.key(0), env.params)
    assert obs.shape == (10, 10, continual.CHANNELS)
    assert envs.num_actions(env, env.params) == continual.ACTIONS
  with pytest.raises(ValueError, match="choose from: SpaceInvaders, Asterix"):
    continual.PaddedMinAtar("Pong")


def test_continual_first_visit_is_the_fresh_run_and_the_agent_carries_on(
  tmp_path,
):
  """The invariant the protocol's pairing rests on, on a tiny budget."""
  from examples.rl import continual  # pylint: disable=g-import-not-at-top

  results = continual.main(
    [
      "--games=Breakout,Freeway",
      "--cycles=1",
      "--steps-per-visit=512",
      "--num-envs=4",
      "--seeds=2",
      "--methods=vanilla",
      f"--out={tmp_path / 'c.json'}",
    ]
  )
  run = results["methods"]["vanilla"]
  first, second = run["visits"]
  assert first["returns"] == run["fresh"]["Breakout"]["returns"]
  assert second["weight_norms"] != run["fresh"]["Freeway"]["weight_norms"]
  traced = len(results["config"]["trace_updates"])
  assert np.shape(second["layer_norms"]) == (2, traced, 3)  # conv, Dense, head
  assert np.shape(second["final"]["entropy"]) == (2,)
  breakout, freeway = results["summary"]["vanilla"]
  assert breakout["gap_mean"] == 0.0 and freeway["game"] == "Freeway"
  from examples.rl import continual_report  # pylint: disable=g-import-not-at-top

  figure = tmp_path / "c.png"
  report = continual_report.main(
    [str(tmp_path / "c.json"), f"--figure={figure}"]
  )
  # Freeway's episodes last 2,500 steps: none ends here, its scores are NaN.
  assert json.dumps(report["summary"]) == json.dumps(results["summary"])
  assert (
    continual_report.table(report)
    .splitlines()[2]
    .startswith("| Breakout | 1 | ")
  )
  assert figure.stat().st_size > 0


def test_random_policy_scores_are_finite_and_fixed_by_the_key(tmp_path):
  from examples.rl import scores  # pylint: disable=g-import-not-at-top

  out = tmp_path / "random.json"
  # 400 steps of 8 environments, 50 each: Breakout's random episodes are
  # about 11 steps long, so some 35 end per seed.
  written = scores.main(
    ["--games=Breakout", "--steps=400", "--seeds=2", f"--out={out}"]
  )
  with open(out) as file:
    assert json.load(file)["games"] == written["games"]
  breakout = written["games"]["Breakout"]
  assert set(breakout) == {
    "mean",
    "stderr",
    "episodes",
    "seed_means",
    "seed_episodes",
  }
  assert np.isfinite(breakout["mean"]) and breakout["stderr"] > 0
  assert breakout["episodes"] == sum(breakout["seed_episodes"]) > 0
  again = scores.random_policy_scores(["Breakout"], 400, 2, jax.random.key(0))
  assert again == written["games"]
  other = scores.random_policy_scores(["Breakout"], 400, 2, jax.random.key(1))
  assert other != again
  with pytest.raises(ValueError, match="--steps: 100 is not a positive"):
    scores.random_policy_scores(["Breakout"], 100, 2, jax.random.key(0))


def _synthetic_continual_run() -> tuple[dict, dict]:
  """Three games A, B, C, two cycles, two seeds; C's scale is noise.

  The random policy scores A 1 (SE 0.1), B 0 (SE 0), C 5 (SE 1). Vanilla's
  fresh agents: A [9, 11] (mean 10, SE 1: scale 9, noise 2.2), B [4, 4]
  (scale 4), C [5, 7] (mean 6, SE 1: scale 1 <= noise 2 (1 + 1) = 4). SWR's:
  A [10, 10] (scale 9), B [2, 2] (scale 2), C [20, 20] (scale 15, clear of
  noise, but C is left out of every method's average for vanilla's).
  """
  games = ["A", "B", "C"]

  def run(fresh, scores):
    return {
      "fresh": {g: {"score": f} for g, f in zip(games, fresh)},
      "visits": [
        {"game": games[i % 3], "cycle": i // 3, "score": score}
        for i, score in enumerate(scores)
      ],
    }

  results = {
    "config": {"games": games, "cycles": 2, "seeds": 2},
    "methods": {
      "vanilla": run(
        [[9, 11], [4, 4], [5, 7]],
        [[10, 10], [2, 4], [0, 0], [19, 10], [4, 8], [None, 9]],
      ),
      "swr": run(
        [[10, 10], [2, 2], [20, 20]],
        [[10, 10], [1, 3], [0, 0], [10, 10], [0, 2], [0, 0]],
      ),
    },
  }
  random_scores = {
    "games": {
      "A": {"mean": 1.0, "stderr": 0.1},
      "B": {"mean": 0.0, "stderr": 0.0},
      "C": {"mean": 5.0, "stderr": 1.0},
    }
  }
  return results, random_scores


def test_normalized_table_against_hand_computed_values(tmp_path):
  from examples.rl import continual_report  # pylint: disable=g-import-not-at-top

  results, random_scores = _synthetic_continual_run()
  normalized = continual_report.normalized_visits(results, random_scores)
  assert list(normalized.left_out) == ["C"]
  assert "vanilla: 1.00 <= 4.00" in normalized.left_out["C"]
  assert "swr" not in normalized.left_out["C"]
  first, second = normalized.spans
  assert normalized.spans == {first: [2, 3], second: [4, 5, 6]}
  # Vanilla, visit 2 (B): 2 / 4, 4 / 4; visit 4 (A): 18 / 9, 9 / 9; visit 5
  # (B): 4 / 4, 8 / 4. SWR, visit 2: 1 / 2, 3 / 2; visit 4: 1, 1; visit 5:
  # 0, 1. Visits 3 and 6 (C) are left out.
  expected = {
    "vanilla": {first: [0.5, 1.0], second: [1.5, 1.5]},
    "swr": {first: [0.5, 1.5], second: [0.5, 1.0]},
  }
  for method, spans in expected.items():
    for label, values in spans.items():
      np.testing.assert_allclose(normalized.per_seed[method][label], values)
  table = continual_report.normalized_table(results, random_scores)
  # t(1) = 12.706: half-widths 12.706 sd / sqrt(2), 3.18 for sd 0.354.
  assert "| vanilla | 0.75 ± 3.18 | - | 1.50 ± 0.00 | - |" in table
  assert (
    "| swr | 1.00 ± 6.35 | +0.25 ± 3.18 | 0.75 ± 3.18 | -0.75 ± 3.18 |"
    in (table)
  )
  assert "| C | 5.000 ± 1.000 | 1.00 (4.00); left out |" in table
  assert "Left out: C, fresh - random within noise" in table
  without_c = tmp_path / "random.json"
  without_c.write_text(
    json.dumps({"games": {g: random_scores["games"][g] for g in "AB"}})
  )
  with pytest.raises(ValueError, match="no random policy's score for C;"):
    continual_report.load_random_scores(str(without_c), ["A", "B", "C"])


def _swr_step(config: Config, method: str, grads_scale: float):
  """Outputs before and after one step of ``method`` from params pushed off
  their initial norms (so that SWR acts), and the layers' factors."""
  env, env_params = envs.make_env("CartPole-v1")
  network, built, _ = make_agent(config, env, env_params, method)
  obs = jax.random.normal(jax.random.key(1), (32, 4))
  params = network.init(jax.random.key(0), obs)["params"]
  opt_state = built.tx.init(params)
  params = jax.tree.map(lambda x: 1.5 * x + 0.05, params)
  grads = jax.tree.map(
    lambda x: grads_scale * jax.random.normal(jax.random.key(2), x.shape),
    params,
  )
  updates, opt_state = built.tx.update(grads, opt_state, params)
  stepped = optax.apply_updates(params, updates)
  return (
    network.apply({"params": params}, obs),
    network.apply({"params": stepped}, obs),
    (params, stepped, updates),
    optax.tree.get(opt_state, "cumulative_scales"),
  )


@pytest.mark.parametrize("method", ["swr", "swr_redo"])
def test_swr_keeps_the_logits_and_value_by_default(method):
  """Issue 28, part 3: with the output layer's lambda 0 (the default), an
  SWR step leaves the logits and the value as they were (the torso is
  rescaled, the output layer absorbs it); with the old default (lambda_c =
  lambda), both are scaled by the product of the factors."""
  config = Config(swr_coef=0.1, swr_redo_coef=0.1)
  (logits, value), (new_logits, new_value), (params, stepped, _), scales = (
    _swr_step(config, method, grads_scale=0.0)
  )
  kernel = lambda p: np.asarray(p["Dense_0"]["kernel"])
  assert not np.allclose(kernel(stepped), kernel(params))  # SWR acted
  np.testing.assert_allclose(new_value, value, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(new_logits, logits, rtol=1e-5, atol=1e-5)
  # The state records the output layer's compensation: output scale 1.
  np.testing.assert_allclose(scales[-1], 1.0, rtol=1e-6)

  old = Config(swr_coef=0.1, swr_redo_coef=0.1, swr_head_coef=0.1)
  (_, value), (_, new_value), _, scales = _swr_step(old, method, 0.0)
  assert scales[-1] < 0.99
  assert not np.allclose(new_value, value, rtol=1e-3)
  np.testing.assert_allclose(new_value, scales[-1] * value, rtol=1e-5)


def test_swr_step_is_the_base_step_on_the_outputs():
  """With a gradient, the default SWR step's outputs are the base
  optimizer's (vanilla's Adam on the same gradient): SWR adds nothing
  there."""
  config = Config(swr_coef=0.1)
  _, swr_outputs, _, _ = _swr_step(config, "swr", grads_scale=1.0)
  _, base_outputs, _, _ = _swr_step(config, "vanilla", grads_scale=1.0)
  for got, want in zip(swr_outputs, base_outputs):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_value_error_is_the_critics_squared_error_on_gae_targets():
  """A two-step rollout by hand: gamma = lambda = 0.5, the episode ends at
  the second step, the critic outputs 1 everywhere."""
  from examples.rl import train  # pylint: disable=g-import-not-at-top

  config = Config(gamma=0.5, gae_lambda=0.5)
  column = lambda *x: jax.numpy.asarray(x, jax.numpy.float32)[:, None]
  rollout = train.Transition(
    obs=jax.numpy.zeros((2, 1, 4)),
    action=jax.numpy.zeros((2, 1), jax.numpy.int32),
    log_prob=column(0.0, 0.0),
    value=column(0.5, 0.25),
    reward=column(1.0, 1.0),
    done=column(0.0, 1.0),
  )
  _, targets = train._gae(rollout, jax.numpy.asarray([2.0]), config)
  # Step 2 ends the episode: 1 - 0.25 = 0.75, target 1. Step 1: delta
  # 1 + 0.5 * 0.25 - 0.5 = 0.625, advantage 0.625 + 0.25 * 0.75 = 0.8125,
  # target 1.3125.
  np.testing.assert_allclose(targets[:, 0], [1.3125, 1.0])
  env, env_params = envs.make_env("CartPole-v1")
  network, _, layers = make_agent(config, env, env_params, "vanilla")
  params = network.init(jax.random.key(0), jax.numpy.zeros((1, 4)))["params"]
  head = params["head"]
  params["head"] = {
    "kernel": jax.numpy.zeros_like(head["kernel"]),
    "bias": jax.numpy.asarray([0.0, 0.0, 1.0]),
  }
  obs = jax.random.normal(jax.random.key(1), (2, 4))
  ended = (jax.numpy.zeros(2), jax.numpy.zeros(2))
  measured = train._measure(
    network, params, layers, (obs, targets[:, 0]), 0.1, ended
  )
  expected = ((1.0 - 1.3125) ** 2 + (1.0 - 1.0) ** 2) / 2
  np.testing.assert_allclose(measured.value_error, expected, rtol=1e-6)


@pytest.mark.parametrize("method", ["adamw", "cbp", "swr_redo"])
def test_the_new_methods_run_vmapped(method):
  """One tiny update per seed, with the step hooks acting: continual
  backprop replaces units (rate 1, once mature: 100 minibatch steps), SWR +
  ReDo recycles after the update (tau 0.5: some units are below half their
  layer's mean activity)."""
  config = Config(
    num_envs=4,
    num_steps=8,
    num_minibatches=2,
    update_epochs=1 if method != "cbp" else 4,
    adamw_coef=0.1,
    cbp_rate=1.0,
    swr_redo_tau=0.5,
    redo_every=1,
  )
  updates = 13 if method == "cbp" else 1  # 13 x 8 = 104 steps
  env, env_params = envs.make_env("CartPole-v1")
  train = make_train(config, env, env_params, method)
  run = jax.jit(jax.vmap(functools.partial(train, num_updates=updates)))
  state, measured = run(_keys(0))
  for leaf in jax.tree.leaves((state.train_state, measured.weight_norms)):
    assert np.all(np.isfinite(np.asarray(leaf))), method
  head = np.asarray(state.train_state.params["head"]["kernel"])
  zero_rows = np.sum(np.all(head == 0, axis=-1), axis=-1)  # per seed
  if method == "adamw":
    assert np.all(zero_rows == 0)
  else:
    # Replaced or recycled units have zero outgoing weights.
    assert np.all(zero_rows > 0), zero_rows
  if method == "cbp":
    # Every unit would be 104 steps old without a replacement.
    ages = np.asarray(state.train_state.hook_state.age[0])  # [seed, units]
    assert ages.max() < 104, ages.max()


def test_adamw_without_decay_is_vanilla():
  config = Config(total_steps=512, adamw_coef=0.0)
  env, env_params = envs.make_env("CartPole-v1")
  results = {}
  for method in ("vanilla", "adamw"):
    train = make_train(config, env, env_params, method)
    state, measured = jax.jit(train, static_argnums=1)(jax.random.key(0), 2)
    results[method] = (state.train_state, measured)
  for a, b in zip(*(jax.tree.leaves(r) for r in results.values())):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "flag, value, method",
  [
    ("--cbp-rate", 2.0, "cbp"),
    ("--adamw-coef", -1.0, "adamw"),
    ("--swr-redo-tau", 1.5, "swr_redo"),
    ("--swr-head-coef", 2.0, "swr"),
  ],
)
def test_a_wrong_coefficient_names_its_flag(flag, value, method):
  with pytest.raises(ValueError, match=flag):
    ppo.main([f"--methods={method}", f"{flag}={value}"])
