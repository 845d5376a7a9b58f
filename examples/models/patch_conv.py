"""Convolutions as one matmul on patches, for training loops on XLA:CPU.

XLA:CPU runs an ``nn.Conv`` (``lax.conv_general_dilated``) fast under a plain
``jax.jit``, but inside a ``lax.fori_loop`` / ``lax.scan`` of training steps
it runs its gradients as plain loops, 8 to 25 times slower per step: its
``ConvCanonicalization`` pass, which puts convolutions in the NHWC / HWIO
form its Eigen kernels take, visits only the top-level computation, and
JAX writes a convolution's two gradients in other forms.
:func:`patch_conv_general_dilated` computes the same convolution from
slices, a concatenation and one ``dot_general``: no convolution is left for
XLA, and a step inside a loop (seeds under ``jax.vmap`` too) took 0.64 to 0.94
times the plain jitted ``nn.Conv`` step for the zoo's CNNs, at about twice
the temporary memory. Under a plain ``jit`` it is not always faster (-13% to
+39% a step). ``benchmarks/conv_in_loops.py`` measures all this;
``benchmarks/RESULTS.md`` ("Convolutions inside loops on XLA:CPU") records
the numbers and every formulation tried.

It has ``lax.conv_general_dilated``'s signature, so a Flax layer stays what it
is and only computes differently: the module is still an ``nn.Conv`` (or
``nnx.Conv``) with the same ``kernel`` and ``bias`` params, which is what
``optax_swr.layers_from_linen`` recognises::

  conv = nn.Conv(32, (3, 3), conv_general_dilated=patch_conv_general_dilated)

The zoo's models select it with ``conv_impl="patches"`` (see
:func:`conv_kwargs`); ``create`` picks it by default on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import itertools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

# The zoo's ways to compute a convolution: "xla" is Flax's default
# (lax.conv_general_dilated), "patches" is patch_conv_general_dilated.
CONV_IMPLS = ("xla", "patches")
# A name of CONV_IMPLS, or a function with lax.conv_general_dilated's
# signature.
ConvImpl = str | Callable[..., jax.Array]


def patch_conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding: str | Sequence[tuple[int, int]],
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers: Any = None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  out_sharding: Any = None,
) -> jax.Array:
  """``lax.conv_general_dilated`` as a matmul on the input's patches.

  For every position of the kernel window, a strided slice of the padded
  input; the slices, concatenated along the channels, are the im2col patches
  ``[batch, *out_spatial, window_size * in_channels]``, and one
  ``dot_general`` with the kernel reshaped to ``[window_size * in_channels,
  out_channels]`` gives the output. The same sums as the convolution, in
  another order: equal to float rounding, in value and gradient. The patches
  take ``window_size`` times the input's memory.

  Args:
    lhs: the input, laid out as ``dimension_numbers`` says (NHWC from Flax).
    rhs: the kernel (HWIO from Flax).
    window_strides: the stride of each spatial dimension.
    padding: ``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``, or a ``(low, high)``
      pair per spatial dimension (negative values crop).
    lhs_dilation: must be 1 everywhere (no transposed convolutions).
    rhs_dilation: the kernel's dilation per spatial dimension.
    dimension_numbers: as for ``lax.conv_general_dilated``; any layout.
    feature_group_count: must be 1.
    batch_group_count: must be 1.
    precision: passed to the ``dot_general``.
    preferred_element_type: passed to the ``dot_general``.
    out_sharding: must be None.

  Returns:
    What ``lax.conv_general_dilated`` returns, up to float rounding.

  Raises:
    ValueError: for what it does not compute (input dilation, feature or
      batch groups, an output sharding); use ``lax.conv_general_dilated``.
  """
  spatial = lhs.ndim - 2
  strides = tuple(window_strides)
  dilation = tuple(rhs_dilation) if rhs_dilation is not None else (1,) * spatial
  _check_supported(lhs_dilation, feature_group_count, batch_group_count)
  if out_sharding is not None:
    raise ValueError(
      "patch_conv_general_dilated: out_sharding is not supported; shard the "
      "result with jax.lax.with_sharding_constraint, or use "
      "lax.conv_general_dilated (the zoo's conv_impl='xla')."
    )
  specs = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  size = tuple(lhs.shape[axis] for axis in specs.lhs_spec[2:])
  window = tuple(rhs.shape[axis] for axis in specs.rhs_spec[2:])
  dilated = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(size, dilated, strides, padding)
  pads = tuple((int(low), int(high)) for low, high in padding)
  padded = tuple(n + low + high for n, (low, high) in zip(size, pads))
  if any(n < span for n, span in zip(padded, dilated)):
    raise ValueError(
      f"patch_conv_general_dilated: the window {dilated} does not fit the "
      f"padded input {padded}; pad more or use a smaller kernel."
    )
  return _patch_conv(
    lhs, rhs, specs, strides, pads, dilation, precision, preferred_element_type
  )


# Jitted so that an eager call (a model's init) compiles one program per
# layer, not one per slice; inside a jitted step it is inlined.
@functools.partial(jax.jit, static_argnums=tuple(range(2, 8)))
def _patch_conv(
  lhs: jax.Array,
  rhs: jax.Array,
  specs: lax.ConvDimensionNumbers,
  strides: tuple[int, ...],
  pads: tuple[tuple[int, int], ...],
  dilation: tuple[int, ...],
  precision: Any,
  preferred_element_type: Any,
) -> jax.Array:
  """:func:`patch_conv_general_dilated` on checked, hashable arguments."""
  spatial = lhs.ndim - 2
  # Channels last: x is [batch, *spatial, in], kernel is [*window, in, out].
  x = jnp.transpose(
    lhs, (specs.lhs_spec[0], *specs.lhs_spec[2:], specs.lhs_spec[1])
  )
  kernel = jnp.transpose(
    rhs, (*specs.rhs_spec[2:], specs.rhs_spec[1], specs.rhs_spec[0])
  )
  x = lax.pad(
    x,
    jnp.zeros((), x.dtype),
    [(0, 0, 0), *((low, high, 0) for low, high in pads), (0, 0, 0)],
  )
  window = kernel.shape[:spatial]
  out_size = tuple(
    (n - (k - 1) * d - 1) // s + 1
    for n, k, d, s in zip(x.shape[1:-1], window, dilation, strides)
  )
  patches = jnp.concatenate(
    [
      _window_slice(x, offset, dilation, out_size, strides)
      for offset in itertools.product(*(range(k) for k in window))
    ],
    axis=-1,
  )  # [batch, *out_size, window_size * in], in the kernel's (*window, in) order
  y = lax.dot_general(
    patches,
    kernel.reshape(-1, kernel.shape[-1]),
    (((patches.ndim - 1,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  # y is [batch, *spatial, out]; out_spec says where each of them goes.
  source = {specs.out_spec[0]: 0, specs.out_spec[1]: spatial + 1}
  source.update({axis: 1 + i for i, axis in enumerate(specs.out_spec[2:])})
  return jnp.transpose(y, [source[axis] for axis in range(y.ndim)])


def _window_slice(
  x: jax.Array,
  offset: Sequence[int],
  dilation: Sequence[int],
  out_size: Sequence[int],
  strides: Sequence[int],
) -> jax.Array:
  """What kernel position ``offset`` multiplies at every output position:
  ``[batch, *out_size, in]`` of the padded channels-last input ``x``."""
  start = [o * d for o, d in zip(offset, dilation)]
  limit = [b + (n - 1) * s + 1 for b, n, s in zip(start, out_size, strides)]
  return lax.slice(
    x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]), (1, *strides, 1)
  )


def _check_supported(
  lhs_dilation: Sequence[int] | None,
  feature_group_count: int,
  batch_group_count: int,
) -> None:
  unsupported = []
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    unsupported.append(f"lhs_dilation={tuple(lhs_dilation)}")
  if feature_group_count != 1:
    unsupported.append(f"feature_group_count={feature_group_count}")
  if batch_group_count != 1:
    unsupported.append(f"batch_group_count={batch_group_count}")
  if unsupported:
    raise ValueError(
      f"patch_conv_general_dilated does not support {', '.join(unsupported)}"
      " (input dilation, feature or batch groups); use "
      "lax.conv_general_dilated (the zoo's conv_impl='xla') for this layer."
    )


def default_conv_impl() -> str:
  """``"patches"`` on the CPU, where loops of conv steps need it; else
  ``"xla"`` (GPUs and TPUs run ``lax.conv_general_dilated`` well in loops)."""
  return "patches" if jax.default_backend() == "cpu" else "xla"


def conv_kwargs(conv_impl: ConvImpl) -> dict[str, Any]:
  """What a zoo model passes to ``nn.Conv`` / ``nnx.Conv`` for ``conv_impl``.

  ``{}`` for ``"xla"``, so that Flax's default runs (and Flax versions
  without the ``conv_general_dilated`` field work);
  ``{"conv_general_dilated": patch_conv_general_dilated}`` for ``"patches"``;
  a function with ``lax.conv_general_dilated``'s signature is passed as it
  is (``benchmarks/conv_in_loops.py`` times other formulations so).
  """
  if callable(conv_impl):
    return {"conv_general_dilated": conv_impl}
  if conv_impl not in CONV_IMPLS:
    raise ValueError(
      f"conv_impl={conv_impl!r} is not one of {CONV_IMPLS}: 'xla' for "
      "lax.conv_general_dilated, 'patches' for patch_conv_general_dilated "
      "(or pass a function with lax.conv_general_dilated's signature)."
    )
  if conv_impl == "xla":
    return {}
  return {"conv_general_dilated": patch_conv_general_dilated}
