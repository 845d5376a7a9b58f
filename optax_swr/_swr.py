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

"""Soft Weight Rescaling (SWR) as an optax gradient transformation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _config
from optax_swr import _layers
from optax_swr import _norms
from optax_swr import _tracing
from optax_swr import _warnings

Path = _layers.Path

# optax keeps its own wording (base.NO_PARAMS_MSG) private; this repeats it.
_NO_PARAMS_MSG = (
  "You are using a transformation that requires the current value of"
  " parameters, but you are not passing `params` when calling `update`."
  " swr needs the current params: call `tx.update(updates, opt_state,"
  " params)`. If your training loop calls `tx.update(grads, opt_state)`,"
  " pass the params as the third argument (nnx.Optimizer and Flax's"
  " TrainState.apply_gradients already do)."
)


class SWRState(NamedTuple):
  """State of :func:`swr`; read fields with ``optax.tree.get(state, name)``.

  Attributes:
    step_count: number of updates done so far (int32 scalar).
    reference_norms: per-layer target norms n_l, float32 of shape
      ``[num_layers]``, in forward order; taken from the params given to
      ``init`` and replaced at ``reset_norms_at`` steps. A layer whose norm
      is 0 there (zero-initialised) takes its first non-zero norm.
    layer_scales: the factors c_l applied to each layer's weight by the last
      update (ones after ``init``).
    cumulative_scales: the factors C_l applied to each layer's bias by the
      last update: the product of c from the last normalization layer (or the
      input) up to layer l.
    weight_norms: Frobenius norms of the weights after the last update.
    input_scales: the factor by which the last update scaled each layer's
      input (C of the layer before it, 1 for the first layer);
      :func:`sync_batch_stats` rescales BatchNorm running statistics by it.
    deferred_factors: with ``swr(..., deferred=True)``, one entry per leaf
      of the params: the factor that :func:`rescale_params` applies to it
      after ``optax.apply_updates`` (``None`` for a leaf SWR leaves alone;
      per slice for a stacked leaf), 1 once applied; ``()`` otherwise.

  Every field is an array or a tuple of arrays whose shapes depend only on
  the layers, so ``optax.tree_map_params`` works on states that contain it.
  Name the per-layer entries with :func:`by_layer`.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.full((2, 2), 2.0)}}
    >>> tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=0.1))
    >>> opt_state = tx.init(params)
    >>> print(optax.tree.get(opt_state, "reference_norms"))
    [4.]
    >>> print(optax.tree.get(opt_state, "step_count"))
    0
  """

  step_count: jax.Array
  reference_norms: jax.Array
  layer_scales: jax.Array
  cumulative_scales: jax.Array
  weight_norms: jax.Array
  input_scales: jax.Array
  deferred_factors: tuple[jax.Array | None, ...] = ()


def swr(
  coef: optax.ScalarOrSchedule = 1e-3,
  *,
  layers: _layers.LayersArg = None,
  classifier: int | Sequence[Path | str] | None = None,
  classifier_coef: optax.ScalarOrSchedule | None = None,
  reset_norms_at: Sequence[int] | int | jax.Array = (),
  deferred: bool = False,
) -> optax.GradientTransformation:
  r"""Soft Weight Rescaling: shrinks each layer toward its reference norm.

  After the base optimizer's step, with :math:`W_l` the new weight of layer
  :math:`l` and :math:`n_l` its reference norm (its norm at initialisation),
  SWR computes

  .. math::
    c_l = \frac{\lambda n_l + (1 - \lambda) \|W_l\|_F}{\|W_l\|_F}, \qquad
    W_l \leftarrow c_l W_l, \qquad b_l \leftarrow C_l b_l,

  where :math:`C_l` is the product of the :math:`c` of the layers from the
  last normalization layer (or the input) up to :math:`l`. For a chain of
  affine/conv layers with ReLU-like activations this scales the network's
  output by one positive constant, so predictions are unchanged (Theorem 1 of
  the paper), while every weight norm stays bounded (Theorem 2).

  Chain it after the base optimizer; ``update`` needs the params. A layer
  (:class:`Layer`) is one weight leaf and an optional bias leaf of the params;
  a normalization layer restarts the product C. Leaves outside the layers
  keep the base optimizer's updates.

  Args:
    coef: :math:`\lambda_f \in [0, 1]`, the rescaling strength of every layer
      not in ``classifier``, or a schedule of the step count. 0 does nothing;
      1 pins every layer at its reference norm.
    layers: the layers in forward order: :class:`Layer` values (the tracers
      :func:`layers_from_linen`, :func:`layers_from_nnx` and
      :func:`layers_from_equinox` return them), or paths of layer sub-trees
      (a tuple of keys from the root of the params tree, e.g.
      ``("encoder", "conv1")``; a string is a one-key path) whose leaves
      follow a naming convention (Flax ``kernel``/``scale``/``embedding`` and
      ``bias``, Equinox and PyTorch-style ``weight``/``bias``, Haiku
      ``w``/``b``, ``scale``/``offset``, ``embeddings``); or a function of
      the params that returns them. ``None`` infers the layers and their
      order from numbered names (``Dense_0`` ... ``Dense_11``, Haiku's
      ``linear``, ``linear_1``, ...) and raises ``ValueError`` where the tree
      does not settle the order (see :func:`find_layers`), or whose sizes
      do not connect (two heads). The :class:`Layers` a tracer returns also
      carry the network's log-scale equations (residual merges, attention,
      GELU, ...); ``swr`` then takes, each step, the factors nearest to the
      paper's (least squares in log space) that keep the function up to one
      output scale. Edit them with their methods (``with_coef``,
      ``without``, ``restrict_to``, ``chain_rule``): a list of traced
      layers that would lose the function is refused.
    classifier: the classifier layers, which use ``classifier_coef``: an int
      ``k`` (the last ``k`` layers) or a sequence of paths.
    classifier_coef: :math:`\lambda_c \in [0, 1]` or a schedule, for the
      ``classifier`` layers; required with ``classifier``. A
      :class:`Layer`'s own ``coef`` takes precedence over both.
    reset_norms_at: step counts (updates done before this one, as optax
      schedules count) at which the reference norms become the norms of the
      params passed to that update ("SWR + re-init"); pass the boundaries of a
      piecewise-constant learning-rate schedule.
    deferred: the fast step. ``update`` passes the updates through and keeps
      each leaf's factor in the state; :func:`rescale_params`, called after
      ``optax.apply_updates``, applies them: the params become
      :math:`c (p + u)` as in the chain, up to float rounding, without the
      param-sized temporary that rescaling the update needs (see
      :func:`rescale_params`). Forgetting that call leaves SWR undone.

  Returns:
    An ``optax.GradientTransformation`` whose state is :class:`SWRState`.

  Odd inputs: a schedule's (or an injected coefficient's) value outside
  [0, 1] is clipped to [0, 1] at that step, and NaN leaves the layers
  unscaled, since neither can be checked inside ``jit``. A layer whose weight
  is 0 at ``init`` (a zero-initialised head, residual branch, LoRA B matrix
  or BatchNorm scale) is left alone (c = 1, so the factors of the layers
  after it are unchanged) until its norm first becomes non-zero; that norm
  becomes its reference norm. A layer whose norm is 0 or not finite after
  the base step keeps the base optimizer's update at that step. An empty
  params tree gives an empty state and passes the updates through. With
  bfloat16 or float16 weights, a constant ``coef`` below half the dtype's
  epsilon (bf16: 3.9e-3) rescales by less than the weights' resolution:
  ``init`` warns once (``LowPrecisionWarning``); keep float32 master params.

  Raises:
    ValueError: for a coefficient outside [0, 1], malformed ``layers`` or
      ``classifier``, a list of traced layers that lost their equations or
      a layer; and (at ``init`` / ``update``) for layers that are not in the
      params tree, whose order cannot be inferred, or that ``optax.masked``
      hides in part.

  Warns:
    NotAChainWarning: at ``init``, for a hand-written list of layers whose
      sizes do not connect.
    LowPrecisionWarning: see above.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {
    ...     "Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
    ...     "Dense_1": {"kernel": jnp.ones((3, 1)), "bias": jnp.ones(1)},
    ... }
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(coef=0.5))
    >>> opt_state = tx.init(params)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, opt_state = tx.update(grads, opt_state, params)
    >>> params = optax.apply_updates(params, updates)
    >>> print(optax.tree.get(opt_state, "layer_scales"))
    [1.0555556 1.0555556]
    >>> print(params["Dense_0"]["kernel"][0].round(4))
    [0.95 0.95 0.95]

  References:
    Oh, Park, Han and Kim, `Recovering Plasticity of Neural Networks via Soft
    Weight Rescaling <https://arxiv.org/abs/2507.04683>`_, 2025.
  """
  config = _config.make_config(
    coef, layers, classifier, classifier_coef, reset_norms_at
  )
  if not isinstance(deferred, bool):
    raise ValueError(
      f"swr: `deferred` must be True or False; got {deferred!r}. Under "
      "optax.inject_hyperparams, pass static_args=('deferred',)."
    )
  warned_precision = False

  def init_fn(params: Any) -> SWRState:
    nonlocal warned_precision
    if params is None:
      raise ValueError(
        "swr: `params` passed to init is None. Pass the model's params "
        "(e.g. variables['params'] for Flax Linen)."
      )
    found = _config.resolve(config, params).layers
    leaves = jax.tree.leaves(params)
    if not warned_precision:
      warned_precision = _warn_if_below_resolution(
        leaves, found, (coef, classifier_coef)
      )
    if isinstance(config.layers, tuple):
      _warn_if_disconnected(params, found)
    norms = _norms.weight_norms(leaves, found)
    ones = jnp.ones_like(norms)
    state = SWRState(
      step_count=jnp.zeros([], jnp.int32),
      reference_norms=norms,
      layer_scales=ones,
      cumulative_scales=ones,
      weight_norms=norms,
      input_scales=ones,
    )
    if not deferred:
      return state
    one = [jnp.ones([], jnp.float32)] * len(found)
    factors = _leaf_factors(found, one, one, leaves)
    return state._replace(deferred_factors=_per_leaf(factors, len(leaves)))

  def update_fn(
    updates: Any, state: SWRState, params: Any = None
  ) -> tuple[Any, SWRState]:
    if params is None:
      raise ValueError(_NO_PARAMS_MSG)
    _config.check_same_structure(
      "swr",
      ("updates", "params"),
      updates,
      params,
      "swr must receive the full params tree that the updates belong to.",
    )
    found, projection = _config.resolve(config, params)
    update_leaves, treedef = jax.tree.flatten(updates)
    param_leaves = jax.tree.leaves(params)
    # p + u only feeds the norms: the outputs are written from p and u, so
    # XLA need not keep a param-sized p + u buffer alive for them.
    moved = {
      layer.weight_index: _norms.moved(
        param_leaves[layer.weight_index], update_leaves[layer.weight_index]
      )
      for layer in found
      if layer.weight_index is not None
    }
    factors, new_state = _rescaling(
      found, projection, moved, param_leaves, state, config.reset_steps
    )
    if deferred:
      pending = _per_leaf(factors, len(param_leaves))
      return updates, new_state._replace(deferred_factors=pending)
    for leaf, factor in factors.items():
      update_leaves[leaf] = _rescaled_update(
        update_leaves[leaf], param_leaves[leaf], factor
      )
    return jax.tree.unflatten(treedef, update_leaves), new_state

  return optax.GradientTransformation(init_fn, update_fn)


def reset_reference_norms(
  tx: optax.GradientTransformation, opt_state: Any, params: Any
) -> Any:
  """Makes the current weight norms the new SWR targets ("SWR + re-init").

  Every :class:`SWRState` inside ``opt_state`` (also inside ``optax.chain``,
  ``inject_hyperparams`` or ``MultiSteps`` states) gets the norms of
  ``params`` as its reference norms; everything else is kept. Use it where a
  fixed ``reset_norms_at`` list does not fit, e.g. when the learning rate is
  reduced on a plateau.

  Args:
    tx: the transformation that produced ``opt_state``.
    opt_state: the optimizer state, as returned by ``tx.init`` / ``tx.update``.
    params: the params whose layer norms become the new references.

  Returns:
    ``opt_state`` with the reference norms replaced.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
    >>> tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=1e-2))
    >>> opt_state = tx.init(params)
    >>> bigger = {"Dense_0": {"kernel": 3 * jnp.ones((2, 2))}}
    >>> opt_state = optax_swr.reset_reference_norms(tx, opt_state, bigger)
    >>> print(optax.tree.get(opt_state, "reference_norms"))
    [6.]
  """
  fresh_state = tx.init(params)
  is_swr_state = lambda node: isinstance(node, SWRState)
  if not any(map(is_swr_state, jax.tree.leaves(opt_state, is_swr_state))):
    raise ValueError(
      "reset_reference_norms: `opt_state` holds no SWRState. Pass the state "
      "of a transformation that contains optax_swr.swr(...)."
    )
  # Matched by position, not by tree structure: nnx.Optimizer wraps every
  # array of its state in an OptState variable that tx.init does not.
  fresh = iter(
    node
    for node in jax.tree.leaves(fresh_state, is_swr_state)
    if is_swr_state(node)
  )

  def replace(node: Any) -> Any:
    if not is_swr_state(node):
      return node
    old_norms, treedef = jax.tree.flatten(node.reference_norms)
    new_norms = jax.tree.leaves(next(fresh).reference_norms)
    return node._replace(reference_norms=jax.tree.unflatten(treedef, new_norms))

  return jax.tree.map(replace, opt_state, is_leaf=is_swr_state)


def _rescaling(
  found: tuple[_layers.ResolvedLayer, ...],
  projection: _layers.Projection | None,
  weights: dict[int, jax.Array],
  param_leaves: list[Any],
  state: SWRState,
  reset_steps: np.ndarray | None,
) -> tuple[dict[int, jax.Array], SWRState]:
  """The core both doors share: new weights -> each leaf's factor, new state.

  Args:
    found: the layers, each with its coefficient.
    projection: a traced network's projection; None for a chain.
    weights: each layer's new weight p + u, by the index of its leaf.
    param_leaves: the leaves of the params before the step.
    state: the state before the step.
    reset_steps: the step counts at which the reference norms are reset.

  Returns:
    The factor of every leaf SWR rescales, by leaf index (a scalar, or one
    per slice of a stacked leaf), and the new state.
  """
  reference_norms = state.reference_norms
  if reset_steps is not None:
    reference_norms = jax.lax.cond(
      jnp.any(state.step_count == reset_steps),
      lambda: _norms.weight_norms(param_leaves, found, near=reference_norms),
      lambda: reference_norms,
    )
  norms = _norms.layer_norms(weights, found, near=reference_norms)
  coefs = _evaluate_once(
    [layer.layer.coef for layer in found], state.step_count
  )
  norm_vector = _norms.stack(norms)
  # A layer with reference norm 0 (zero-initialised) gets c = 1 here, and its
  # first non-zero norm becomes its reference from the next step on.
  layer_scales = _layer_scales(
    norm_vector, reference_norms, _norms.stack(coefs)
  )
  if projection is None:
    # The same c_l again, one scalar per layer from its own norm: each weight
    # is then scaled as soon as its norm is known, not after every layer's
    # (+5% on the paper's CNN training step on a 2-core CPU otherwise).
    weight_factors = list(
      map(_layer_scales, norms, _norms.unstack(reference_norms), coefs)
    )
    cumulative_scales = _cumulative_scales(layer_scales, found)
    input_scales = _input_scales(cumulative_scales)
  else:
    layer_scales, cumulative_scales, input_scales = _project(
      layer_scales, projection
    )
    weight_factors = _norms.unstack(layer_scales)
  factors = _leaf_factors(
    found, weight_factors, _norms.unstack(cumulative_scales), param_leaves
  )
  new_state = SWRState(
    step_count=optax.safe_increment(state.step_count),
    reference_norms=_first_nonzero_norms(reference_norms, norm_vector),
    layer_scales=layer_scales,
    cumulative_scales=cumulative_scales,
    weight_norms=layer_scales * norm_vector,
    input_scales=input_scales,
    deferred_factors=state.deferred_factors,
  )
  return factors, new_state


def _per_leaf(
  factors: dict[int, jax.Array], num_leaves: int
) -> tuple[jax.Array | None, ...]:
  """The factors as one entry per params leaf, None where SWR does nothing."""
  return tuple(factors.get(leaf) for leaf in range(num_leaves))


def _evaluate_once(coefs: list[Any], step_count: jax.Array) -> list[jax.Array]:
  """Each layer's coefficient at this step: one evaluation per distinct one,
  whatever the number of layers."""
  values = {id(c): _evaluate(c, step_count) for c in coefs}
  return [values[id(c)] for c in coefs]


def _evaluate(coef: optax.ScalarOrSchedule, step_count: jax.Array):
  """The coefficient at this step, clipped to [0, 1].

  A schedule (or an injected hyperparameter) can't be range-checked inside
  ``jit``; clipping keeps every factor c positive. NaN stays NaN, and
  ``_layer_scales`` then leaves the layers unscaled.
  """
  value = coef(step_count) if callable(coef) else coef
  return jnp.clip(jnp.asarray(value, jnp.float32), 0.0, 1.0)


class LowPrecisionWarning(UserWarning):
  """SWR's per-step rescaling is below the resolution of the weights' dtype.

  ``init`` warns once when a layer's weights are bfloat16 or float16 and the
  constant ``coef`` (or ``classifier_coef``) is below half the dtype's
  epsilon: the rescaling then rounds away whenever the base updates are
  small. Keep float32 master params, or filter it with
  ``warnings.simplefilter("ignore", optax_swr.LowPrecisionWarning)``.

  Example:
    >>> import warnings
    >>> import jax.numpy as jnp
    >>> import optax_swr
    >>> params = {"Dense_0": {"kernel": jnp.ones((2, 2), jnp.bfloat16)}}
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter("always")
    ...   _ = optax_swr.swr(coef=1e-3).init(params)
    >>> caught[0].category.__name__
    'LowPrecisionWarning'
  """


def _warn_if_below_resolution(
  leaves: list[Any],
  found: tuple[_layers.ResolvedLayer, ...],
  coefs: tuple[optax.ScalarOrSchedule | None, ...],
) -> bool:
  """Warns if the largest coefficient can't move a low-precision weight.

  A step changes a weight by the factor c = 1 + lam (n / ||W|| - 1), so by
  less than lam relative to the weight. Below half the dtype's epsilon (bf16:
  2**-9, about 2e-3) that change rounds away when optax adds the update, and
  SWR does nothing. Returns whether it warned.
  """
  largest = _largest_coef(coefs)
  if largest is None or largest == 0:  # 0 is a deliberate no-op.
    return False
  for layer in found:
    if layer.weight_index is None:
      continue
    dtype = jnp.result_type(leaves[layer.weight_index])
    if jnp.finfo(dtype).bits >= 32:
      continue  # The advice (float32 master params) is for 16-bit weights.
    resolution = float(jnp.finfo(dtype).eps) / 2
    if largest < resolution:
      _warnings.warn(
        f"swr: the layer {layer.path!r} has {dtype} weights, whose "
        f"resolution ({resolution:.1e}) is coarser than the per-step "
        f"rescaling, at most coef = {largest:g} of the weight: rounding "
        "undoes it when the update is added, so wherever the base "
        "optimizer's updates are small SWR changes nothing. Keep "
        "float32 master params (e.g. Flax `param_dtype=jnp.float32` with "
        "`dtype=jnp.bfloat16` for the computation), or use coef >= "
        f"{resolution:.1e}.",
        LowPrecisionWarning,
      )
      return True
  return False


def _warn_if_disconnected(
  params: Any, found: tuple[_layers.ResolvedLayer, ...]
) -> None:
  """A hand-written list is the user's word for the order, but two layers
  whose sizes do not connect are not a chain: say so, by name."""
  layers = [item.layer for item in found]
  if any(layer.traced_from is not None for layer in layers):
    return  # The trace knows the network.
  gap = _layers.disconnected(
    layers, _layers.leaf_paths(params), jax.tree.leaves(params)
  )
  if gap is not None:
    _warnings.warn(
      f"swr: the layers in `layers` do not form a chain: {gap}. Scaled as a "
      "chain (each bias by the factors of the layers listed before it), the "
      "network's function changes at every step; two heads on the same "
      "features (an actor and a critic) are not a chain. Trace the model "
      "(optax_swr.layers_from_linen / layers_from_nnx / "
      "layers_from_equinox), which keeps the function; if a reshape joins "
      "them and they are a chain, filter this warning.",
      _tracing.NotAChainWarning,
    )


def _largest_coef(
  coefs: tuple[optax.ScalarOrSchedule | None, ...],
) -> float | None:
  """The largest constant coefficient; None for a schedule or a traced one."""
  values = []
  for coef in coefs:
    if coef is None:
      continue
    if callable(coef):
      return None  # Its values at later steps are unknown here.
    try:
      values.append(float(coef))
    except jax.errors.ConcretizationTypeError:
      return None
  return max(values) if values else None


def _layer_scales(
  norms: jax.Array, reference_norms: jax.Array, coefs: jax.Array
) -> jax.Array:
  """c_l = (lam n_l + (1 - lam) ||W_l||) / ||W_l||.

  c_l = 1 where ||W_l|| is 0 or not finite: a layer whose update holds NaN
  or Inf keeps what the base optimizer made of it, and its factor does not
  reach the cumulative factors of the layers after it. c_l = 1 also where
  n_l is 0: a zero-initialised layer has no scale to return to yet (the
  paper's rule would pull it to 0, or with lam = 1 wipe it at every step).
  """
  usable = (norms > 0) & jnp.isfinite(norms) & (reference_norms > 0)
  safe_norms = jnp.where(usable, norms, 1.0)
  scales = coefs * reference_norms / safe_norms + (1.0 - coefs)
  return jnp.where(usable & jnp.isfinite(scales), scales, 1.0)


def _first_nonzero_norms(
  reference_norms: jax.Array, norms: jax.Array
) -> jax.Array:
  """Reference norms of 0 become the layer's first non-zero, finite norm.

  A zero-initialised layer (a LoRA B matrix, a zero-init head or residual
  branch, a BatchNorm scale set to 0) is left alone until training moves it;
  the norm it first reaches is the scale SWR then keeps it near.
  """
  adopt = (reference_norms == 0) & (norms > 0) & jnp.isfinite(norms)
  return jnp.where(adopt, norms, reference_norms)


def _cumulative_scales(
  layer_scales: jax.Array, found: tuple[_layers.ResolvedLayer, ...]
) -> jax.Array:
  """C_l: the running product of c_l, restarted at every normalization layer.

  A normalization layer undoes any positive scale of its input, so the scale
  of the output only depends on the layers since the last one.
  """
  starts = [i for i, layer in enumerate(found) if layer.is_norm and i > 0]
  segments = np.split(np.arange(len(found)), starts)
  return jnp.concatenate(
    [jnp.cumprod(layer_scales[segment]) for segment in segments]
  )


def _project(
  layer_scales: jax.Array, projection: _layers.Projection
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The factors nearest (in log space) to the paper's that keep the function.

  Returns the weights' factors c, the biases' factors C and the inputs'
  scales, as exp of linear maps of log c*.
  """
  log_star = jnp.log(layer_scales)
  apply = lambda matrix: jnp.exp(jnp.asarray(matrix, jnp.float32) @ log_star)
  return (
    apply(projection.weights),
    apply(projection.biases),
    apply(projection.inputs),
  )


def _leaf_factors(
  found: tuple[_layers.ResolvedLayer, ...],
  weight_factors: list[jax.Array],
  bias_factors: list[jax.Array],
  leaves: list[Any],
) -> dict[int, jax.Array]:
  """Each rescaled leaf's factor: a scalar, or one per slice of a stack.

  A stacked leaf's factors are shaped to broadcast over its own axes; a
  slice that no layer names keeps the factor 1.
  """
  factors: dict[int, jax.Array] = {}
  slices: dict[int, list[tuple[tuple[int, ...], jax.Array]]] = {}
  for i, layer in enumerate(found):
    for leaf, factor in (
      (layer.weight_index, weight_factors[i]),
      (layer.bias_index, bias_factors[i]),
    ):
      if leaf is None:
        continue
      if layer.stack_index:
        slices.setdefault(leaf, []).append((layer.stack_index, factor))
      else:
        factors[leaf] = factor
  for leaf, entries in slices.items():
    shape = jnp.shape(leaves[leaf])
    depth = len(entries[0][0])
    where = tuple(np.array(axis) for axis in zip(*(i for i, _ in entries)))
    stacked = jnp.ones(shape[:depth], jnp.float32)
    stacked = stacked.at[where].set(jnp.stack([f for _, f in entries]))
    factors[leaf] = stacked.reshape(shape[:depth] + (1,) * (len(shape) - depth))
  return factors


def _input_scales(cumulative_scales: jax.Array) -> jax.Array:
  """The scale of each layer's input: C of the layer before it (1 first)."""
  if not cumulative_scales.shape[0]:
    return cumulative_scales
  return jnp.concatenate([jnp.ones([1], jnp.float32), cumulative_scales[:-1]])


def _rescaled_update(
  update: jax.Array, param: jax.Array, factor: jax.Array
) -> jax.Array:
  """The update u' with p + u' = factor * (p + u), in the update's dtype.

  Written as (factor - 1) * p + factor * u, so that factor == 1 returns u
  exactly and no p + u buffer is needed.
  """
  dtype = _norms.pair_dtype(param, update)
  rescaled = (factor - 1) * param.astype(dtype) + factor * update.astype(dtype)
  return rescaled.astype(update.dtype)
