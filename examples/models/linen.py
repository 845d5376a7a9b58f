"""The model zoo of the SWR paper (Oh et al., 2025), in Flax Linen.

The paper's four *chain* networks (MLP, CNN, CNN-BN, VGG-16), whose layers run
one after the other with ReLU and max-pooling in between, a small VGG with
BatchNorm (``vgg_bn``), and two networks that are not chains (ResNet-18, a
small ViT-style transformer), to ask how SWR behaves where its
proportionality theorem does not hold.

Every model is called as ``model.apply(variables, x, train=False)`` and
returns logits ``[batch, num_classes]``. Image models take NHWC batches. With
``train=True``, models with BatchNorm update their running statistics, so pass
``mutable=["batch_stats"]`` to ``apply``. Layers are the standard
``nn.Dense`` / ``nn.Conv`` / ``nn.BatchNorm`` / ``nn.LayerNorm``, so every
layer is a sub-tree of the params with a ``kernel`` (or ``scale``) leaf and an
optional ``bias``, which is what ``optax_swr`` looks for. They are named after
their role (``conv1``, ``bn1``, ``fc1``, ``head``; repeated layers ``convs_0``,
``blocks_0``, ...) with the same names as in ``examples/models/nnx.py``;
``examples/models/shapes.py`` holds what the two zoos share.

Models with convolutions take ``conv_impl``: ``"xla"`` is Flax's
``lax.conv_general_dilated``, ``"patches"`` the same convolution as a matmul
on patches (``examples/models/patch_conv.py``), which XLA:CPU runs 8 to 25
times faster inside a ``lax.fori_loop`` or ``lax.scan`` of training steps;
``create`` picks ``"patches"`` on the CPU. Both have the same params.

Example::

  from examples.models import linen as models_linen
  model, variables = models_linen.create("cnn_bn", 10, (32, 32, 3))
  logits, updates = model.apply(
      variables, images, train=True, mutable=["batch_stats"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Framework-independent pieces shared by both zoos.
from examples.models import patch_conv
from examples.models.shapes import ALL_MODELS  # noqa: F401 (the zoo's names, re-exported)
from examples.models.shapes import BN_EPSILON
from examples.models.shapes import BN_MOMENTUM
from examples.models.shapes import CHAIN_MODELS  # noqa: F401
from examples.models.shapes import POS_EMBEDDING_STDDEV
from examples.models.shapes import check_image_shape
from examples.models.shapes import max_pool_2x2
from examples.models.shapes import model_kwargs
from examples.models.shapes import num_patches
from examples.models.shapes import resnet18_blocks
from examples.models.shapes import vgg16_convs
from examples.models.shapes import vgg_bn_convs

Variables = dict[str, Any]


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    name=name,
  )


def _check_images(x: jax.Array) -> None:
  check_image_shape(x.shape[1:], "each input of a batch")


class MLP(nn.Module):
  """A ReLU perceptron on flattened inputs; the paper's MNIST 784-100-100-10.

  A chain network: SWR's proportionality theorem holds exactly.
  ``layer_norm`` puts a LayerNorm between each hidden layer and its ReLU
  (see ``LayerNormMLP``).

  Attributes:
    hidden: units of each hidden layer.
    num_classes: size of the logits.
    layer_norm: whether to normalize each hidden layer's output.
  """

  hidden: Sequence[int] = (100, 100)
  num_classes: int = 10
  layer_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No BatchNorm; kept so that every model has one signature.
    x = x.reshape(x.shape[0], -1)
    for index, units in enumerate(self.hidden):
      x = nn.Dense(units, name=f"hidden_{index}")(x)
      if self.layer_norm:
        x = nn.LayerNorm(name=f"norms_{index}")(x)
      x = nn.relu(x)
    return nn.Dense(self.num_classes, name="head")(x)


class LayerNormMLP(MLP):
  """``MLP`` with Dense -> LayerNorm -> ReLU hidden layers and a Dense head.

  The model of normalize-and-project (Lyle et al., 2024): each LayerNorm
  makes its hidden layer's function invariant to the scale of that layer's
  weight, so bounding the weight's norm changes only its effective learning
  rate. Same initialisation (Flax's default, LeCun normal) and names as
  ``MLP``, plus the LayerNorms ``norms_0``, ``norms_1``, ... (Flax's
  defaults: a scale and a bias, epsilon 1e-6). A chain network with
  normalization layers: SWR rescales every layer, the LayerNorms' scales
  included, and keeps the function up to the LayerNorms' epsilon.
  ``baselines.redo`` and ``continual_backprop`` refuse it (a LayerNorm
  follows every hidden layer). Not in ``MODELS``: build it directly.

  Example::

    model = LayerNormMLP(hidden=(100, 100), num_classes=10)
    x = jnp.zeros((1, 784))
    variables = model.init(jax.random.key(0), x)
    layers = optax_swr.layers_from_linen(model, variables, x)
    tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-3, layers=layers))
  """

  layer_norm: bool = True


class CNN(nn.Module):
  """The paper's CIFAR CNN: 2 x (conv 5x5 -> ReLU -> max-pool 2), FC, FC.

  Convolutions have padding 1, as in the paper; ``use_batch_norm`` puts a
  BatchNorm between each convolution and its ReLU (see ``CNNBN``). A chain
  network: SWR's proportionality theorem holds.

  Attributes:
    num_classes: size of the logits.
    channels: output channels of both convolutions.
    hidden: units of the hidden fully connected layer.
    use_batch_norm: whether to normalize after each convolution.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
  """

  num_classes: int = 10
  channels: int = 16
  hidden: int = 100
  use_batch_norm: bool = False
  conv_impl: patch_conv.ConvImpl = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_images(x)
    for index in (1, 2):
      x = nn.Conv(
        self.channels,
        (5, 5),
        padding=1,
        use_bias=not self.use_batch_norm,
        name=f"conv{index}",
        **patch_conv.conv_kwargs(self.conv_impl),
      )(x)
      if self.use_batch_norm:
        x = _batch_norm(train, name=f"bn{index}")(x)
      x = max_pool_2x2(nn.relu(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, name="fc1")(x))
    return nn.Dense(self.num_classes, name="head")(x)


class CNNBN(CNN):
  """The paper's CNN-BN: ``CNN`` with conv (no bias) -> BatchNorm -> ReLU."""

  use_batch_norm: bool = True


