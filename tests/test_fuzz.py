"""Fuzzing swr on random Dense/Conv/Norm chains, against the float64 reference.

Every example draws a chain of 1-6 layers (dense, conv, or LayerNorm-like
normalization layers with a ``scale`` weight), random widths, init scales
(1e-12 to 1e12, and exact zeros), coefficients (constants including 0 and 1,
or schedules), a classifier, ``reset_norms_at`` steps, a base Adam learning
rate (including 0: zero updates) and random gradients. It runs Adam then swr
for 1-5 steps and checks every step:

* exactness: swr's params and state equal ``reference.swr_step`` applied in
  float64 to the same float32 params and Adam updates, within a float32
  rounding bound (``Bounds``, ``leaf_error_bound``); the whole run also
  follows ``reference.train`` (float64 Adam + SWR) within a first-order
  bound on the drift of the two runs (``check_trajectory``);
* Theorem 1: the chain's float64 forward pass on the rescaled params is the
  forward pass on ``p + u`` times the product of c since the last
  normalization layer (derived here), for the reference's params and for
  swr's with swr's own c, within the rounding carried through the net;
* Theorem 2: every weight norm stays under ``n_ref + sqrt(B) / lam``;
* Theorem 3: with one coefficient for two consecutive layers, their norm
  ratio lands between its value before the rescaling and its reference value.

swr computes norms and factors in float32 even for float64 params, so running
it under ``jax_enable_x64`` would not make the check tighter: the tests run in
float32 with tolerances derived from float32 rounding.

Speed (300 examples in about 35 s on a 2-core CPU): a jitted step would
compile for every drawn tree, so the steps run eagerly (``run_swr``: Adam
jitted leaf by leaf, swr op by op), and every leaf is stored zero-padded to
8 channels (a conv kernel keeps its 1x1 or 3x3 window), so that the eager
ops compile once per padded shape, not once per drawn width. The padding changes nothing:
zeros add nothing to a norm, Adam's update of a zero gradient is 0, and SWR
rescales 0 to 0; the forward pass and the rounding bounds use the real
blocks.

Init scales stay within 1e+-12, where the reference's float32 rounding bounds
hold; entries whose float32 squares leave float32's range (1e+-20) have their
own tests at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from unittest import mock

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_swr
from tests import reference

Flat = dict[tuple, np.ndarray]
U32 = 2.0**-24  # Unit roundoff of float32.
EPS64 = 2.0**-52
PAD = 8  # Every channel axis is stored padded to this width.
BATCH = 3
UNBOUNDED = 1e200  # An error bound that bounds nothing.
# float32 optax.adam errs by up to about 1e-5 * lr against float64 Adam (its
# bias correction 1 - 0.999**t cancels: 1.3e-5 relative at t = 1).
ADAM_ATOL = 5e-5
SETTINGS = settings(
  max_examples=300, deadline=None, derandomize=True, database=None
)


class LayerSpec(NamedTuple):
  """One drawn layer: ``kind`` is "dense", "conv" or "norm"."""

  kind: str
  width: int
  kernel_size: int
  has_bias: bool
  log_scale: float | None  # None: the weight starts at exactly zero.


class CoefSpec(NamedTuple):
  """("const", (v,)), ("linear", (a, b, T)) or ("piecewise", (v, s, k))."""

  kind: str
  values: tuple


class Case(NamedTuple):
  """One fuzz example."""

  in_width: int
  spatial: int
  layers: tuple[LayerSpec, ...]
  explicit_layers: bool
  extra_leaf: bool
  coef: CoefSpec
  classifier: int | tuple[int, ...] | None
  classifier_coef: CoefSpec | None
  reset_norms_at: tuple[int, ...] | int
  steps: int
  lr: float
  log_grad_scale: float
  seed: int


# ---------------------------------------------------------------- strategies


def _power_of_10(exponent: float) -> float:
  return 10.0**exponent


# Hypothesis favours the first branch of one_of and simple values (0, False):
# the branches are ordered so that no-ops (coef 0, lr 0, zero weights) stay
# a minority.
unit_floats = st.one_of(
  st.floats(1e-4, 1.0), st.floats(0.0, 1.0), st.sampled_from([1.0, 0.0])
)


@st.composite
def coef_specs(draw) -> CoefSpec:
  kind = draw(st.sampled_from(["const", "const", "linear", "piecewise"]))
  if kind == "const":
    return CoefSpec(kind, (draw(unit_floats),))
  last = draw(st.integers(1, 6) if kind == "linear" else st.integers(0, 5))
  return CoefSpec(kind, (draw(unit_floats), draw(unit_floats), last))


@st.composite
def layer_specs(draw, width: int) -> LayerSpec:
  kind = draw(st.sampled_from(["dense", "conv", "norm"]))
  log_scale = draw(
    st.one_of(
      st.floats(-6.0, 6.0), st.sampled_from([-12.0, 0.0, 12.0]), st.none()
    )
  )
  return LayerSpec(
    kind=kind,
    width=width if kind == "norm" else draw(st.integers(1, PAD)),
    kernel_size=draw(st.sampled_from([1, 3])) if kind == "conv" else 0,
    has_bias=not draw(st.booleans()),
    log_scale=log_scale,
  )


@st.composite
def cases(draw) -> Case:
  in_width = draw(st.integers(1, PAD))
  layers, width = [], in_width
  for _ in range(draw(st.integers(1, 6))):
    layers.append(draw(layer_specs(width)))
    width = layers[-1].width
  classifier = draw(
    st.one_of(
      st.none(),
      st.integers(0, len(layers)),
      st.lists(st.integers(0, len(layers) - 1), min_size=1, unique=True).map(
        tuple
      ),
    )
  )
  steps = draw(st.integers(1, 5))
  return Case(
    in_width=in_width,
    spatial=draw(st.integers(1, 3)),
    layers=tuple(layers),
    explicit_layers=draw(st.booleans()),
    extra_leaf=draw(st.booleans()),
    coef=draw(coef_specs()),
    classifier=classifier,
    classifier_coef=None if classifier is None else draw(coef_specs()),
    reset_norms_at=draw(
      st.one_of(
        st.just(()),
        st.integers(0, steps),
        st.lists(
          st.integers(0, steps), min_size=1, max_size=3, unique=True
        ).map(tuple),
      )
    ),
    steps=steps,
    lr=draw(st.one_of(st.floats(-4.0, 0.0).map(_power_of_10), st.just(0.0))),
    log_grad_scale=draw(st.floats(-3.0, 3.0)),
    seed=draw(st.integers(0, 2**32 - 1)),
  )


# ------------------------------------------------------------- building a case


def layer_name(index: int) -> str:
  return f"layers_{index}"


def weight_key(spec: LayerSpec) -> str:
  return "scale" if spec.kind == "norm" else "kernel"


def real_blocks(case: Case) -> dict[tuple, tuple[slice, ...]]:
  """The drawn (unpadded) block of every leaf, by leaf path."""
  blocks, fan_in = {}, case.in_width
  for index, spec in enumerate(case.layers):
    name, out = layer_name(index), slice(spec.width)
    window = (slice(None),) * 2 if spec.kind == "conv" else ()
    weight = (out,) if spec.kind == "norm" else (*window, slice(fan_in), out)
    blocks[(name, weight_key(spec))] = weight
    if spec.has_bias:
      blocks[(name, "bias")] = (out,)
    fan_in = spec.width
  if case.extra_leaf:
    blocks[("temperature",)] = (slice(None),)
  return blocks


def layer_spec(case: Case, key: tuple) -> LayerSpec:
  """The spec of the layer that holds the leaf ``key``."""
  return case.layers[int(key[0].removeprefix("layers_"))]


def padded_shape(case: Case, key: tuple) -> tuple[int, ...]:
  if key == ("temperature",):
    return (2,)
  spec = layer_spec(case, key)
  if spec.kind == "conv" and key[1] == "kernel":
    return (spec.kernel_size, spec.kernel_size, PAD, PAD)
  return (PAD, PAD) if key[1] == "kernel" else (PAD,)


def unflatten(flat: dict[tuple, Any]) -> dict:
  tree = {}
  for key, value in flat.items():
    node = tree
    for part in key[:-1]:
      node = node.setdefault(part, {})
    node[key[-1]] = value
  return tree


def padded_random(case, rng, scales: dict[tuple, float]) -> dict:
  """A float32 tree: N(0, scale^2) entries in the real blocks, 0 elsewhere."""
  flat = {}
  for key, block in real_blocks(case).items():
    value = np.zeros(padded_shape(case, key), np.float32)
    value[block] = scales[key] * rng.normal(size=value[block].shape)
    flat[key] = jnp.asarray(value)
  return unflatten(flat)


def init_params(case: Case, rng: np.random.Generator) -> dict:
  """The chain's params; a weight's norm is about 10**log_scale sqrt(width)."""
  scales = {}
  for key, block in real_blocks(case).items():
    if key[-1] in ("kernel", "scale"):
      spec = layer_spec(case, key)
      fan_in = np.prod(np.zeros(padded_shape(case, key))[block].shape[:-1])
      scales[key] = (
        0.0
        if spec.log_scale is None
        else (
          10**spec.log_scale / np.sqrt(fan_in if spec.kind != "norm" else 1)
        )
      )
    else:
      scales[key] = 1.0
  return padded_random(case, rng, scales)


def draw_grads(case: Case, rng: np.random.Generator) -> list[dict]:
  scale = 10**case.log_grad_scale
  return [
    padded_random(case, rng, dict.fromkeys(real_blocks(case), scale))
    for _ in range(case.steps)
  ]


def ref_layers(case: Case) -> list[reference.RefLayer]:
  return [
    reference.RefLayer(
      (layer_name(i), weight_key(spec)),
      (layer_name(i), "bias") if spec.has_bias else None,
      spec.kind == "norm",
    )
    for i, spec in enumerate(case.layers)
  ]


def build_coef(spec: CoefSpec) -> tuple[optax.ScalarOrSchedule, Callable]:
  """The coefficient as swr gets it, and its float64 value at a step."""
  if spec.kind == "const":
    (value,) = spec.values
    return value, lambda step: value
  first, second, steps = spec.values
  if spec.kind == "linear":
    return (
      optax.linear_schedule(first, second, steps),
      lambda step: first + (second - first) * min(step, steps) / steps,
    )
  return (
    optax.piecewise_constant_schedule(first, {steps: second}),
    lambda step: first * (second if step >= steps else 1.0),
  )


def classifier_mask(case: Case) -> np.ndarray:
  mask = np.zeros(len(case.layers), bool)
  if isinstance(case.classifier, int):
    mask[len(mask) - case.classifier :] = True
  elif case.classifier is not None:
    mask[list(case.classifier)] = True
  return mask


def build_swr(case: Case) -> tuple[optax.GradientTransformation, Callable]:
  """swr as the case configures it, and the float64 coefficients per step."""
  coef, coef_at = build_coef(case.coef)
  kwargs: dict[str, Any] = {"reset_norms_at": case.reset_norms_at}
  if case.explicit_layers:
    kwargs["layers"] = [(layer_name(i),) for i in range(len(case.layers))]
  mask = classifier_mask(case)
  if case.classifier is None:
    tx = optax_swr.swr(coef, **kwargs)
    return tx, lambda step: [coef_at(step)] * len(mask)
  classifier_coef, classifier_at = build_coef(case.classifier_coef)
  classifier = case.classifier
  if not isinstance(classifier, int):
    classifier = [layer_name(i) for i in classifier]
  tx = optax_swr.swr(
    coef, classifier=classifier, classifier_coef=classifier_coef, **kwargs
  )
  return tx, lambda step: [
    classifier_at(step) if is_head else coef_at(step) for is_head in mask
  ]


def reset_steps(case: Case) -> tuple[int, ...]:
  steps = case.reset_norms_at
  return (steps,) if isinstance(steps, int) else steps


# ------------------------------------------------------- float64 forward pass


def conv_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """A stride-1 'SAME' convolution of NHWC ``x`` with an HWIO ``kernel``."""
  size, (height, width) = kernel.shape[0], x.shape[1:3]
  pad = size // 2
  padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return sum(
    padded[:, i : i + height, j : j + width, :] @ kernel[i, j]
    for i in range(size)
    for j in range(size)
  )


def centered_and_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  centered = x - x.mean(-1, keepdims=True)
  return centered, np.sqrt((centered**2).mean(-1, keepdims=True))


def layer_norm(x: np.ndarray) -> np.ndarray:
  """LayerNorm over channels without epsilon: exactly scale invariant.

  A row with zero variance (one channel, or all-equal inputs) maps to 0.
  """
  centered, std = centered_and_std(x)
  return np.divide(centered, std, out=np.zeros_like(centered), where=std > 0)


def layer_norm_error(x: np.ndarray, error: np.ndarray) -> np.ndarray:
  """First-order bound on |LN(x + d) - LN(x)| for |d| <= error.

  LN's Jacobian is an orthogonal projection divided by the row's std, so a
  row moves by at most ||d||_2 / std. A zero-variance row can jump anywhere
  (``UNBOUNDED``), unless it has one channel (LN is then exactly 0) or d is
  0; past 10% of the std the first order is no bound either. Float64
  rounding of the centering counts as part of d.
  """
  if x.shape[-1] == 1:
    return np.zeros_like(x)
  _, std = centered_and_std(x)
  rounding = (x.shape[-1] + 4) * EPS64 * np.abs(x).max(-1, keepdims=True)
  with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
    row = np.sqrt((error**2).sum(-1, keepdims=True)) + rounding
    bound = np.where(row <= 0.1 * std, row / std, UNBOUNDED)
  bound = np.where(row > 0, bound, 0.0)
  return np.broadcast_to(np.minimum(bound, UNBOUNDED), x.shape)


def forward(
  case: Case, flat: Flat, x: np.ndarray, errors: Flat | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """The chain in float64, and a bound on its error.

  The bound covers float64 rounding and (to first order) params off by up
  to ``errors``. ReLU follows every dense/conv layer but the last; relu is
  1-Lipschitz, so the bound passes through it unchanged. A sum of n products
  rounds by at most (n + 2) eps times the sum of their magnitudes. Bounds
  are capped at ``UNBOUNDED`` (finite, so that 0 * bound stays 0).
  """
  blocks = real_blocks(case)
  get = lambda tree, key: tree[key][blocks[key]]
  errors = errors or {k: np.zeros_like(v) for k, v in flat.items()}
  error = np.zeros_like(x)
  for index, spec in enumerate(case.layers):
    key = (layer_name(index), weight_key(spec))
    weight, d_weight = get(flat, key), get(errors, key)
    big = np.abs(weight) + d_weight
    if spec.kind == "norm":
      normalized = layer_norm(x)
      error = layer_norm_error(x, error) * big + np.abs(normalized) * d_weight
      x = normalized * weight
      error += 2 * EPS64 * np.abs(x)
    else:
      apply = conv_same if spec.kind == "conv" else np.matmul
      terms = weight.size // weight.shape[-1]
      error = apply(error, big) + apply(
        np.abs(x), d_weight + (terms + 2) * EPS64 * np.abs(weight)
      )
      x = apply(x, weight)
    if spec.has_bias:
      bias = get(flat, (layer_name(index), "bias"))
      error += get(errors, (layer_name(index), "bias")) + 2 * EPS64 * (
        np.abs(x) + np.abs(bias)
      )
      x = x + bias
    if spec.kind != "norm" and index < len(case.layers) - 1:
      x = np.maximum(x, 0.0)
    error = np.minimum(error, UNBOUNDED)
  return x, error


def last_norm_before(case: Case, index: int) -> int:
  """The last normalization layer at or before ``index``; 0 if none."""
  return max(
    (
      i
      for i, spec in enumerate(case.layers[: index + 1])
      if spec.kind == "norm"
    ),
    default=0,
  )


def last_norm_layer(case: Case) -> int:
  """Index of the last normalization layer; 0 if there is none."""
  return last_norm_before(case, len(case.layers) - 1)


def output_scale(case: Case, layer_scales: Sequence[float]) -> float:
  """Theorem 1's output factor: the product of c from the last norm layer on."""
  return float(np.prod(layer_scales[last_norm_layer(case) :]))


