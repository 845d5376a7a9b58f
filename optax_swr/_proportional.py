# Copyright 2026 The optax_swr Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""A check users run on their own model: does one SWR step keep its function?"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _batch_stats
from optax_swr import _layers
from optax_swr import _swr

Path = _layers.Path


class ProportionalityReport(NamedTuple):
  """How far one SWR step is from scaling the outputs by one constant.

  Attributes:
    relative_error: ``max |after - s * before| / max |s * before|`` over all
      outputs, with ``s`` the least-squares common scale. About 1e-6 for a
      chain in float32. A normalization layer's epsilon adds to it: with its
      input scaled by ``c``, ``x / sqrt(var + eps)`` becomes
      ``x / sqrt(var + eps / c**2)``, a change of about
      ``|1 - 1 / c**2| * eps / (2 * var)``. That depends on ``eps`` relative
      to the variance of each normalized channel (each row for LayerNorm and
      RMSNorm), and reaches percent where that variance is small (channels a
      ReLU leaves nearly dead); ``error_without_epsilon`` leaves it out.
    fitted_scale: that least-squares common scale ``s``.
    predicted_scale: the output scale SWR predicts: for a chain, the
      cumulative scale C of the last layer (Theorem 1); for traced layers,
      exp of the output's log-scale form.
    argmax_agreement: the fraction of rows (of the first output, along its
      last axis) whose argmax did not change.
    constrained_layers: the layers whose factor the traced equations tie to
      others' (residual merges, attention, non-homogeneous operations).
    pinned_layers: those whose factor they fix completely: SWR leaves them
      unscaled.
    error_without_epsilon: ``relative_error`` with every normalization
      epsilon in ``apply_fn`` shrunk to about 0 (see
      :func:`check_proportional`): SWR's own error. Its difference from
      ``relative_error`` is, roughly, the epsilons' share. ``None`` where no
      epsilon was found, or ``apply_fn`` cannot be traced by
      ``jax.make_jaxpr`` (Python control flow on array values, or side
      effects such as an NNX model updating its BatchNorm statistics).
  """

  relative_error: float
  fitted_scale: float
  predicted_scale: float
  argmax_agreement: float
  constrained_layers: tuple[str, ...] = ()
  pinned_layers: tuple[str, ...] = ()
  error_without_epsilon: float | None = None