def _vgg(
  x: jax.Array,
  layout: Sequence[tuple[int, bool]],
  classifier: Sequence[int],
  num_classes: int,
  use_batch_norm: bool,
  train: bool,
  conv_impl: patch_conv.ConvImpl,
) -> jax.Array:
  """A VGG's layers, called from a model's compact ``__call__``.

  3x3 convolutions (padding SAME) ``convs_i`` of ``layout``'s
  ``(channels, pool_after)``, each followed by [BatchNorm ``norms_i``,] ReLU
  [and a 2x2 max-pool]; then ``fc1``, ``fc2``, ... of ``classifier``'s
  widths with ReLU, and the ``head``.
  """
  _check_images(x)
  for index, (channels, pool_after) in enumerate(layout):
    x = nn.Conv(
      channels,
      (3, 3),
      padding="SAME",
      use_bias=not use_batch_norm,
      name=f"convs_{index}",
      **patch_conv.conv_kwargs(conv_impl),
    )(x)
    if use_batch_norm:
      x = _batch_norm(train, name=f"norms_{index}")(x)
    x = nn.relu(x)
    if pool_after:
      x = max_pool_2x2(x)
  x = x.reshape(x.shape[0], -1)
  for index, units in enumerate(classifier, start=1):
    x = nn.relu(nn.Dense(units, name=f"fc{index}")(x))
  return nn.Dense(num_classes, name="head")(x)


class VGG16(nn.Module):
  """VGG-16 (configuration D), a ``classifier_width`` classifier, no dropout.

  Thirteen 3x3 convolutions (padding SAME) with ReLU and a 2x2 max-pool after
  each of the five stages, then FC -> ReLU -> FC -> ReLU -> FC. Pooling stops
  once the map is 1x1, so small images work. A chain network: SWR's
  proportionality theorem holds.

  Attributes:
    num_classes: size of the logits.
    width: base width; every channel count is multiplied by ``width / 64``.
    classifier_width: units of the two hidden fully connected layers.
    use_batch_norm: whether to put BatchNorm between each conv and its ReLU.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
  """

  num_classes: int = 10
  width: int = 64
  classifier_width: int = 4096
  use_batch_norm: bool = False
  conv_impl: patch_conv.ConvImpl = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return _vgg(
      x,
      vgg16_convs(self.width),
      (self.classifier_width, self.classifier_width),
      self.num_classes,
      self.use_batch_norm,
      train,
      self.conv_impl,
    )