# ------------------------------------------------------------------ tolerances


class Bounds(NamedTuple):
  """Float32 rounding bounds of one SWR step: norms relative, factors absolute.

  A float32 norm of k entries (k squares, a sum, a square root) is within
  (k + 2) u of the exact norm (Higham's bound for recursive summation; a tree
  reduction does better). swr rounds lam to float32 (a schedule is evaluated
  in float32: a few roundings), so c = lam (n / N - 1) + 1 errs by at most
  lam (n / N) (errors of n and N + 3 u) + 4 u (n / N + 1) + 2 u c. The
  4 u (n / N + 1) term matters where 1 - lam cancels (lam near 1, n = 0).
  C errs by the error of each c it multiplies times the other c, plus u C per
  product.
  """

  norms: np.ndarray  # relative error of the float32 norms
  layer_scales: np.ndarray  # absolute error of c
  cumulative_scales: np.ndarray  # absolute error of C


def step_bounds(
  case: Case, ref_norms, moved_norms, coefs, layer_scales
) -> Bounds:
  blocks, layers = real_blocks(case), ref_layers(case)
  sizes = [
    np.zeros(padded_shape(case, layer.weight))[blocks[layer.weight]].size
    for layer in layers
  ]
  norms = (np.asarray(sizes) + 2) * U32
  moved_norms, c = np.asarray(moved_norms), np.asarray(layer_scales)
  ratio = np.divide(
    ref_norms, moved_norms, out=np.zeros_like(c), where=moved_norms > 0
  )
  c_error = (
    np.asarray(coefs) * ratio * (2 * norms + 3 * U32)
    + 4 * U32 * (ratio + 1)
    + 2 * U32 * c
  )
  c_error[moved_norms == 0] = 0.0  # Both give exactly 1.
  products = product_lengths(case)
  big_c_error = product_errors(case, c, c_error) + products * U32 * np.abs(
    proportional_factors(case, c)
  )
  return Bounds(norms, c_error, big_c_error)


