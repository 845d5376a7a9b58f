"""The patch convolution computes what lax.conv_general_dilated computes.

``examples/models/patch_conv.py`` writes a convolution as slices, a
concatenation and one matmul, because XLA:CPU runs that 8 to 25 times
faster inside loops of training steps. It must be the same function: in
value and gradient, for the strides, paddings and layouts the zoo uses, and
the zoo's models must give the same logits and the same SWR layers either way.
"""

from __future__ import annotations

import re
import warnings

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.models import linen as models_linen
from examples.models import nnx as models_nnx
from examples.models import patch_conv
from examples.models import shapes
import optax_swr

# (input shape, kernel shape, strides, padding, rhs_dilation, dimension numbers)
CASES = {
  "3x3 same": ((2, 9, 9, 3), (3, 3, 3, 4), (1, 1), "SAME", None, None),
  "5x5 pad 1": ((2, 8, 8, 2), (5, 5, 2, 3), (1, 1), [(1, 1)] * 2, None, None),
  "stride 2 odd": ((2, 9, 7, 3), (3, 3, 3, 4), (2, 2), "SAME", None, None),
  "patch embed": ((2, 8, 8, 3), (4, 4, 3, 5), (4, 4), "VALID", None, None),
  "1x1 shortcut": ((2, 9, 9, 2), (1, 1, 2, 4), (2, 2), "VALID", None, None),
  "dilated, cropped": (
    (2, 10, 10, 2),
    (3, 3, 2, 3),
    (1, 2),
    [(2, 0), (1, -1)],
    (2, 1),
    None,
  ),
  "1-d same lower": ((2, 11, 3), (3, 3, 4), (2,), "SAME_LOWER", None, None),
  "NCHW / OIHW": (
    (2, 3, 9, 8),
    (4, 3, 3, 2),
    (1, 2),
    "SAME",
    None,
    ("NCHW", "OIHW", "NCHW"),
  ),
}


def normal(shape, seed):
  """Random float32 numbers (numpy: no compilation per shape)."""
  return np.random.default_rng(seed).standard_normal(shape, np.float32)


def channel_last(ndim: int) -> tuple[str, str, str]:
  """Flax's layout: NHWC input and output, HWIO kernel."""
  spatial = "HWD"[: ndim - 2]
  return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


@pytest.mark.parametrize("case", CASES)
def test_equals_lax_conv_in_value_and_gradient(case):
  lhs_shape, rhs_shape, strides, padding, dilation, numbers = CASES[case]
  numbers = numbers or channel_last(len(lhs_shape))
  lhs, rhs = normal(lhs_shape, seed=0), normal(rhs_shape, seed=1)

  def conv(fn, lhs, rhs):
    return fn(
      lhs,
      rhs,
      strides,
      padding,
      rhs_dilation=dilation,
      dimension_numbers=numbers,
    )

  shape = jax.eval_shape(lambda: conv(lax.conv_general_dilated, lhs, rhs)).shape
  cotangent = normal(shape, seed=2)

  @jax.jit
  def value_and_grads(lhs, rhs):
    """Both convolutions and the gradients of <conv, cotangent>."""
    outs = []
    for fn in (lax.conv_general_dilated, patch_conv.patch_conv_general_dilated):
      loss = lambda l, r, fn=fn: jnp.sum(conv(fn, l, r) * cotangent)
      outs.append((conv(fn, lhs, rhs), *jax.grad(loss, (0, 1))(lhs, rhs)))
    return outs

  expected, actual = value_and_grads(lhs, rhs)
  for want, got in zip(expected, actual):  # value, then the two gradients
    assert got.shape == want.shape
    scale = float(jnp.max(jnp.abs(want)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * scale)


def assert_trees_close(actual, expected, tolerance):
  """Every leaf within ``tolerance`` times the largest entry of all leaves
  (a gradient that is exactly 0, such as a bias before a BatchNorm, is
  rounding noise either way)."""
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(expected))
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(
      a, b, rtol=0, atol=tolerance * scale
    ),
    actual,
    expected,
  )


@pytest.mark.parametrize(
  "kwargs, match",
  [
    ({"lhs_dilation": (2, 2)}, "lhs_dilation=\\(2, 2\\)"),
    ({"feature_group_count": 2}, "feature_group_count=2"),
    ({"batch_group_count": 2}, "batch_group_count=2"),
  ],
)
def test_what_it_does_not_compute_raises_a_clear_error(kwargs, match):
  lhs, rhs = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 2, 4))
  with pytest.raises(
    ValueError, match=f"{match}.*use lax.conv_general_dilated"
  ):
    patch_conv.patch_conv_general_dilated(
      lhs, rhs, (1, 1), "SAME", dimension_numbers=channel_last(4), **kwargs
    )


