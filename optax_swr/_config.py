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

"""``swr``'s arguments, validated once, and the checks shared with baselines."""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import numbers
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from optax_swr import _layers

Path = _layers.Path

_COEF_HINT = (
  " (0 does nothing, 1 pins every layer at its reference norm); got {value}."
  " The paper uses 1e-4 to 1."
)


def check_coef(
  caller: str,
  name: str,
  value: Any,
  *,
  upper: float | None = 1.0,
  schedule: bool = True,
) -> None:
  """Raises ValueError unless ``value`` is a number in [0, ``upper``].

  Args:
    caller: the public function named in the message.
    name: the argument's name.
    value: its value; a traced one (``inject_hyperparams`` under ``jit``)
      passes, since it can't be checked.
    upper: the largest allowed value; ``None`` for no bound.
    schedule: whether a callable (an optax schedule) is allowed.
  """
  if schedule and callable(value):
    return
  kind = "a float in [0, 1] or an optax schedule" if schedule else "a float"
  if isinstance(value, bool) or not isinstance(
    value, (numbers.Real, np.ndarray, np.generic, jax.Array)
  ):
    raise ValueError(f"{caller}: `{name}` must be {kind}; got {value!r}.")
  shape = () if isinstance(value, numbers.Real) else np.shape(value)
  if shape:
    raise ValueError(
      f"{caller}: `{name}` must be a scalar; got an array of shape "
      f"{shape}."
      + (" Use `classifier_coef` for a second coefficient." if schedule else "")
    )
  try:
    number = float(value)
  except jax.errors.ConcretizationTypeError:
    return
  if not (number >= 0 and (upper is None or number <= upper)):  # Also NaN.
    if upper is None:
      raise ValueError(f"{caller}: `{name}` must be >= 0; got {value}.")
    if schedule:
      hint = _COEF_HINT.format(value=number)
      raise ValueError(f"{caller}: `{name}` must be in [0, 1]{hint}")
    raise ValueError(
      f"{caller}: `{name}` must be in [0, {upper:g}]; got {value}."
    )


def check_same_structure(
  caller: str, names: tuple[str, str], tree: Any, other: Any, fix: str
) -> None:
  """Raises ValueError, naming both arguments, where two trees differ."""
  # Any: jaxlib ships no stub for PyTreeDef, so mypy can't see its __eq__.
  structure: Any = jax.tree.structure(tree)
  if structure != jax.tree.structure(other):
    raise ValueError(
      f"{caller}: `{names[0]}` and `{names[1]}` have different tree "
      f"structures; {fix}\n{names[0]}: {structure}\n"
      f"{names[1]}: {jax.tree.structure(other)}"
    )


@dataclasses.dataclass(frozen=True)
class Config:
  """``swr``'s arguments, validated.

  Attributes:
    coef: the coefficient of every layer without its own.
    layers: the layers, as :func:`_layers.normalize_layers_arg` returns them;
      a traced :class:`Layers` already carries the classifier's coefficient.
    classifier: the classifier layers (last k, or paths), or None.
    classifier_coef: their coefficient.
    reset_steps: the step counts at which the reference norms are reset, or
      None.
  """

  coef: optax.ScalarOrSchedule
  layers: Any
  classifier: int | tuple[Path, ...] | None
  classifier_coef: optax.ScalarOrSchedule | None
  reset_steps: np.ndarray | None


class Resolved(NamedTuple):
  """The layers of one params tree, each with its coefficient.

  Attributes:
    layers: the resolved layers in forward order; every ``layer.coef`` set.
    projection: the function-keeping projection of a traced network, None
      for a chain.
  """

  layers: tuple[_layers.ResolvedLayer, ...]
  projection: _layers.Projection | None


def make_config(
  coef: optax.ScalarOrSchedule,
  layers: _layers.LayersArg,
  classifier: int | Sequence[Path | str] | None,
  classifier_coef: optax.ScalarOrSchedule | None,
  reset_norms_at: Sequence[int] | int | jax.Array,
) -> Config:
  """Validates ``swr``'s arguments; raises ValueError naming the bad one."""
  check_coef("swr", "coef", coef)
  if classifier_coef is not None:
    check_coef("swr", "classifier_coef", classifier_coef)
  spec = _layers.normalize_layers_arg(layers)
  if isinstance(spec, tuple):
    _layers.check_trace_kept(spec, "swr")
  if isinstance(spec, (tuple, _layers.Layers)):
    for entry in spec:
      if isinstance(entry, _layers.Layer) and entry.coef is not None:
        check_coef("swr", f"Layer({entry.name!r}).coef", entry.coef)
  classifier = _normalize_classifier(classifier, classifier_coef)
  if isinstance(spec, _layers.Layers):
    # Its projection depends on which layers have coefficient 0: computed
    # once, here, for the coefficients every update will use.
    spec = _layers.assign_coefs(
      spec, _coefs(spec.layers, coef, classifier, classifier_coef)
    )
  return Config(
    coef=coef,
    layers=spec,
    classifier=classifier,
    classifier_coef=classifier_coef,
    reset_steps=_normalize_reset_steps(reset_norms_at),
  )