def product_lengths(case: Case) -> np.ndarray:
  """How many c each C multiplies (from the last norm layer up to it)."""
  return np.asarray(
    [i + 1 - last_norm_before(case, i) for i in range(len(case.layers))]
  )


def product_errors(case: Case, c, c_error) -> np.ndarray:
  """First-order error of every C from errors of its c: sum dc_j prod c_k."""
  errors = []
  for i, length in enumerate(product_lengths(case)):
    segment = np.asarray(c[i + 1 - length : i + 1], np.float64)
    others = [np.prod(np.delete(segment, j)) for j in range(length)]
    errors.append(np.dot(c_error[i + 1 - length : i + 1], others))
  return np.asarray(errors)


def leaf_error_bound(param, update, factor, factor_error) -> np.ndarray:
  """Elementwise bound on the rounding of p + ((f - 1) p + f u) in float32.

  The factor f errs by at most ``factor_error``, which moves the result by
  at most factor_error (|p| + |u|); each of the four float32 operations adds
  a rounding of at most u times its result.
  """
  p, u = np.abs(param), np.abs(update)
  return factor_error * (p + u) + 3 * U32 * (
    abs(factor) * (p + u) + p + abs(factor - 1) * p
  )


def assert_within(actual, expected, bound, message: str) -> None:
  """|actual - expected| <= bound elementwise, naming the worst entry."""
  actual = np.asarray(actual, np.float64)
  error = np.abs(actual - expected)
  expected, bound = (np.broadcast_to(v, error.shape) for v in (expected, bound))
  worst = np.unravel_index(np.argmax(error - bound), np.shape(error))
  assert np.all(error <= bound), (
    f"{message}, at {worst}: swr {actual[worst]!r}, reference "
    f"{expected[worst]!r}, bound {bound[worst]:.3g}"
  )


