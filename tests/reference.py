"""An independent float64 reference of Adam + SWR, written from PAPER.md.

Nothing here imports optax_swr: params are flat dicts {path: np.ndarray} and
the SWR step is the paper's rule written out literally, layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np


class RefLayer(NamedTuple):
  """A layer of the reference: paths of its weight and bias leaves."""

  weight: tuple
  bias: tuple | None
  is_norm: bool = False


def flatten(tree) -> dict[tuple, np.ndarray]:
  """{path: float64 array} for a nested dict of arrays."""
  flat = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat[tuple(k.key for k in key_path)] = np.asarray(leaf, np.float64)
  return flat


def dense_layers(names: Sequence[str]) -> list[RefLayer]:
  """RefLayers for dict layers with `kernel` / `bias` (or `scale` / `bias`)."""
  layers = []
  for name in names:
    is_norm = "norm" in name.lower()
    weight = (name, "scale" if is_norm else "kernel")
    layers.append(RefLayer(weight, (name, "bias"), is_norm))
  return layers


def swr_step(
  params: dict[tuple, np.ndarray],
  layers: Sequence[RefLayer],
  reference_norms: Sequence[float],
  coefs: Sequence[float],
) -> tuple[dict[tuple, np.ndarray], list[float], list[float]]:
  """One SWR step on already-updated params; returns (params, c, C)."""
  params = dict(params)
  layer_scales, cumulative_scales = [], []
  running = 1.0
  for layer, n0, lam in zip(layers, reference_norms, coefs):
    norm = float(np.sqrt(np.sum(params[layer.weight] ** 2)))
    # A zero-initialised layer (n0 = 0) is left alone until it moves.
    if norm == 0.0 or n0 == 0.0:
      c = 1.0
    else:
      c = (lam * n0 + (1.0 - lam) * norm) / norm
    running = c if layer.is_norm else running * c
    params[layer.weight] = c * params[layer.weight]
    if layer.bias is not None:
      params[layer.bias] = running * params[layer.bias]
    layer_scales.append(c)
    cumulative_scales.append(running)
  return params, layer_scales, cumulative_scales


def weight_norms(params, layers) -> list[float]:
  return [float(np.sqrt(np.sum(params[l.weight] ** 2))) for l in layers]


def first_nonzero_norms(reference_norms, norms) -> list[float]:
  """A reference norm of 0 becomes the layer's first non-zero, finite norm."""
  return [
    norm if n0 == 0.0 and 0.0 < norm < np.inf else n0
    for n0, norm in zip(reference_norms, norms)
  ]


class Adam:
  """Adam exactly as optax.adam defines it (eps outside the square root)."""

  def __init__(self, lr: float, b1=0.9, b2=0.999, eps=1e-8):
    self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
    self.m, self.v, self.t = {}, {}, 0

  def updates(self, grads: dict[tuple, np.ndarray]) -> dict[tuple, np.ndarray]:
    self.t += 1
    out = {}
    for k, g in grads.items():
      self.m[k] = self.b1 * self.m.get(k, 0.0) + (1 - self.b1) * g
      self.v[k] = self.b2 * self.v.get(k, 0.0) + (1 - self.b2) * g * g
      m_hat = self.m[k] / (1 - self.b1**self.t)
      v_hat = self.v[k] / (1 - self.b2**self.t)
      out[k] = -self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
    return out


def train(
  params: dict[tuple, np.ndarray],
  layers: Sequence[RefLayer],
  grad_fn: Callable[[dict, int], dict],
  steps: int,
  coefs_at: Callable[[int], Sequence[float]],
  lr: float = 1e-2,
  reset_norms_at: Sequence[int] = (),
  reference_params: dict | None = None,
) -> list[dict[tuple, np.ndarray]]:
  """Adam + SWR for `steps` steps; returns the params after every step."""
  adam = Adam(lr)
  reference_norms = weight_norms(reference_params or params, layers)
  history = []
  for step in range(steps):
    if step in reset_norms_at:
      reference_norms = weight_norms(params, layers)
    updates = adam.updates(grad_fn(params, step))
    moved = {k: params[k] + updates[k] for k in params}
    params, _, _ = swr_step(moved, layers, reference_norms, coefs_at(step))
    reference_norms = first_nonzero_norms(
      reference_norms, weight_norms(moved, layers)
    )
    history.append(params)
  return history