def check_proportional(
  apply_fn: Callable[..., Any],
  params: Any,
  tx_or_layers: optax.GradientTransformation | _layers.LayersArg,
  *inputs: Any,
  coef: float = 0.5,
  seed: int = 0,
  bias_noise: float = 0.5,
  batch_stats: Any = None,
) -> ProportionalityReport:
  """Applies one SWR step with zero updates and measures the output change.

  So that the step does something, the reference norms are first set to the
  current norms times random factors in [0.5, 2]. So that a wrong factor on
  a bias shows (Flax initialises biases at zero), every bias first gets
  Gaussian noise of standard deviation ``bias_noise``. Then the params are
  rescaled with zero updates and ``apply_fn`` is run before and after.

  A normalization layer ignores the scale of its input only up to its
  epsilon, by an amount that depends on the data (see
  :class:`ProportionalityReport`). So that SWR's own error can be told from
  it, ``apply_fn`` is also traced with ``jax.make_jaxpr`` and run before and
  after with every epsilon multiplied by 1e-12 (not 0, so that an all-zero
  channel gives 0, not 0 / 0): the error of that run is
  ``error_without_epsilon``. An epsilon is a constant in (0, 1e-2] added to
  a value that is then square-rooted or divided by (through reshapes,
  broadcasts and dtype conversions), in ``apply_fn`` or any jaxpr inside it
  (``jit``, ``checkpoint``, ``custom_jvp`` / ``custom_vjp``, ``scan``,
  ``while_loop``, ``cond``): the epsilons of Flax's and Equinox's LayerNorm,
  RMSNorm, GroupNorm and BatchNorm. An epsilon added in one jaxpr and
  square-rooted in another (outside and inside a ``jit``) is left as it is.
  Without its epsilon, a channel whose values are all equal normalizes their
  rounding error: there ``error_without_epsilon`` can be large too.

  Args:
    apply_fn: ``apply_fn(params, *inputs)`` returns the outputs (any tree of
      arrays), e.g. ``lambda p, x: model.apply({"params": p}, x)``.
    params: the params to rescale.
    tx_or_layers: an ``optax_swr.swr(...)`` transformation (used as
      configured; avoid chains whose base optimizer moves params on zero
      gradients, like weight decay), or the ``layers`` to build
      ``swr(coef, layers=...)`` with (``None`` to infer them). With a
      transformation, the biases are the leaves named ``bias``, ``b`` or
      ``offset``; with layers, the layers' biases.
    *inputs: the inputs passed to ``apply_fn``.
    coef: the coefficient used when ``tx_or_layers`` are layers.
    seed: seed of the random reference-norm factors and bias noise.
    bias_noise: standard deviation of the noise added to every bias; 0
      checks the params as they are.
    batch_stats: BatchNorm running statistics, to check a model in eval
      mode: ``apply_fn(params, batch_stats, *inputs)`` is then called, after
      the step with the statistics synced by :func:`sync_batch_stats`
      (needs ``tx_or_layers`` to be layers).

  Returns:
    A :class:`ProportionalityReport`.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax_swr
    >>> params = {
    ...     "Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
    ...     "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
    ... }
    >>> def mlp(p, x):
    ...   h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    ...   return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    >>> report = optax_swr.check_proportional(mlp, params, None, jnp.ones((5, 3)))
    >>> report.relative_error < 1e-6
    True
  """
  is_tx = isinstance(tx_or_layers, optax.GradientTransformation)
  if batch_stats is not None and is_tx:
    raise ValueError(
      "check_proportional: `batch_stats` needs the layers, to sync the "
      "statistics; pass `tx_or_layers` as the layers, not a transformation."
    )
  graph = getattr(tx_or_layers, "graph", None)
  if isinstance(tx_or_layers, optax.GradientTransformation):
    tx = tx_or_layers
    biases = _bias_leaves_by_name(params)
  else:
    tx = _swr.swr(coef=coef, layers=tx_or_layers)
    spec = _layers.normalize_layers_arg(
      tx_or_layers, caller="check_proportional"
    )
    found = _layers.resolve(params, spec, caller="check_proportional")
    biases = {r.bias_index for r in found if r.bias_index is not None}
  params = _with_bias_noise(params, biases, bias_noise, seed)
  state = _with_random_reference_norms(tx.init(params), seed)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, state = tx.update(zeros, state, params)
  rescaled = optax.apply_updates(params, updates)

  if batch_stats is None:
    args_before, args_after = (params, *inputs), (rescaled, *inputs)
  else:
    synced = _batch_stats.sync_batch_stats(
      batch_stats, state, [item.layer for item in found]
    )
    args_before = (params, batch_stats, *inputs)
    args_after = (rescaled, synced, *inputs)
  before = jax.tree.leaves(apply_fn(*args_before))
  after = jax.tree.leaves(apply_fn(*args_after))
  relative_error, scale = _relative_error(before, after)
  predicted = float(optax.tree.get(state, "cumulative_scales")[-1])
  constrained: tuple[str, ...] = ()
  pinned: tuple[str, ...] = ()
  if graph is not None:
    log_c = np.log(np.asarray(optax.tree.get(state, "layer_scales")))
    predicted = float(np.exp(graph.output_form @ log_c))
    names = [item.layer.name for item in found]
    classes = graph.classes()
    constrained = tuple(n for n, c in zip(names, classes) if c != "free")
    pinned = tuple(n for n, c in zip(names, classes) if c == "pinned")
  return ProportionalityReport(
    relative_error=relative_error,
    fitted_scale=scale,
    predicted_scale=predicted,
    argmax_agreement=float(
      np.mean(np.argmax(before[0], -1) == np.argmax(after[0], -1))
    ),
    constrained_layers=constrained,
    pinned_layers=pinned,
    error_without_epsilon=_error_without_epsilon(
      apply_fn, args_before, args_after
    ),
  )


def _relative_error(before: list[Any], after: list[Any]) -> tuple[float, float]:
  """The relative error of ``after`` from ``s * before``, and that ``s``."""
  flat_before = np.concatenate([np.ravel(x).astype(np.float64) for x in before])
  flat_after = np.concatenate([np.ravel(x).astype(np.float64) for x in after])
  scale = flat_after @ flat_before / max(flat_before @ flat_before, 1e-300)
  error = np.abs(flat_after - scale * flat_before).max()
  relative = error / max(np.abs(scale * flat_before).max(), 1e-300)
  return float(relative), float(scale)


# An `add` of a constant up to this size, whose sum is then square-rooted or
# divided by, is taken for a normalization epsilon.
_LARGEST_EPSILON = 1e-2
_EPSILON_SHRINK = 1e-12
_SHAPE_ONLY_PRIMITIVES = frozenset(
  {"convert_element_type", "broadcast_in_dim", "reshape", "squeeze"}
)


def _error_without_epsilon(
  apply_fn: Callable[..., Any],
  args_before: tuple[Any, ...],
  args_after: tuple[Any, ...],
) -> float | None:
  """The relative error of ``apply_fn`` with its epsilons shrunk, or None."""
  try:
    closed = jax.make_jaxpr(apply_fn)(*args_before)
  except Exception:  # pylint: disable=broad-except
    # Not traceable as a pure function (control flow on values, or state
    # mutated across traces, e.g. flax's TraceContextError): no estimate.
    return None
  shrunk, count = _shrink_epsilons(closed)
  if not count:
    return None
  run = jax.jit(jex_core.jaxpr_as_fun(shrunk))
  before = run(*jax.tree.leaves(args_before))
  after = run(*jax.tree.leaves(args_after))
  return _relative_error(before, after)[0]