# ------------------------------------------------------------------- the run


class Step(NamedTuple):
  """What one eager step of adam + swr saw and produced."""

  params: Flat  # before the step (float32 values)
  updates: Flat  # Adam's updates (float32 values)
  new_params: Flat  # after swr
  state: optax_swr.SWRState


class Checked(NamedTuple):
  """The float64 reference of one step and the rounding bound around it."""

  moved: Flat  # p + u
  expected: Flat  # reference.swr_step(p + u)
  errors: Flat  # elementwise bound on |swr's params - expected|
  layer_scales: list[float]
  cumulative_scales: list[float]


def _taken_branch(pred, true_fun, false_fun, *operands, **kwargs):
  """``lax.cond`` as ``jax.disable_jit`` runs it: the taken branch, eagerly.

  Eager ``lax.cond`` (jit enabled) traces and compiles both branches at every
  call: swr's ``reset_norms_at`` branch closes over the drawn tree, so each
  step would compile anew. A traced predicate gets the real ``lax.cond``.
  """
  if isinstance(pred, jax.core.Tracer):
    return _LAX_COND(pred, true_fun, false_fun, *operands, **kwargs)
  return true_fun(*operands) if bool(pred) else false_fun(*operands)


_LAX_COND = jax.lax.cond


@jax.jit
def _adam_leaf(grad, state, lr):
  """optax.adam(lr) on one leaf: compiled once per padded leaf shape."""
  return optax.adam(lr).update(grad, state)


