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

from typing import Any

import jax
import optax

from optax_swr import _layers
from optax_swr import _swr

_STAT_POWERS = {"mean": 1, "var": 2}


def sync_batch_stats(batch_stats: Any, opt_state: Any) -> Any:
  """Rescales BatchNorm running statistics to match the last SWR step.

  Call it after every optimizer update, on the statistics of the forward pass
  of that step. Each BatchNorm's ``mean`` is multiplied by the scale s of its
  input in the last SWR step and its ``var`` by s^2 (s is recorded in
  ``SWRState.norm_input_scales``).

  Args:
    batch_stats: the running statistics, keyed like the params: Linen's
      ``variables["batch_stats"]`` (``{"BatchNorm_0": {"mean", "var"}}``) or
      an ``nnx.State`` of ``nnx.BatchStat``.
    opt_state: the optimizer state holding the :class:`SWRState`.

  Returns:
    ``batch_stats`` with every ``mean`` and ``var`` rescaled.

  Raises:
    ValueError: if ``opt_state`` holds no (or several) SWR states, or a
      statistic belongs to a layer that SWR does not rescale as a
      normalization layer.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import optax_swr
    >>> params = {
    ...     "conv": {"kernel": jnp.ones((2, 2))},
    ...     "bn": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
    ... }
    >>> tx = optax_swr.swr(coef=1.0, layers=["conv", "bn"])
    >>> grads = {"conv": {"kernel": jnp.ones((2, 2))},
    ...          "bn": {"scale": jnp.zeros(2), "bias": jnp.zeros(2)}}
    >>> _, opt_state = tx.update(grads, tx.init(params), params)
    >>> stats = {"bn": {"mean": jnp.ones(2), "var": jnp.ones(2)}}
    >>> synced = optax_swr.sync_batch_stats(stats, opt_state)
    >>> print(synced["bn"]["mean"], synced["bn"]["var"])
    [0.5 0.5] [0.25 0.25]
  """
  scales = _norm_input_scales(opt_state)
  leaves, treedef = jax.tree.flatten(batch_stats)
  rescaled = []
  for path, leaf in zip(_layers.leaf_paths(batch_stats), leaves):
    *layer, stat = path
    key = _swr.layer_key(tuple(layer))
    if key not in scales:
      raise ValueError(
        f"sync_batch_stats: the statistic {path!r} belongs to {key!r}, "
        "which SWR does not rescale as a normalization layer (one with a "
        f"`scale` param); it knows {sorted(scales)}. Pass the statistics "
        "keyed like the params, and list every BatchNorm in swr(layers=...)."
      )
    if stat not in _STAT_POWERS:
      raise ValueError(
        f"sync_batch_stats: unknown statistic {path!r}; expected 'mean' "
        "or 'var' leaves under each BatchNorm."
      )
    factor = jax.tree.leaves(scales[key])[0] ** _STAT_POWERS[stat]
    rescaled.append((leaf * factor).astype(leaf.dtype))
  return jax.tree.unflatten(treedef, rescaled)


def sync_nnx_batch_stats(model: Any, opt_state: Any) -> None:
  """Rescales the ``nnx.BatchStat`` variables of ``model`` in place.

  The NNX form of :func:`sync_batch_stats`: call it after
  ``optimizer.update(model, grads)``.

  Args:
    model: the ``nnx.Module`` whose BatchNorm statistics to rescale.
    opt_state: the optimizer state, e.g. ``optimizer.opt_state``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from flax import nnx
    >>> import optax_swr
    >>> class Net(nnx.Module):
    ...   def __init__(self, rngs):
    ...     self.fc = nnx.Linear(3, 4, rngs=rngs)
    ...     self.bn = nnx.BatchNorm(4, rngs=rngs)
    ...   def __call__(self, x):
    ...     return self.bn(self.fc(x))
    >>> model = Net(nnx.Rngs(0))
    >>> tx = optax.chain(optax.sgd(0.1), optax_swr.swr(0.5, layers=["fc", "bn"]))
    >>> optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    >>> _ = model(jnp.arange(6.0).reshape(2, 3))  # updates the running stats
    >>> grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
    >>> _ = optimizer.update(model, grads)
    >>> var_before = model.bn.var[...]
    >>> optax_swr.sync_nnx_batch_stats(model, optimizer.opt_state)
    >>> s = optax.tree.get(optimizer.opt_state, "norm_input_scales")["bn"]
    >>> bool(jnp.allclose(model.bn.var[...], var_before * s[...] ** 2))
    True
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top

  stats = nnx.state(model, nnx.BatchStat)
  nnx.update(model, sync_batch_stats(stats, opt_state))


def _norm_input_scales(opt_state: Any) -> dict[str, Any]:
  try:
    scales = optax.tree.get(opt_state, "norm_input_scales")
  except KeyError as error:
    raise ValueError(
      "sync_batch_stats: `opt_state` holds several SWR states; pass the "
      "state of the one that rescales the BatchNorm layers."
    ) from error
  if scales is None:
    raise ValueError(
      "sync_batch_stats: `opt_state` holds no SWRState. Pass the state of "
      "a transformation that contains optax_swr.swr(...)."
    )
  return scales