def _shrink_epsilons(closed: jex_core.ClosedJaxpr) -> tuple[Any, int]:
  """``closed`` with every epsilon shrunk, in it and its sub-jaxprs; how many.

  Rewrites the jaxpr rather than interpreting it, so that control flow
  (``scan``, ``while_loop``, ``cond``) is rewritten inside like any call.
  """
  jaxpr = closed.jaxpr
  uses = collections.defaultdict(list)
  for eqn in jaxpr.eqns:
    for position, atom in enumerate(eqn.invars):
      if isinstance(atom, jex_core.Var):
        uses[atom].append((eqn, position))
  constants = {
    var: value
    for var, value in zip(jaxpr.constvars, closed.consts)
    if np.ndim(value) == 0
  }
  eqns, count = [], 0
  for eqn in jaxpr.eqns:
    params = dict(eqn.params)
    for key, value in eqn.params.items():
      params[key], sub_count = _shrink_epsilons_in_param(value)
      count += sub_count
    invars = list(eqn.invars)
    name = eqn.primitive.name
    # An epsilon held in a jax array is a constvar, converted before the add.
    if name == "convert_element_type":
      value = _scalar_constant(invars[0], constants)
      if value is not None:
        constants[eqn.outvars[0]] = value
    if name == "add" and _is_rooted_or_divided_by(eqn.outvars[0], uses):
      for position, atom in enumerate(invars):
        value = _scalar_constant(atom, constants)
        if value is not None and 0 < value <= _LARGEST_EPSILON:
          shrunk = np.asarray(value * _EPSILON_SHRINK, atom.aval.dtype)
          invars[position] = jex_core.Literal(shrunk, atom.aval)
          count += 1
          break
    eqns.append(eqn.replace(invars=invars, params=params))
  return closed.replace(jaxpr=jaxpr.replace(eqns=eqns)), count


def _shrink_epsilons_in_param(value: Any) -> tuple[Any, int]:
  if isinstance(value, jex_core.ClosedJaxpr):
    return _shrink_epsilons(value)
  if isinstance(value, jex_core.Jaxpr):
    shrunk, count = _shrink_epsilons(jex_core.ClosedJaxpr(value, []))
    return shrunk.jaxpr, count
  # `cond`'s branches; other tuples (conv's dimension numbers) stay as they are.
  jaxpr_types = (jex_core.ClosedJaxpr, jex_core.Jaxpr)
  if isinstance(value, tuple) and any(
    isinstance(v, jaxpr_types) for v in value
  ):
    pairs = [_shrink_epsilons_in_param(item) for item in value]
    return tuple(item for item, _ in pairs), sum(count for _, count in pairs)
  return value, 0


def _scalar_constant(atom: Any, constants: dict[Any, Any]) -> float | None:
  if not jnp.issubdtype(atom.aval.dtype, jnp.floating):
    return None
  if isinstance(atom, jex_core.Literal):
    value = atom.val
  else:
    value = constants.get(atom)
  return None if value is None or np.ndim(value) else float(value)


def _is_rooted_or_divided_by(var: Any, uses: dict[Any, list[Any]]) -> bool:
  for eqn, position in uses.get(var, ()):
    name = eqn.primitive.name
    if name in ("sqrt", "rsqrt") or (name == "div" and position == 1):
      return True
    if name in _SHAPE_ONLY_PRIMITIVES and _is_rooted_or_divided_by(
      eqn.outvars[0], uses
    ):
      return True
  return False


def _with_random_reference_norms(opt_state: Any, seed: int) -> Any:
  rng = np.random.default_rng(seed)
  is_swr_state = lambda node: isinstance(node, _swr.SWRState)

  def perturb(node):
    if not is_swr_state(node):
      return node
    factors = rng.uniform(0.5, 2.0, size=node.reference_norms.shape)
    scaled = node.reference_norms * factors
    return node._replace(
      reference_norms=scaled.astype(node.reference_norms.dtype)
    )

  return jax.tree.map(perturb, opt_state, is_leaf=is_swr_state)


def _bias_leaves_by_name(params: Any) -> set[int]:
  return {
    index
    for index, path in enumerate(_layers.leaf_paths(params))
    if path and path[-1] in _layers.BIAS_NAMES
  }


def _with_bias_noise(
  params: Any, biases: set[int], std: float, seed: int
) -> Any:
  if not std or not biases:
    return params
  rng = np.random.default_rng([seed, 1])
  leaves, treedef = jax.tree.flatten(params)
  for index in biases:
    leaf = leaves[index]
    noise = rng.normal(0.0, std, size=np.shape(leaf))
    leaves[index] = (leaf + noise).astype(leaf.dtype)
  return jax.tree.unflatten(treedef, leaves)