def run_swr(case: Case, params, grads) -> list[Step]:
  """adam then swr (as ``optax.chain`` runs them), eagerly.

  Nothing compiles per drawn tree: Adam is elementwise, so it runs leaf by
  leaf (one jitted program per padded leaf shape, the learning rate an
  argument); swr runs op by op, its eager ops compiled once per padded leaf
  shape, and its ``lax.cond`` (``reset_norms_at``) calls the taken branch, as
  under ``jax.disable_jit``. Eager jnp ops with jit enabled dispatch about 5
  times faster than under ``jax.disable_jit``, which runs each jnp function's
  own jitted body op by op.
  """
  tx, _ = build_swr(case)
  leaves, treedef = jax.tree.flatten(params)
  adam_states = [optax.adam(case.lr).init(leaf) for leaf in leaves]
  history = []
  with mock.patch.object(jax.lax, "cond", _taken_branch):
    swr_state = tx.init(params)
    for grad in grads:
      steps = [
        _adam_leaf(g, s, case.lr)
        for g, s in zip(treedef.flatten_up_to(grad), adam_states)
      ]
      adam_states = [s for _, s in steps]
      base = jax.tree.unflatten(treedef, [u for u, _ in steps])
      updates, swr_state = tx.update(base, swr_state, params)
      new_params = optax.apply_updates(params, updates)
      history.append(
        Step(
          reference.flatten(params),
          reference.flatten(base),
          reference.flatten(new_params),
          swr_state,
        )
      )
      params = new_params
  return history


def check_state(case, state, index, ref_norms, checked, moved_norms, bounds):
  """swr's state after one step against the float64 reference."""
  c = np.asarray(checked.layer_scales)
  big_c = np.asarray(checked.cumulative_scales)
  assert int(state.step_count) == index + 1
  where = f"step {index}"
  ref_norms = np.asarray(ref_norms)
  assert_within(
    state.reference_norms,
    ref_norms,
    bounds.norms * ref_norms,
    f"{where}, reference_norms",
  )
  assert_within(
    state.layer_scales, c, bounds.layer_scales, f"{where}, layer_scales"
  )
  assert_within(
    state.cumulative_scales,
    big_c,
    bounds.cumulative_scales,
    f"{where}, cumulative_scales",
  )
  moved_norms = np.asarray(moved_norms)
  assert_within(
    state.weight_norms,
    c * moved_norms,
    moved_norms * (bounds.layer_scales + c * (bounds.norms + U32)),
    f"{where}, weight_norms",
  )
  for i in range(len(big_c)):
    assert_within(
      state.input_scales[i],
      big_c[i - 1] if i else 1.0,
      bounds.cumulative_scales[i - 1] if i else 0.0,
      f"{where}, input_scales of {layer_name(i)}",
    )


def check_step(case, step: Step, index: int, ref_norms) -> Checked:
  """One swr step against ``reference.swr_step`` on the same float32 inputs."""
  layers = ref_layers(case)
  _, coefs_at = build_swr(case)
  moved = {k: step.params[k] + step.updates[k] for k in step.params}
  expected, c, big_c = reference.swr_step(
    moved, layers, ref_norms, coefs_at(index)
  )
  moved_norms = reference.weight_norms(moved, layers)
  bounds = step_bounds(case, ref_norms, moved_norms, coefs_at(index), c)

  factors = {}
  for i, layer in enumerate(layers):
    factors[layer.weight] = (c[i], bounds.layer_scales[i])
    if layer.bias is not None:
      factors[layer.bias] = (big_c[i], bounds.cumulative_scales[i])
  errors = {}
  for key, value in step.new_params.items():
    errors[key] = leaf_error_bound(
      step.params[key], step.updates[key], *factors.get(key, (1.0, 0.0))
    )
    assert_within(value, expected[key], errors[key], f"step {index}, {key}")
  checked = Checked(moved, expected, errors, c, big_c)
  new_ref_norms = reference.first_nonzero_norms(ref_norms, moved_norms)
  check_state(
    case, step.state, index, new_ref_norms, checked, moved_norms, bounds
  )
  return checked