class VGGBN(nn.Module):
  """A small VGG with BatchNorm: 2 x (2 x (conv 3x3 -> BN -> ReLU), pool), FC.

  ``width``, ``width``, pool, ``2 width``, ``2 width``, pool (32, 32, 64, 64
  by default: 28x28 images end as 7x7x64), convolutions without bias and
  with padding SAME, then FC (``hidden`` units) -> ReLU -> FC. A VGG-style
  network strong enough for the paper's warm start on 28x28 and 32x32
  images, and small enough for a CPU. A chain network: SWR's
  proportionality theorem holds.

  Attributes:
    num_classes: size of the logits.
    width: channels of the first stage; the second has twice as many.
    hidden: units of the hidden fully connected layer.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
  """

  num_classes: int = 10
  width: int = 32
  hidden: int = 128
  conv_impl: patch_conv.ConvImpl = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return _vgg(
      x,
      vgg_bn_convs(self.width),
      (self.hidden,),
      self.num_classes,
      True,
      train,
      self.conv_impl,
    )


class BasicBlock(nn.Module):
  """ResNet's basic block: conv3x3-BN-ReLU-conv3x3-BN, plus a shortcut, ReLU.

  The shortcut is the identity, or a 1x1 convolution and BatchNorm
  (``shortcut_conv``, ``shortcut_bn``) where the shape changes.

  Attributes:
    features: output channels.
    stride: stride of the first convolution and of the projection.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
  """

  features: int
  stride: int = 1
  conv_impl: patch_conv.ConvImpl = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    conv_args = dict(use_bias=False, **patch_conv.conv_kwargs(self.conv_impl))
    y = nn.Conv(
      self.features,
      (3, 3),
      strides=self.stride,
      padding=1,
      name="conv1",
      **conv_args,
    )(x)
    y = nn.relu(_batch_norm(train, name="bn1")(y))
    y = nn.Conv(self.features, (3, 3), padding=1, name="conv2", **conv_args)(y)
    y = _batch_norm(train, name="bn2")(y)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = nn.Conv(
        self.features,
        (1, 1),
        strides=self.stride,
        padding="VALID",
        name="shortcut_conv",
        **conv_args,
      )(x)
      shortcut = _batch_norm(train, name="shortcut_bn")(shortcut)
    return nn.relu(y + shortcut)


class ResNet18(nn.Module):
  """ResNet-18 for small images: a 3x3 stem (no max-pool), 4 stages, GAP, FC.

  Not a chain network: each block adds its input back, so rescaling layers
  does not scale the logits by one constant and SWR's proportionality theorem
  does not apply; SWR still bounds the weight norms.

  Attributes:
    num_classes: size of the logits.
    width: channels of the stem and the first stage; they double per stage.
    stages: BasicBlocks per stage; stages after the first start at stride 2.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
  """

  num_classes: int = 10
  width: int = 64
  stages: Sequence[int] = (2, 2, 2, 2)
  conv_impl: patch_conv.ConvImpl = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    _check_images(x)
    x = nn.Conv(
      self.width,
      (3, 3),
      padding=1,
      use_bias=False,
      name="stem_conv",
      **patch_conv.conv_kwargs(self.conv_impl),
    )(x)
    x = nn.relu(_batch_norm(train, name="stem_bn")(x))
    blocks = resnet18_blocks(self.width, self.stages)
    for index, (features, stride) in enumerate(blocks):
      x = BasicBlock(features, stride, self.conv_impl, name=f"blocks_{index}")(
        x, train
      )
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


