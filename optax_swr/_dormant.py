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

"""Dormant units (Sokar et al., 2023): the one test of which units are dormant.

``metrics.dormant_fraction`` counts them and ``baselines.redo`` resets them;
both read a layer's activations through this module, so the two agree on
what a dormant unit is and on which activations they accept.
``baselines.continual_backprop`` reads the same mean absolute activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp


def check_activation_ranks(activations: Sequence[Any], caller: str) -> None:
  """Each layer's activations must have a batch and a units axis."""
  for index, h in enumerate(activations):
    if jnp.ndim(h) < 2:
      raise ValueError(
        f"{caller}: `activations[{index}]` has shape "
        f"{jnp.shape(h)}; each layer's activations must be [batch, ..., "
        "units] (at least 2 axes). Add a units axis with h[:, None]."
      )


def mean_abs(h: jax.Array) -> jax.Array:
  """Each unit's mean absolute activation ``[units]``, in float32 or wider.

  The mean runs over the batch and every axis before the units (the pixels
  of a conv layer's channels-last output).
  """
  h = jnp.asarray(h)
  dtype = jnp.promote_types(h.dtype, jnp.float32)
  return jnp.mean(jnp.abs(h.astype(dtype)), axis=tuple(range(h.ndim - 1)))


def dormant_units(h: jax.Array, tau: float) -> jax.Array:
  """A boolean mask ``[units]``: the units of ``h`` that are tau-dormant.

  A unit is dormant when its mean absolute activation (over the batch and
  every axis before the units) is at most ``tau`` times the layer's mean over
  units; a layer whose activations are all zero has every unit dormant.
  """
  unit_means = mean_abs(h)
  layer_mean = jnp.mean(unit_means)
  safe_mean = jnp.where(layer_mean > 0, layer_mean, 1.0)
  return unit_means / safe_mean <= tau