def proportional_factors(case: Case, layer_scales) -> list[float]:
  """Theorem 1's bias factors: products of c, restarted at every norm layer."""
  factors, running = [], 1.0
  for spec, c in zip(case.layers, np.asarray(layer_scales, np.float64)):
    running = c if spec.kind == "norm" else running * c
    factors.append(running)
  return factors


def assert_proportional(case, moved, params, errors, layer_scales, x, name):
  """f(params) == C_out f(moved) within the rounding carried by ``forward``.

  ``params`` must be ``moved`` with weights times ``layer_scales`` and biases
  times ``proportional_factors``, each leaf up to ``errors``.
  """
  scale = output_scale(case, layer_scales)
  before, before_error = forward(case, moved, x)
  after, after_error = forward(case, params, x, errors)
  bound = 2 * (after_error + scale * before_error) + 2 * EPS64 * np.abs(after)
  assert_within(
    after,
    scale * before,
    np.where(bound < UNBOUNDED, bound, np.inf),
    f"Theorem 1, {name}",
  )


def check_theorem_1(case: Case, step: Step, checked: Checked, x) -> None:
  """One step scales the chain's output by C_out = prod c since the last norm.

  C_out is derived here from the layer scales. Checked for the float64
  reference (within its own rounding: a few eps per factor), and for swr's
  params with swr's own factors, so that it holds whatever c swr chose: its
  weights are c p' and its biases C p' up to the rounding of the update and
  of its float32 cumulative product (u per product).
  """
  layers = ref_layers(case)
  np.testing.assert_allclose(
    checked.cumulative_scales,
    proportional_factors(case, checked.layer_scales),
    rtol=1e-12,
  )
  reference_rounding = {
    k: 4 * (len(layers) + 2) * EPS64 * np.abs(v)
    for k, v in checked.expected.items()
  }
  assert_proportional(
    case,
    checked.moved,
    checked.expected,
    reference_rounding,
    checked.layer_scales,
    x,
    "float64 reference",
  )

  c = np.asarray(step.state.layer_scales, np.float64)
  big_c = proportional_factors(case, c)
  products = product_lengths(case)
  assert_within(
    step.state.cumulative_scales,
    big_c,
    products * U32 * np.abs(big_c),
    "swr's cumulative_scales",
  )
  errors = {}
  for key in step.new_params:
    errors[key] = leaf_error_bound(step.params[key], step.updates[key], 1.0, 0)
  for i, layer in enumerate(layers):
    errors[layer.weight] = leaf_error_bound(
      step.params[layer.weight], step.updates[layer.weight], c[i], 0.0
    )
    if layer.bias is not None:
      errors[layer.bias] = leaf_error_bound(
        step.params[layer.bias],
        step.updates[layer.bias],
        big_c[i],
        products[i] * U32 * abs(big_c[i]),
      )
  assert_proportional(case, checked.moved, step.new_params, errors, c, x, "swr")


def check_theorems_2_and_3(case, history, checked, ref_norm_history):
  """Norm bound (Theorem 2) and ratio toward its reference value (Theorem 3).

  Theorem 2, for coefficients that vary by step: with B the largest growth
  ||p + u||^2 - ||p||^2 of a step and lam the smallest coefficient since the
  reference norms were taken, ||W|| <= n_ref + sqrt(B) / lam (by induction,
  as in the paper). Both theorems hold for the exact params; swr's params
  differ from them by at most the rounding bound ``slack`` (summed over the
  steps for Theorem 2).
  """
  layers = ref_layers(case)
  norms = lambda flat: np.asarray(reference.weight_norms(flat, layers))
  _, coefs_at = build_swr(case)
  growth, smallest_coef, slack = np.zeros((3, len(layers)))
  for index, (step, step_checked) in enumerate(zip(history, checked)):
    if index in reset_steps(case):
      growth[:], slack[:] = 0.0, 0.0
    if index in reset_steps(case) or index == 0:
      smallest_coef[:] = 1.0
    ref_norms = np.asarray(ref_norm_history[index])
    moved, after = norms(step_checked.moved), norms(step.new_params)
    growth = np.maximum(growth, moved**2 - norms(step.params) ** 2)
    coefs = np.asarray(coefs_at(index), np.float64)
    smallest_coef = np.minimum(smallest_coef, coefs)
    step_slack = norms(step_checked.errors) + 8 * U32 * after
    slack += step_slack
    for i in np.flatnonzero(smallest_coef > 1e-30):
      bound = ref_norms[i] + np.sqrt(growth[i]) / smallest_coef[i]
      assert after[i] <= bound * (1 + 1e-12) + slack[i], (index, i, bound)
    for i in range(len(layers) - 1):
      pair = slice(i, i + 2)
      if coefs[i] != coefs[i + 1] or min(*ref_norms[pair], *moved[pair]) == 0:
        continue
      low, high = sorted(
        [ref_norms[i + 1] / ref_norms[i], moved[i + 1] / moved[i]]
      )
      with np.errstate(divide="ignore", invalid="ignore"):
        ratio = after[i + 1] / after[i]
        relative = step_slack[i] / after[i] + step_slack[i + 1] / after[i + 1]
      if not relative < 0.5:
        continue  # Rounding swamps the norms (a factor below 1e-7, say).
      assert low * (1 - relative - 1e-12) <= ratio, (index, i, ratio, low)
      assert ratio <= high * (1 + relative + 1e-12), (index, i, ratio, high)