class EncoderBlock(nn.Module):
  """A pre-LayerNorm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)).

  ``mask`` (e.g. ``nn.make_causal_mask``) limits which tokens attend to which.

  Attributes:
    heads: attention heads.
    mlp_dim: hidden units of the GELU MLP.
  """

  heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    dim = x.shape[-1]
    y = nn.LayerNorm(name="norm1")(x)
    x = x + nn.MultiHeadDotProductAttention(
      num_heads=self.heads, deterministic=True, name="attn"
    )(y, mask=mask)
    y = nn.LayerNorm(name="norm2")(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, name="mlp_in")(y))
    return x + nn.Dense(dim, name="mlp_out")(y)


class TransformerEncoder(nn.Module):
  """A small ViT-style encoder: patches, position embedding, blocks, mean-pool.

  Patches are embedded by a ``patch_size`` conv with stride ``patch_size``
  (pixels that do not fill a patch are cropped); a learned ``pos_embedding``
  leaf is added; ``depth`` pre-LN ``EncoderBlock``s, a final LayerNorm, the
  mean over tokens and a linear head follow. No dropout. Not a chain network:
  residual additions, softmax attention and LayerNorm break SWR's
  proportionality theorem; SWR still bounds the weight norms.

  Attributes:
    num_classes: size of the logits.
    dim: token dimension.
    depth: number of encoder blocks.
    heads: attention heads; must divide ``dim``.
    mlp_dim: hidden units of each block's MLP.
    patch_size: height and width of a patch in pixels.
    conv_impl: how the patch embedding computes (``"xla"`` or
      ``"patches"``).
  """

  num_classes: int = 10
  dim: int = 64
  depth: int = 2
  heads: int = 4
  mlp_dim: int = 128
  patch_size: int = 4
  conv_impl: patch_conv.ConvImpl = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # No BatchNorm or dropout.
    _check_images(x)
    tokens = num_patches(x.shape[1:], self.patch_size)
    patch = (self.patch_size, self.patch_size)
    x = nn.Conv(
      self.dim,
      patch,
      strides=patch,
      padding="VALID",
      name="patch_embed",
      **patch_conv.conv_kwargs(self.conv_impl),
    )(x)
    x = x.reshape(x.shape[0], tokens, self.dim)
    x = x + self.param(
      "pos_embedding",
      nn.initializers.normal(POS_EMBEDDING_STDDEV),
      (tokens, self.dim),
    )
    for index in range(self.depth):
      x = EncoderBlock(self.heads, self.mlp_dim, name=f"blocks_{index}")(x)
    x = nn.LayerNorm(name="norm")(x).mean(axis=1)
    return nn.Dense(self.num_classes, name="head")(x)


MODELS: dict[str, type[nn.Module]] = {
  "mlp": MLP,
  "cnn": CNN,
  "cnn_bn": CNNBN,
  "vgg16": VGG16,
  "vgg_bn": VGGBN,
  "resnet18": ResNet18,
  "transformer": TransformerEncoder,
}


def create(
  name: str,
  num_classes: int,
  in_shape: tuple[int, ...],
  *,
  width: int | None = None,
  seed: int = 0,
  conv_impl: patch_conv.ConvImpl | None = None,
) -> tuple[nn.Module, Variables]:
  """Builds a model of the zoo and initialises it on a zero batch.

  Args:
    name: one of ``ALL_MODELS``.
    num_classes: size of the logits.
    in_shape: shape of one input, e.g. ``(32, 32, 3)``; image models need
      ``(height, width, channels)``.
    width: ``None`` for the paper's sizes, or a smaller width for tests; see
      ``model_kwargs`` for what it means for each model.
    seed: seed of the initialisation.
    conv_impl: how convolutions compute: ``"xla"`` (Flax's
      ``lax.conv_general_dilated``) or ``"patches"`` (a matmul on patches:
      8 to 25 times faster than ``"xla"`` inside a loop of training steps on
      XLA:CPU, such as the experiment engine's; under a plain ``jit`` -13% to
      +39% a step); ``None``: ``"patches"`` on the CPU, ``"xla"`` elsewhere.
      The params are the same.

  Returns:
    The module and its variables (``params``, and ``batch_stats`` for models
    with BatchNorm).
  """
  kwargs = model_kwargs(name, in_shape, width, conv_impl)
  model = MODELS[name](num_classes=num_classes, **kwargs)
  inputs = jnp.zeros((1, *in_shape), jnp.float32)
  variables = model.init(jax.random.key(seed), inputs, train=False)
  return model, variables