def resolve(config: Config, params: Any) -> Resolved:
  """The layers of ``params``, their coefficients and their projection."""
  spec = config.layers
  if callable(spec) and _layers.leaf_paths(params):
    spec = _layers.call_layers_fn(spec, params, "swr")
  found = _layers.resolve(params, spec)
  for item in found:
    if item.layer.coef is not None:  # Also from a `layers` function.
      check_coef("swr", f"Layer({item.layer.name!r}).coef", item.layer.coef)
  if not found:  # An empty tree (also optax.tree_map_params' placeholder).
    return Resolved((), None)
  coefs = _coefs(
    [item.layer for item in found],
    config.coef,
    config.classifier,
    config.classifier_coef,
  )
  found = tuple(
    item._replace(layer=dataclasses.replace(item.layer, coef=coef))
    for item, coef in zip(found, coefs)
  )
  if not isinstance(spec, _layers.Layers) or spec.graph is None:
    return Resolved(found, None)
  if spec is not config.layers:  # A `layers` function's value.
    spec = _layers.assign_coefs(spec, coefs)
  return Resolved(found, spec.projection)


def _coefs(
  layers: Sequence[_layers.Layer],
  coef: Any,
  classifier: int | tuple[Path, ...] | None,
  classifier_coef: Any,
) -> list[Any]:
  """Each layer's coefficient: its own, the classifier's, or ``coef``."""
  is_classifier = _classifier_mask(classifier, [layer.path for layer in layers])
  return [
    layer.coef
    if layer.coef is not None
    else classifier_coef
    if is_classifier[index]
    else coef
    for index, layer in enumerate(layers)
  ]


def _normalize_classifier(
  classifier: Any, classifier_coef: Any
) -> int | tuple[Path, ...] | None:
  if classifier is not None and classifier_coef is None:
    raise ValueError(
      "swr: `classifier` is set but `classifier_coef` is not, so the "
      "classifier layers would use `coef` like every other layer. Pass "
      "classifier_coef=..., or drop `classifier`."
    )
  if classifier is None:
    if classifier_coef is not None:
      raise ValueError(
        "swr: `classifier_coef` is set but `classifier` is not, so no layer "
        "would use it. Pass classifier=k (the last k layers) or a sequence "
        "of layer paths."
      )
    return None
  if isinstance(classifier, (int, np.integer)) and not isinstance(
    classifier, bool
  ):
    if classifier < 0:
      raise ValueError(
        f"swr: `classifier` must be >= 0 (the number of last layers that "
        f"form the classifier); got {classifier}."
      )
    return int(classifier)
  if isinstance(classifier, (str, bytes)) or not isinstance(
    classifier, Sequence
  ):
    raise ValueError(
      "swr: `classifier` must be an int k (the last k layers) or a sequence "
      f"of layer paths; got {classifier!r}. Under "
      "optax.inject_hyperparams, pass static_args=('classifier',)."
    )
  normalized = _layers.normalize_layers_arg(classifier, name="classifier")
  if not isinstance(normalized, tuple):
    raise ValueError(
      f"swr: `classifier` must be an int or a sequence of layer paths; got "
      f"{classifier!r}."
    )
  return tuple(_layers.entry_path(entry) for entry in normalized)


def _classifier_mask(
  classifier: int | tuple[Path, ...] | None, paths: Sequence[Path | None]
) -> np.ndarray:
  """Static boolean mask over the layers: True for classifier layers."""
  mask = np.zeros(len(paths), dtype=bool)
  if classifier is None:
    return mask
  if isinstance(classifier, int):
    if classifier > len(paths):
      raise ValueError(
        f"swr: `classifier={classifier}` asks for more layers than the "
        f"network has ({len(paths)})."
      )
    mask[len(paths) - classifier :] = True
    return mask
  for path in classifier:  # A stack's slices share a path.
    if path not in paths:
      raise ValueError(
        f"swr: the `classifier` path {path!r} is not one of the rescaled "
        f"layers {list(dict.fromkeys(paths))}."
      )
    mask[[i for i, p in enumerate(paths) if p == path]] = True
  return mask


def _normalize_reset_steps(reset_norms_at: Any) -> np.ndarray | None:
  try:
    steps = np.asarray(reset_norms_at)
  except jax.errors.TracerArrayConversionError:
    raise ValueError(
      "swr: `reset_norms_at` must be known when the update is traced; got "
      "a traced value. Under optax.inject_hyperparams, pass "
      "static_args=('reset_norms_at',)."
    ) from None
  if steps.size == 0:
    return None
  if not np.issubdtype(steps.dtype, np.integer) or steps.ndim > 1:
    raise ValueError(
      "swr: `reset_norms_at` must be a step count or a sequence of step "
      f"counts (ints); got {reset_norms_at!r}."
    )
  if (steps < 0).any():
    raise ValueError(
      "swr: `reset_norms_at` lists a negative step count "
      f"({int(steps.min())}), which is never reached; steps count the "
      "updates done before the reset, from 0."
    )
  # numpy, not jnp: building the transform must not start a JAX backend
  # (jax.distributed.initialize has to come first on multi-host setups).
  return steps.astype(np.int32).reshape(-1)