def relative_norm_error(drift: Flat, flat: Flat, layers) -> np.ndarray:
  """||drift|| / ||flat|| of every layer's weight; 0 where the drift is 0."""
  with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
    drift_norms = np.asarray(reference.weight_norms(drift, layers))
    norms = np.asarray(reference.weight_norms(flat, layers))
    return np.where(drift_norms > 0, drift_norms / norms, 0.0)


def drifted_factor_errors(case, ref_norms, ref_error, moved, drift, coefs, c):
  """Bounds on |c_swr - c| and |C_swr - C| for params that drifted apart.

  c = lam n / N + 1 - lam moves by lam (n / N) (dn / n + dN / N) to first
  order, plus swr's own rounding (``Bounds``). Past 1% of drift in a norm the
  first order is no bound: ``UNBOUNDED``.
  """
  layers = ref_layers(case)
  moved_norms = np.asarray(reference.weight_norms(moved, layers))
  moved_error = relative_norm_error(drift, moved, layers)
  bounds = step_bounds(case, ref_norms, moved_norms, coefs, c)
  ratio = np.divide(
    ref_norms, moved_norms, out=np.zeros(len(layers)), where=moved_norms > 0
  )
  relative = moved_error + ref_error
  with np.errstate(invalid="ignore"):  # 0 * inf in the branch not taken.
    drifted = np.where(
      relative < 1e-2, np.asarray(coefs) * ratio * relative, UNBOUNDED
    )
  with np.errstate(over="ignore"):  # Capped at UNBOUNDED.
    big_c_error = product_errors(case, c, drifted) + bounds.cumulative_scales
  return (
    np.minimum(drifted + bounds.layer_scales, UNBOUNDED),
    np.minimum(big_c_error, UNBOUNDED),
  )


def check_trajectory(case, params, grads, history) -> None:
  """The float32 run follows ``reference.train``, float64 Adam + SWR.

  The runs drift apart by rounding, so the check carries a first-order bound
  on the drift of every entry: float32 Adam's updates differ from float64
  ones by up to ADAM_ATOL * lr; a drifted p + u moves the norms, hence every
  factor (``drifted_factor_errors``); a step maps a drift d to |f| d +
  |df| |p + u| plus its own rounding. Each entry must stay within twice that
  bound (twice: first-order terms only).
  """
  layers = ref_layers(case)
  _, coefs_at = build_swr(case)
  flat_grads = [reference.flatten(g) for g in grads]
  ref_history = reference.train(
    reference.flatten(params),
    layers,
    lambda p, t: flat_grads[t],
    case.steps,
    coefs_at,
    lr=case.lr,
    reset_norms_at=reset_steps(case),
  )
  adam = reference.Adam(case.lr)  # The grads do not depend on the params.
  ref_params = reference.flatten(params)
  carried = {k: np.zeros_like(v) for k, v in ref_params.items()}
  ref_norms = reference.weight_norms(ref_params, layers)
  ref_error = np.zeros(len(layers))
  for index, (step, expected) in enumerate(zip(history, ref_history)):
    if index in reset_steps(case):
      ref_norms = reference.weight_norms(ref_params, layers)
      ref_error = relative_norm_error(carried, ref_params, layers)
    updates = adam.updates(flat_grads[index])
    moved = {k: ref_params[k] + updates[k] for k in ref_params}
    drift = {k: carried[k] + ADAM_ATOL * case.lr for k in carried}
    _, c, big_c = reference.swr_step(moved, layers, ref_norms, coefs_at(index))
    c_error, big_c_error = drifted_factor_errors(
      case, ref_norms, ref_error, moved, drift, coefs_at(index), c
    )
    adopted = reference.first_nonzero_norms(
      ref_norms, reference.weight_norms(moved, layers)
    )
    # A zero-initialised layer's reference is its first non-zero norm, which
    # the float32 run takes of its own, drifted p + u.
    ref_error = np.where(
      np.asarray(adopted) != np.asarray(ref_norms),
      relative_norm_error(drift, moved, layers),
      ref_error,
    )
    ref_norms = adopted
    factors = {}
    for i, layer in enumerate(layers):
      factors[layer.weight] = (c[i], c_error[i])
      if layer.bias is not None:
        factors[layer.bias] = (big_c[i], big_c_error[i])
    for key, value in step.new_params.items():
      factor, factor_error = factors.get(key, (1.0, 0.0))
      spread = np.abs(moved[key]) + drift[key]
      with np.errstate(over="ignore"):  # Capped at UNBOUNDED.
        carried[key] = np.minimum(
          abs(factor) * drift[key]
          + factor_error * spread
          + leaf_error_bound(
            np.abs(ref_params[key]) + carried[key],
            np.abs(updates[key]),
            factor,
            0.0,
          ),
          UNBOUNDED,
        )
      assert_within(
        value,
        expected[key],
        2 * carried[key],
        f"trajectory step {index}, {key}",
      )
    ref_params = expected