def test_an_unknown_conv_impl_names_the_choices():
  with pytest.raises(ValueError, match="'xla', 'patches'"):
    models_linen.create("cnn", 3, (8, 8, 1), width=4, conv_impl="cudnn")


# Padding 1 (5x5) and SAME (3x3); the cases above cover the strided, 1x1 and
# patch-embedding convolutions of ResNet-18 and the ViT.
CONV_MODELS = ("cnn_bn", "vgg_bn")


@pytest.mark.parametrize("name", CONV_MODELS)
def test_zoo_models_are_the_same_function_with_either_conv(name):
  """The same training-mode logits and gradients, and the same SWR layers."""
  x = normal((16, 8, 8, 1), seed=3)
  kwargs = shapes.model_kwargs(name, (8, 8, 1), 4, "xla")
  xla = models_linen.MODELS[name](num_classes=3, **kwargs)
  patches = xla.clone(conv_impl="patches")  # the same params
  # One compiled init instead of create's eager one (seconds on the CPU).
  init = jax.jit(xla.init, static_argnames="train")
  variables = init(jax.random.key(0), x[:1], train=False)

  @jax.jit
  def logits_and_grads(params):
    """Training-mode logits and the gradients of their squares' sum."""
    outs = []
    for module in (xla, patches):

      def loss(params, module=module):
        logits, _ = module.apply(
          {**variables, "params": params},
          x,
          train=True,
          mutable=["batch_stats"],
        )
        return jnp.sum(logits**2), logits

      outs.append(jax.grad(loss, has_aux=True)(params))
    return outs

  (grads, logits), (patch_grads, patch_logits) = logits_and_grads(
    variables["params"]
  )
  # Training-mode BatchNorm divides by the batch's spread, which amplifies
  # rounding differences of small maps (1x1 after the CNN's second pool).
  assert_trees_close(patch_logits, logits, 1e-4)
  assert_trees_close(patch_grads, grads, 1e-4)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = [
      optax_swr.layers_from_linen(module, variables, x, train=True)
      for module in (xla, patches)
    ]
  assert list(layers[0]) == list(layers[1])


def test_the_nnx_zoo_takes_the_patch_conv_too():
  x = normal((16, 8, 8, 1), seed=3)
  logits = [
    models_nnx.create("vgg_bn", 3, (8, 8, 1), width=4, conv_impl=impl)(x)
    for impl in patch_conv.CONV_IMPLS
  ]
  np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)
  model = models_nnx.create("vgg_bn", 3, (8, 8, 1), width=4)
  assert isinstance(model.convs[0], nnx.Conv)


def test_create_picks_the_patch_conv_on_the_cpu():
  expected = "patches" if jax.default_backend() == "cpu" else "xla"
  for name in ("cnn", "vgg_bn", "resnet18", "transformer"):
    kwargs = shapes.model_kwargs(name, (8, 8, 1), 4)
    assert kwargs["conv_impl"] == expected
  assert "conv_impl" not in shapes.model_kwargs("mlp", (8, 8, 1), 4)


def test_inside_a_loop_no_convolution_is_left_for_xla_cpu():
  """What makes it fast: in a loop body, XLA:CPU runs a convolution fast
  only in NHWC / HWIO form, and JAX writes nn.Conv's gradients in other
  forms (benchmarks/conv_in_loops.py). The patch form has none at all."""
  numbers = channel_last(4)

  def loop(kernel, fn):
    x = jnp.asarray(normal((2, 6, 6, 3), seed=0))

    def body(_, kernel):  # a gradient that depends on the kernel: no hoisting
      loss = lambda k: jnp.sum(
        fn(x, k, (1, 1), "SAME", dimension_numbers=numbers) ** 2
      )
      return kernel - 0.1 * jax.grad(loss)(kernel)

    return lax.fori_loop(0, 3, body, kernel)

  kernel = jnp.asarray(normal((3, 3, 3, 4), seed=1))
  hlo = {
    fn: jax.jit(loop, static_argnums=1).lower(kernel, fn).compile().as_text()
    for fn in (lax.conv_general_dilated, patch_conv.patch_conv_general_dilated)
  }
  assert "convolution(" not in hlo[patch_conv.patch_conv_general_dilated]
  labels = re.findall(
    r"convolution\(.*?dim_labels=(\S+?),", hlo[lax.conv_general_dilated]
  )
  # The kernel gradient as JAX writes it, which XLA:CPU emits as plain loops.
  assert "f01b_i01o->01bf" in labels, labels
