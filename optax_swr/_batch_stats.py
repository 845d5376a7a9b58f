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

"""BatchNorm running statistics that follow the rescaled layers.

An SWR step scales the output of the layer feeding a BatchNorm by some s > 0.
In training mode BatchNorm normalizes with the batch's own statistics and does
not care, but in eval mode it uses running statistics that were measured on
the old scale. Rescaling them (mean by s, variance by s^2) makes eval mode see
the network SWR actually produced.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_swr import _layers

_STAT_POWERS = {"mean": 1, "var": 2}


def sync_batch_stats(
  batch_stats: Any,
  opt_state: Any,
  layers: Sequence[_layers.Layer | _layers.Path | str],
) -> Any:
  """Rescales BatchNorm running statistics to match the last SWR step.

  Call it after every optimizer update, on the statistics of the forward pass
  of that step. Each BatchNorm's ``mean`` is multiplied by the scale s of its
  input in the last SWR step and its ``var`` by s^2 (s is recorded in
  ``SWRState.input_scales``).

  Args:
    batch_stats: the running statistics, keyed like the params: Linen's
      ``variables["batch_stats"]`` (``{"BatchNorm_0": {"mean", "var"}}``) or
      an ``nnx.State`` of ``nnx.BatchStat``.
    opt_state: the optimizer state holding the :class:`SWRState`.
    layers: the layers ``swr`` rescales, in its order: the sequence passed
      as ``swr(layers=...)``, or, where ``swr`` inferred them or got a
      function, ``optax_swr.find_layers(params, layers)``.

  Returns:
    ``batch_stats`` with every ``mean`` and ``var`` rescaled.

  Raises:
    ValueError: if ``opt_state`` holds no (or several) SWR states, ``layers``
      does not match it, or a statistic belongs to a layer that is not a
      normalization layer of ``layers``.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {
    ...     "conv": {"kernel": jnp.ones((2, 2))},
    ...     "bn": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
    ... }
    >>> layers = ["conv", "bn"]
    >>> tx = optax_swr.swr(coef=1.0, layers=layers)
    >>> grads = {"conv": {"kernel": jnp.ones((2, 2))},
    ...          "bn": {"scale": jnp.zeros(2), "bias": jnp.zeros(2)}}
    >>> _, opt_state = tx.update(grads, tx.init(params), params)
    >>> stats = {"bn": {"mean": jnp.ones(2), "var": jnp.ones(2)}}
    >>> synced = optax_swr.sync_batch_stats(stats, opt_state, layers)
    >>> print(synced["bn"]["mean"], synced["bn"]["var"])
    [0.5 0.5] [0.25 0.25]
  """
  equinox = sys.modules.get("equinox")  # an eqx.nn.State needs it imported
  if equinox is not None and isinstance(batch_stats, equinox.nn.State):
    raise ValueError(
      "sync_batch_stats: `batch_stats` is an eqx.nn.State, which is keyed "
      "by StateIndex, not like the params. Use "
      "optax_swr.sync_equinox_batch_stats(model, state, opt_state, layers), "
      "which finds each eqx.nn.BatchNorm of the model."
    )
  norms = NormInputScales.from_opt_state(opt_state, layers, "sync_batch_stats")
  leaves, treedef = jax.tree.flatten(batch_stats)
  rescaled = []
  for path, leaf in zip(_layers.leaf_paths(batch_stats), leaves):
    *owner, stat = path
    if not norms.is_norm(tuple(owner)):
      raise ValueError(
        f"sync_batch_stats: the statistic {path!r} belongs to "
        f"{tuple(owner)!r}, which is not a normalization layer of `layers` "
        f"({norms.paths()}). Pass the "
        "statistics keyed like the params, and the layers swr rescales "
        "with every BatchNorm among them."
      )
    if stat not in _STAT_POWERS:
      raise ValueError(
        f"sync_batch_stats: unknown statistic {path!r}; expected 'mean' "
        "or 'var' leaves under each BatchNorm."
      )
    rescaled.append(norms.rescale(tuple(owner), leaf, _STAT_POWERS[stat]))
  return jax.tree.unflatten(treedef, rescaled)


@dataclasses.dataclass(frozen=True)
class NormInputScales:
  """The input scale of every normalization layer in the last SWR step.

  Shared by the ``sync_*batch_stats`` functions: they differ only in where
  the statistics live and how they are found.

  Attributes:
    scales: ``SWRState.input_scales``, one per entry of ``layers``.
    entries: the validated entries of ``layers``.
    slices_of: for each layer path, the indices of its entries (one, or one
      per slice of a stack, which shares its path).
  """

  scales: jax.Array
  entries: tuple[Any, ...]
  slices_of: dict[_layers.Path, list[int]]

  @classmethod
  def from_opt_state(
    cls, opt_state: Any, layers: Any, caller: str
  ) -> NormInputScales:
    """Reads the scales, checking ``layers`` against them for ``caller``."""
    scales = _input_scales(opt_state, caller)
    entries = _layer_entries(layers, len(scales), caller)
    slices_of: dict[_layers.Path, list[int]] = {}
    for i, entry in enumerate(entries):
      slices_of.setdefault(_layers.entry_path(entry), []).append(i)
    return cls(scales, entries, slices_of)

  def paths(self) -> list[_layers.Path]:
    """Every layer path, for error messages."""
    return list(self.slices_of)

  def is_norm(self, path: _layers.Path) -> bool:
    """Whether ``path`` is a normalization layer (or a stack of them)."""
    indices = self.slices_of.get(path, [])
    return bool(indices) and not any(
      isinstance(self.entries[i], _layers.Layer) and not self.entries[i].norm
      for i in indices
    )

  def rescale(self, path: _layers.Path, stat: Any, power: int) -> Any:
    """``stat`` of the norm layer at ``path`` times its input scale**power."""
    factor = self._stat_scale(self.slices_of[path], stat) ** power
    return (stat * factor).astype(stat.dtype)

  def _stat_scale(self, indices: list[int], leaf: Any) -> jax.Array:
    """The input scale of one BatchNorm, or per slice of a stacked one."""
    slices = [
      self.entries[i].index
      if isinstance(self.entries[i], _layers.Layer)
      else ()
      for i in indices
    ]
    if slices == [()]:
      return self.scales[indices[0]]
    shape = jnp.shape(leaf)[: len(slices[0])]
    where = tuple(np.array(axis) for axis in zip(*slices))
    stacked = (
      jnp.ones(shape, self.scales.dtype)
      .at[where]
      .set(self.scales[np.array(indices)])
    )
    return stacked.reshape(shape + (1,) * (jnp.ndim(leaf) - len(shape)))


def _layer_entries(
  layers: Any, num_layers: int, caller: str
) -> tuple[Any, ...]:
  if layers is None or callable(layers) and not isinstance(layers, Sequence):
    raise ValueError(
      f"{caller}: `layers` must be the sequence of layers swr "
      "rescales; where swr got layers=None or a function, pass "
      "optax_swr.find_layers(params, layers) here."
    )
  entries = _layers.normalize_layers_arg(layers, caller=caller)
  assert isinstance(entries, (tuple, _layers.Layers))
  entries = tuple(entries)
  if len(entries) != num_layers:
    raise ValueError(
      f"{caller}: `layers` has {len(entries)} layers but the SWR "
      f"state has {num_layers}; pass the layers swr was built with "
      "(optax_swr.find_layers(params, layers) lists them)."
    )
  return entries


def _input_scales(opt_state: Any, caller: str) -> jax.Array:
  try:
    scales = optax.tree.get(opt_state, "input_scales")
  except KeyError as error:
    raise ValueError(
      f"{caller}: `opt_state` holds several SWR states; pass the "
      "state of the one that rescales the BatchNorm layers."
    ) from error
  if scales is None:
    raise ValueError(
      f"{caller}: `opt_state` holds no SWRState. Pass the state of "
      "a transformation that contains optax_swr.swr(...)."
    )
  # nnx.Optimizer wraps the array in an OptState variable.
  return jax.tree.leaves(scales)[0]