@pytest.mark.filterwarnings("ignore::optax_swr.LowPrecisionWarning")
@SETTINGS
@given(case=cases())
def test_random_chains_match_the_reference_and_the_theorems(case: Case):
  rng = np.random.default_rng(case.seed)
  params = init_params(case, rng)
  grads = draw_grads(case, rng)
  x = rng.normal(size=(BATCH, case.spatial, case.spatial, case.in_width))
  history = run_swr(case, params, grads)

  layers = ref_layers(case)
  ref_norms = reference.weight_norms(reference.flatten(params), layers)
  ref_norm_history, checked = [], []
  for index, step in enumerate(history):
    if index in reset_steps(case):
      ref_norms = reference.weight_norms(step.params, layers)
    ref_norm_history.append(ref_norms)
    checked.append(check_step(case, step, index, ref_norms))
    check_theorem_1(case, step, checked[-1], x)
    ref_norms = reference.first_nonzero_norms(
      ref_norms, reference.weight_norms(checked[-1].moved, layers)
    )
  check_theorems_2_and_3(case, history, checked, ref_norm_history)
  check_trajectory(case, params, grads, history)


def _extreme_chain(rng: np.random.Generator) -> dict:
  """Three dense layers at 1e-20, 1e20 and 1: squares out of float32 range."""
  shapes = [(3, 4), (4, 2), (2, 2)]
  return {
    f"Dense_{i}": {
      "kernel": jnp.asarray(magnitude * rng.normal(size=shape), jnp.float32),
      "bias": jnp.asarray(rng.normal(size=shape[1]), jnp.float32),
    }
    for i, (shape, magnitude) in enumerate(zip(shapes, [1e-20, 1e20, 1.0]))
  }


@pytest.mark.parametrize("deferred", [False, True], ids=["chain", "deferred"])
def test_weights_whose_squares_leave_float32_range_are_rescaled(deferred):
  """Entries of 1e-20 and 1e20 get the float64 reference's factors.

  Their float32 squares are 0 and inf: a plain sqrt(sum(w**2)) gives norm 0
  or inf, which swr reads as "leave the layer unscaled" (c = 1, where the
  reference has c near 0.75). swr scales each weight by a power of two before
  squaring. Four steps of random updates of 10% of each weight, with a reset
  of the reference norms at step 2, against ``reference.swr_step``.
  """
  rng = np.random.default_rng(0)
  params = _extreme_chain(rng)
  names = list(params)
  layers = [reference.RefLayer((n, "kernel"), (n, "bias")) for n in names]
  tx = optax_swr.swr(coef=0.5, reset_norms_at=[2], deferred=deferred)
  state = tx.init(params)
  ref_params = reference.flatten(params)
  ref_norms = reference.weight_norms(ref_params, layers)
  np.testing.assert_allclose(state.reference_norms, ref_norms, rtol=1e-6)
  for step in range(4):
    updates = jax.tree.map(
      lambda p: jnp.asarray(0.1 * p * rng.normal(size=p.shape), p.dtype),
      params,
    )
    flat_updates = reference.flatten(updates)
    if step == 2:
      ref_norms = reference.weight_norms(ref_params, layers)
    ref_params, c, _ = reference.swr_step(
      {k: v + flat_updates[k] for k, v in ref_params.items()},
      layers,
      ref_norms,
      [0.5] * len(layers),
    )
    scaled, state = tx.update(updates, state, params)
    params = optax.apply_updates(params, scaled)
    if deferred:
      params, state = optax_swr.rescale_params(params, state)
    np.testing.assert_allclose(state.layer_scales, c, rtol=1e-5)
    np.testing.assert_allclose(state.reference_norms, ref_norms, rtol=1e-5)
    for key, value in reference.flatten(params).items():
      np.testing.assert_allclose(value, ref_params[key], rtol=1e-5, err_msg=key)


def test_stacked_weights_whose_squares_leave_float32_range_are_rescaled():
  """The slices of one stacked kernel, at 1e-20 and 1e20, each get their c."""
  kernel = jnp.stack([jnp.full((2, 2), 1e-20), jnp.full((2, 2), 1e20)])
  params = {"blocks": {"kernel": kernel}}
  layers = [optax_swr.Layer(("blocks", "kernel"), index=i) for i in (0, 1)]
  tx = optax_swr.swr(coef=0.5, layers=layers)
  state = tx.init(params)
  np.testing.assert_allclose(state.reference_norms, [2e-20, 2e20], rtol=1e-6)
  updates, state = tx.update(params, state, params)  # u = p: norm doubles.
  np.testing.assert_allclose(state.layer_scales, [0.75, 0.75], rtol=1e-6)
  np.testing.assert_allclose(
    optax.apply_updates(params, updates)["blocks"]["kernel"],
    1.5 * kernel,
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    optax_swr.metrics.layer_norms(params, layers), [2e-20, 2e20], rtol=1e-6
  )
