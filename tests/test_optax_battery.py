"""The optax battery, run over every public gradient transformation.

Modelled on optax's own contrib battery: jit without recompiles, extra args,
inject_hyperparams, MultiSteps, masked, dtypes, state stability and
``optax.tree_map_params``. Each transform runs as users run it: ``swr``
after ``optax.adam``, the baselines' loss terms (``l2``, ``l2_init``) before
it. The params hold a normalization layer (``scale``/``bias``) and a leaf
outside every layer. Add new public transforms to ``CASES``.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import optax_swr
from optax_swr import baselines
from tests import helpers

LR = 0.1
STEPS = 3
NOT_A_LAYER = "temperature"


def params_with_a_norm_layer(dtype=jnp.float32) -> dict:
  """Dense, LayerNorm, Dense, in order by their names, and a scalar."""
  rng = np.random.default_rng(0)
  tree = {
    "layers_0": helpers.dense(rng, 4, 5),
    "layers_1": helpers.layer_norm(rng, 5),
    "layers_2": helpers.dense(rng, 5, 2),
    NOT_A_LAYER: np.ones(()),
  }
  return helpers.to_jax(tree, dtype)


@dataclasses.dataclass(frozen=True)
class Case:
  """A public transform, with what the battery needs to know about it.

  Attributes:
    factory: the package function that returns the transform.
    kwargs: its arguments.
    before_adam: a loss term goes before the optimizer, swr after it.
    hyperparam: a numeric hyperparameter that inject_hyperparams can change
      at run time, and another value for it.
    static_args: the arguments inject_hyperparams must keep static.
    param_states: the state fields shaped like the params.
    known_bugs: checks that fail because of a library bug: check -> why.
  """

  factory: Callable[..., optax.GradientTransformation]
  kwargs: dict[str, Any]
  before_adam: bool = False
  hyperparam: tuple[str, float] | None = None
  static_args: tuple[str, ...] = ()
  param_states: tuple[str, ...] = ("mu", "nu")
  known_bugs: dict[str, str] = dataclasses.field(default_factory=dict)

  def build(self, factory=None, **overrides) -> optax.GradientTransformation:
    tx = (factory or self.factory)(**{**self.kwargs, **overrides})
    stages = (tx, optax.adam(LR)) if self.before_adam else (optax.adam(LR), tx)
    return optax.chain(*stages)

  def injected(self) -> optax.GradientTransformation:
    inject = optax.inject_hyperparams(self.factory, self.static_args)
    return self.build(inject)


def layer(name, coef=None, weight="kernel", norm=False):
  return optax_swr.Layer((name, weight), (name, "bias"), norm=norm, coef=coef)


CASES = {
  "swr-coef": Case(optax_swr.swr, {"coef": 0.1}, hyperparam=("coef", 0.5)),
  "swr-schedules": Case(
    optax_swr.swr,
    {
      "coef": optax.linear_schedule(0.5, 0.0, STEPS),
      "classifier": [("layers_2",)],
      "classifier_coef": optax.constant_schedule(0.9),
    },
  ),
  "swr-classifier": Case(
    optax_swr.swr,
    {"coef": 0.1, "classifier": 1, "classifier_coef": 1.0},
    hyperparam=("classifier_coef", 0.3),
    static_args=("classifier",),
  ),
  "swr-layer-values": Case(
    optax_swr.swr,
    {
      "coef": 0.1,
      "layers": [
        layer("layers_0"),
        layer("layers_1", coef=0.0, weight="scale", norm=True),
        layer("layers_2", coef=0.5),
      ],
    },
    hyperparam=("coef", 0.4),
  ),
  "swr-layers-callable": Case(
    optax_swr.swr,
    {
      "coef": 0.2,
      "layers": lambda params: sorted(k for k in params if k != NOT_A_LAYER),
    },
    hyperparam=("coef", 0.6),
    static_args=("layers",),  # a callable would be taken for a schedule
  ),
  "swr-reset-norms": Case(
    optax_swr.swr,
    {"coef": 0.3, "reset_norms_at": (1, 2)},
    hyperparam=("coef", 0.7),
  ),
  "l2": Case(
    baselines.l2,
    {"coef": 1e-2},
    before_adam=True,
    hyperparam=("coef", 0.2),
  ),
  "l2-init": Case(
    baselines.l2_init,
    {"coef": 1e-2},
    before_adam=True,
    hyperparam=("coef", 0.2),
    param_states=("mu", "nu", "initial_params"),
  ),
}


def cases(check: str | None = None, injectable: bool = False):
  """The cases as pytest params, known bugs of `check` as strict xfails."""
  return [
    pytest.param(
      case,
      id=name,
      marks=pytest.mark.xfail(
        reason=case.known_bugs[check], raises=ValueError, strict=True
      )
      if check in case.known_bugs
      else (),
    )
    for name, case in CASES.items()
    if case.hyperparam or not injectable
  ]


def grads_at(params, step):
  return helpers.random_like(params, 100 + step, scale=2.0)


def run_side_by_side(params, expected_update, expected_state, update, state):
  """Runs two updates on the same grads and params for STEPS steps, asserts
  that they agree at each, and returns both final states."""
  for t in range(STEPS):
    grads = grads_at(params, t)
    wanted, expected_state = expected_update(grads, expected_state, params)
    got, state = update(grads, state, params)
    helpers.assert_trees_close(got, wanted, rtol=1e-5)
    params = optax.apply_updates(params, wanted)
  return expected_state, state


def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def types(tree):
  """Tree structure, shapes, dtypes, weak types and shardings of `tree`."""
  return jax.tree.structure(tree), [
    (x.shape, x.dtype, x.weak_type, x.sharding) for x in jax.tree.leaves(tree)
  ]


@pytest.mark.parametrize("case", cases())
def test_jit_gives_the_eager_result_and_compiles_once(case):
  params = params_with_a_norm_layer()
  tx = case.build()
  traces = []

  @jax.jit
  def step(grads, state, params):
    traces.append(1)
    return tx.update(grads, state, params)

  eager_state, jitted_state = run_side_by_side(
    params, tx.update, tx.init(params), step, tx.init(params)
  )
  helpers.assert_trees_close(jitted_state, eager_state, rtol=1e-5)
  assert len(traces) == 1
  assert step._cache_size() == 1


def scale_by_value() -> optax.GradientTransformationExtraArgs:
  """A stage that needs the extra arg `value`: it scales the updates by it."""

  def update_fn(updates, state, params=None, *, value, **extra_args):
    del params, extra_args
    return jax.tree.map(lambda u: (value * u).astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(
    lambda params: optax.EmptyState(), update_fn
  )


@pytest.mark.parametrize("case", cases())
def test_update_takes_extra_args_when_wrapped_and_in_a_chain(case):
  params = params_with_a_norm_layer()
  grads = grads_at(params, 0)
  extra_args = {"value": jnp.float32(2.0), "key": jax.random.key(0)}

  tx = case.factory(**case.kwargs)
  wrapped = optax.with_extra_args_support(tx)
  assert isinstance(wrapped, optax.GradientTransformationExtraArgs)
  updates, state = wrapped.update(grads, wrapped.init(params), params)
  with_extra, state_with_extra = wrapped.update(
    grads, wrapped.init(params), params, **extra_args
  )
  helpers.assert_trees_close(with_extra, updates, rtol=0, atol=0)
  helpers.assert_trees_close(state_with_extra, state, rtol=0, atol=0)

  # The chain hands `value` to every stage; the first one uses it.
  chained = optax.chain(scale_by_value(), case.build())
  updates, _ = chained.update(grads, chained.init(params), params, **extra_args)
  fixed = optax.chain(optax.scale(2.0), case.build())
  expected, _ = fixed.update(grads, fixed.init(params), params)
  helpers.assert_trees_close(updates, expected)


@pytest.mark.parametrize("case", cases("inject"))
def test_inject_hyperparams_gives_the_fixed_result_at_every_step(case):
  params = params_with_a_norm_layer()
  fixed, injected = case.build(), case.injected()
  injected_step = jax.jit(injected.update)
  run_side_by_side(
    params,
    fixed.update,
    fixed.init(params),
    injected_step,
    injected.init(params),
  )
  assert injected_step._cache_size() == 1


@pytest.mark.parametrize("case", cases("inject", injectable=True))
def test_an_injected_hyperparam_changes_at_run_time_without_recompiling(case):
  """Two steps from params away from init (l2_init pulls toward the init)."""
  initial = params_with_a_norm_layer()
  params = jax.tree.map(lambda p: 1.5 * p, initial)
  name, other_value = case.hyperparam
  injected = case.injected()
  step = jax.jit(injected.update)

  def two_steps(update, state):
    for t in range(2):
      updates, state = update(grads_at(params, t), state, params)
    return updates

  state = injected.init(initial)
  before = two_steps(step, state)
  after = two_steps(
    step, optax.tree.set(state, **{name: jnp.float32(other_value)})
  )
  fixed = case.build(**{name: other_value})
  expected = two_steps(fixed.update, fixed.init(initial))
  helpers.assert_trees_close(after, expected, rtol=1e-5)
  assert not np.allclose(flat(after), flat(before), rtol=1e-3)
  assert step._cache_size() == 1


@pytest.mark.parametrize("case", cases())
def test_multisteps_accumulates_then_applies_one_step_on_the_mean(case):
  params = params_with_a_norm_layer()
  micro_grads = [grads_at(params, t) for t in range(2)]
  inner = case.build()
  multi = optax.MultiSteps(inner, every_k_schedule=2)

  step = jax.jit(multi.update)
  state = multi.init(params)
  first, state = step(micro_grads[0], state, params)
  chex.assert_trees_all_equal(first, jax.tree.map(jnp.zeros_like, params))
  updates, state = step(micro_grads[1], state, params)

  mean = jax.tree.map(lambda a, b: (a + b) / 2, *micro_grads)
  expected, expected_state = inner.update(mean, inner.init(params), params)
  helpers.assert_trees_close(updates, expected, rtol=1e-5)
  helpers.assert_trees_close(state.inner_opt_state, expected_state, rtol=1e-5)
  assert step._cache_size() == 1


@pytest.mark.parametrize("case", cases())
def test_masked_leaves_keep_their_grads_and_the_rest_is_transformed_alone(case):
  params = params_with_a_norm_layer()
  grads = grads_at(params, 0)
  mask = {key: key != NOT_A_LAYER for key in params}
  tx = optax.masked(case.build(), mask)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert updates[NOT_A_LAYER] == grads[NOT_A_LAYER]

  # The other leaves get what the transform makes of them on their own.
  def others(tree):
    return {key: value for key, value in tree.items() if key != NOT_A_LAYER}

  alone = case.build()
  expected, _ = alone.update(
    others(grads), alone.init(others(params)), others(params)
  )
  helpers.assert_trees_close(others(updates), expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", cases())
def test_updates_keep_param_dtypes_and_the_state_its_types(case, dtype):
  params = params_with_a_norm_layer(dtype)
  tx = case.build()
  initial = tx.init(params)
  eager_updates, eager_state = tx.update(grads_at(params, 0), initial, params)
  chex.assert_trees_all_equal_dtypes(eager_updates, params)
  assert types(eager_state) == types(initial)

  step = jax.jit(tx.update)
  state = initial
  for t in range(STEPS):
    updates, state = step(grads_at(params, t), state, params)
    params = optax.apply_updates(params, updates)
    chex.assert_trees_all_equal_dtypes(updates, params)
    assert types(state) == types(initial)
  assert step._cache_size() == 1


@pytest.mark.parametrize("case", cases())
def test_tree_map_params_maps_exactly_the_param_shaped_state(case):
  params = params_with_a_norm_layer()
  tx = case.build()
  _, state = tx.update(grads_at(params, 0), tx.init(params), params)

  labels = optax.tree_map_params(
    tx, lambda _: "param", state, transform_non_params=lambda _: "other"
  )
  assert jax.tree.structure(labels) == jax.tree.structure(state)
  for name in case.param_states:
    assert optax.tree.get(labels, name) == jax.tree.map(
      lambda _: "param", params
    )
  assert jax.tree.leaves(labels).count("param") == len(case.param_states) * len(
    jax.tree.leaves(params)
  )

  as_bf16 = optax.tree_map_params(tx, lambda p: p.astype(jnp.bfloat16), state)
  for label, before, after in zip(
    jax.tree.leaves(labels), jax.tree.leaves(state), jax.tree.leaves(as_bf16)
  ):
    assert after.dtype == (jnp.bfloat16 if label == "param" else before.dtype)
  chex.assert_trees_all_equal_shapes(as_bf16, state)

  # Param-shaped state follows the params' shardings; the rest replicates.
  mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
  spec = lambda x: P("data") if x.ndim else P()
  param_shardings = jax.tree.map(lambda p: NamedSharding(mesh, spec(p)), params)
  shardings = optax.tree_map_params(
    tx,
    lambda _, sharding: sharding,
    state,
    param_shardings,
    transform_non_params=lambda _: NamedSharding(mesh, P()),
  )
  placed = jax.jit(tx.init, out_shardings=shardings)(params)
  for label, leaf in zip(jax.tree.leaves(labels), jax.tree.leaves(placed)):
    assert leaf.sharding.spec == (spec(leaf) if label == "param" else P())
  helpers.assert_trees_close(placed, tx.init(params), rtol=0, atol=0)
