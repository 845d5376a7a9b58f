"""What the Linen and NNX zoos share: model names, sizes, shape arithmetic.

Nothing here depends on the Flax API a model is written in: the names of the
zoo, the paper's BatchNorm and embedding constants, the layouts of VGG-16,
``vgg_bn`` and ResNet-18 at a given width, the sizes pooling and patching
leave, and the constructor arguments of ``create`` in
``examples/models/linen.py`` and ``examples/models/nnx.py``.
``max_pool_2x2`` is a pure function of an array, used by both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from examples.models import patch_conv

CHAIN_MODELS = ("mlp", "cnn", "cnn_bn", "vgg16", "vgg_bn")
ALL_MODELS = (*CHAIN_MODELS, "resnet18", "transformer")

BN_MOMENTUM = 0.9  # PyTorch's BatchNorm defaults, as in the paper's code.
BN_EPSILON = 1e-5
POS_EMBEDDING_STDDEV = 0.02

# Output channels of VGG-16's 13 convolutions, stage by stage; every stage
# ends with a 2x2 max-pool.
VGG16_STAGES = (
  (64, 64),
  (128, 128),
  (256, 256, 256),
  (512, 512, 512),
  (512, 512, 512),
)


def check_image_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
  """Returns ``shape`` if it is ``(height, width, channels)``, else raises."""
  if len(shape) != 3:
    raise ValueError(
      f"{what} must be (height, width, channels), got {tuple(shape)}. "
      "Image models take NHWC batches: reshape flat inputs, e.g. "
      "x.reshape(-1, 8, 8, 1) for 8x8 grey digits."
    )
  return tuple(shape)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """Max-pools NHWC maps by 2x2 with stride 2, flooring odd sizes.

  A map that is already 1 pixel high or wide is returned as it is, so that
  deep networks also run on small images (8x8 digits) instead of pooling to
  an empty map.
  """
  if min(x.shape[-3], x.shape[-2]) < 2:
    return x
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def pooled_size(size: tuple[int, int]) -> tuple[int, int]:
  """The (height, width) that ``max_pool_2x2`` turns ``size`` into."""
  if min(size) < 2:
    return size
  return size[0] // 2, size[1] // 2


def vgg16_convs(width: int) -> tuple[tuple[int, bool], ...]:
  """``(channels, pool_after)`` of VGG-16's convolutions at a base ``width``.

  Every channel count is multiplied by ``width / 64``: 64 is VGG-16 itself,
  8 a tiny VGG for tests.
  """
  return tuple(
    (max(1, channels * width // 64), index == len(stage) - 1)
    for stage in VGG16_STAGES
    for index, channels in enumerate(stage)
  )


def vgg_bn_convs(width: int) -> tuple[tuple[int, bool], ...]:
  """``(channels, pool_after)`` of ``vgg_bn``'s four convolutions:
  ``width``, ``width``, pool, ``2 width``, ``2 width``, pool."""
  return ((width, False), (width, True), (2 * width, False), (2 * width, True))


def resnet18_blocks(
  width: int, stages: Sequence[int]
) -> tuple[tuple[int, int], ...]:
  """``(channels, stride)`` of every BasicBlock; channels double per stage."""
  return tuple(
    (width * 2**stage, 2 if stage > 0 and block == 0 else 1)
    for stage, num_blocks in enumerate(stages)
    for block in range(num_blocks)
  )


def num_patches(in_shape: Sequence[int], patch_size: int) -> int:
  """How many ``patch_size`` patches tile an image (the rest is cropped)."""
  height, width, _ = check_image_shape(in_shape, "the image shape")
  if not 1 <= patch_size <= min(height, width):
    raise ValueError(
      f"patch_size={patch_size} does not fit {height}x{width} images; "
      f"use a patch size between 1 and {min(height, width)}."
    )
  return (height // patch_size) * (width // patch_size)


def model_kwargs(
  name: str,
  in_shape: Sequence[int],
  width: int | None,
  conv_impl: patch_conv.ConvImpl | None = None,
) -> dict[str, Any]:
  """The constructor arguments ``create`` uses for ``name`` at ``width``.

  ``width=None`` gives the paper's sizes; otherwise ``width`` is the hidden
  units of the MLP, the conv channels of the CNNs, the base width of VGG-16
  (with a classifier ``64 * width`` wide, 4096 at width 64) and ResNet-18,
  the first stage's channels of ``vgg_bn`` (with ``4 * width`` hidden units,
  128 at its default 32), and the token dimension of the transformer (with
  ``mlp_dim = 2 * width``). Models with convolutions also get ``conv_impl``
  (``None``: ``patch_conv.default_conv_impl()``, ``"patches"`` on the CPU).
  """
  if name not in ALL_MODELS:
    raise ValueError(f"Unknown model {name!r}; choose one of {ALL_MODELS}.")
  if name != "mlp":
    check_image_shape(in_shape, f"in_shape for {name!r}")
  if width is None:
    kwargs = {}
  elif name == "mlp":
    kwargs = {"hidden": (width, width)}
  elif name in ("cnn", "cnn_bn"):
    kwargs = {"channels": width}
  elif name == "vgg16":
    kwargs = {"width": width, "classifier_width": 64 * width}
  elif name == "vgg_bn":
    kwargs = {"width": width, "hidden": 4 * width}
  elif name == "resnet18":
    kwargs = {"width": width}
  else:
    kwargs = {"dim": width, "mlp_dim": 2 * width}
  if name == "transformer":
    kwargs["patch_size"] = 2 if min(in_shape[:2]) < 16 else 4
  if name != "mlp":
    kwargs["conv_impl"] = conv_impl or patch_conv.default_conv_impl()
  return kwargs
