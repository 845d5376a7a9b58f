"""The model zoo of the SWR paper (Oh et al., 2025), in Flax NNX.

The same models, with the same names and the same parameters, as
``examples/models/linen.py``: the paper's four *chain* networks (MLP, CNN,
CNN-BN, VGG-16), a small VGG with BatchNorm (``vgg_bn``), and two networks
that are not chains (ResNet-18, a small ViT-style transformer). Models with
convolutions take ``conv_impl`` (``"xla"`` or ``"patches"``), as in the Linen
zoo.

NNX builds parameters eagerly, so constructors take the input size
(``in_features`` for the MLP, ``in_shape=(height, width, channels)`` for image
models) and ``rngs``. Every model is called as ``model(x)`` and returns logits
``[batch, num_classes]``; image models take NHWC batches. A new model is in
training mode (BatchNorm normalizes with batch statistics and updates its
running averages); ``model.eval()`` switches BatchNorm to the running
averages and ``model.train()`` back. Layers are the standard ``nnx.Linear`` /
``nnx.Conv`` / ``nnx.BatchNorm`` / ``nnx.LayerNorm``, named after their role
(``conv1``, ``bn1``, ``fc1``, ``head``); repeated layers live in ``nnx.List``
attributes (``convs``, ``blocks``), so their paths are ``("convs", 0)``, ...

Example::

  from examples.models import nnx as models_nnx
  model = models_nnx.create("cnn_bn", 10, (32, 32, 3))
  logits = model(images)  # Training mode.
  model.eval()
"""

from __future__ import annotations

from collections.abc import Sequence
import math

from flax import nnx
import jax

from examples.models import patch_conv

# Framework-independent pieces shared by both zoos.
from examples.models.shapes import ALL_MODELS  # noqa: F401 (the same names as the Linen zoo)
from examples.models.shapes import BN_EPSILON
from examples.models.shapes import BN_MOMENTUM
from examples.models.shapes import CHAIN_MODELS  # noqa: F401
from examples.models.shapes import POS_EMBEDDING_STDDEV
from examples.models.shapes import check_image_shape
from examples.models.shapes import max_pool_2x2
from examples.models.shapes import model_kwargs
from examples.models.shapes import num_patches
from examples.models.shapes import pooled_size
from examples.models.shapes import resnet18_blocks
from examples.models.shapes import vgg16_convs
from examples.models.shapes import vgg_bn_convs

# flax < 0.12 has no nnx.List; a plain list of modules worked there.
List = getattr(nnx, "List", list)


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(
    features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs
  )


class MLP(nnx.Module):
  """A ReLU perceptron on flattened inputs; the paper's MNIST 784-100-100-10.

  A chain network: SWR's proportionality theorem holds exactly. Layers run
  ``hidden[0]``, ``hidden[1]``, ..., ``head``.

  Args:
    in_features: size of a flattened input (784 for MNIST).
    hidden: units of each hidden layer.
    num_classes: size of the logits.
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_features: int,
    hidden: Sequence[int] = (100, 100),
    num_classes: int = 10,
    *,
    rngs: nnx.Rngs,
  ):
    sizes = (in_features, *hidden)
    self.hidden = List(
      [
        nnx.Linear(units_in, units_out, rngs=rngs)
        for units_in, units_out in zip(sizes[:-1], sizes[1:])
      ]
    )
    self.head = nnx.Linear(sizes[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for layer in self.hidden:
      x = nnx.relu(layer(x))
    return self.head(x)


class CNN(nnx.Module):
  """The paper's CIFAR CNN: 2 x (conv 5x5 -> ReLU -> max-pool 2), FC, FC.

  Convolutions have padding 1, as in the paper; ``use_batch_norm`` puts a
  BatchNorm between each convolution and its ReLU (see ``CNNBN``). A chain
  network: SWR's proportionality theorem holds. Layers run ``conv1``,
  [``bn1``], ``conv2``, [``bn2``], ``fc1``, ``head``.

  Args:
    in_shape: ``(height, width, channels)`` of one image.
    num_classes: size of the logits.
    channels: output channels of both convolutions.
    hidden: units of the hidden fully connected layer.
    use_batch_norm: whether to normalize after each convolution.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    num_classes: int = 10,
    channels: int = 16,
    hidden: int = 100,
    use_batch_norm: bool = False,
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    height, width, in_channels = check_image_shape(in_shape, "in_shape")
    conv_args = dict(
      padding=1,
      use_bias=not use_batch_norm,
      rngs=rngs,
      **patch_conv.conv_kwargs(conv_impl),
    )
    self.conv1 = nnx.Conv(in_channels, channels, (5, 5), **conv_args)
    self.bn1 = _batch_norm(channels, rngs) if use_batch_norm else None
    self.conv2 = nnx.Conv(channels, channels, (5, 5), **conv_args)
    self.bn2 = _batch_norm(channels, rngs) if use_batch_norm else None
    size = (height, width)
    for _ in range(2):  # A 5x5 conv with padding 1 trims 2 pixels, then pool.
      size = pooled_size((size[0] - 2, size[1] - 2))
    self.fc1 = nnx.Linear(math.prod(size) * channels, hidden, rngs=rngs)
    self.head = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv, norm in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
      x = conv(x)
      if norm is not None:
        x = norm(x)
      x = max_pool_2x2(nnx.relu(x))
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc1(x))
    return self.head(x)


class CNNBN(CNN):
  """The paper's CNN-BN: ``CNN`` with conv (no bias) -> BatchNorm -> ReLU."""

  def __init__(
    self,
    in_shape: Sequence[int],
    num_classes: int = 10,
    channels: int = 16,
    hidden: int = 100,
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      in_shape,
      num_classes,
      channels,
      hidden,
      use_batch_norm=True,
      conv_impl=conv_impl,
      rngs=rngs,
    )


class VGG(nnx.Module):
  """A VGG: 3x3 convolutions [BatchNorm] ReLU [max-pool], then FC layers.

  The body of ``VGG16`` and ``VGGBN``. Convolutions (padding SAME) follow
  ``layout``'s ``(channels, pool_after)``; ``classifier`` gives the hidden
  fully connected layers' units. Layers run ``convs[i]`` [``norms[i]``],
  then ``fc1``, ``fc2``, ... and ``head``.

  Args:
    in_shape: ``(height, width, channels)`` of one image.
    layout: ``(channels, pool_after)`` of every convolution.
    classifier: units of each hidden fully connected layer.
    num_classes: size of the logits.
    use_batch_norm: whether to put BatchNorm between each conv and its ReLU.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    layout: Sequence[tuple[int, bool]],
    classifier: Sequence[int],
    num_classes: int,
    use_batch_norm: bool,
    conv_impl: patch_conv.ConvImpl,
    *,
    rngs: nnx.Rngs,
  ):
    height, image_width, in_channels = check_image_shape(in_shape, "in_shape")
    channels = [in_channels] + [out for out, _ in layout]
    self.convs = List(
      [
        nnx.Conv(
          channels_in,
          channels_out,
          (3, 3),
          padding="SAME",
          use_bias=not use_batch_norm,
          rngs=rngs,
          **patch_conv.conv_kwargs(conv_impl),
        )
        for channels_in, channels_out in zip(channels[:-1], channels[1:])
      ]
    )
    self.norms = (
      List([_batch_norm(out, rngs) for out in channels[1:]])
      if use_batch_norm
      else None
    )
    self.pool_after = tuple(pool_after for _, pool_after in layout)
    size = (height, image_width)
    for _ in range(sum(self.pool_after)):
      size = pooled_size(size)
    units = [math.prod(size) * channels[-1], *classifier]
    self.hidden_fc = tuple(f"fc{index}" for index in range(1, len(units)))
    for name, units_in, units_out in zip(self.hidden_fc, units, units[1:]):
      setattr(self, name, nnx.Linear(units_in, units_out, rngs=rngs))
    self.head = nnx.Linear(units[-1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for index, conv in enumerate(self.convs):
      x = conv(x)
      if self.norms is not None:
        x = self.norms[index](x)
      x = nnx.relu(x)
      if self.pool_after[index]:
        x = max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    for name in self.hidden_fc:
      x = nnx.relu(getattr(self, name)(x))
    return self.head(x)


class VGG16(VGG):
  """VGG-16 (configuration D), a ``classifier_width`` classifier, no dropout.

  Thirteen 3x3 convolutions (padding SAME) with ReLU and a 2x2 max-pool after
  each of the five stages, then FC -> ReLU -> FC -> ReLU -> FC. Every channel
  count is multiplied by ``width / 64``. Pooling stops once the map is 1x1,
  so small images work. A chain network: SWR's proportionality theorem holds.
  Layers run ``convs[i]`` [``norms[i]``] for i = 0..12, ``fc1``, ``fc2``,
  ``head``.

  Args:
    in_shape: ``(height, width, channels)`` of one image.
    num_classes: size of the logits.
    width: base width; 64 is VGG-16, 8 a tiny VGG for tests.
    classifier_width: units of the two hidden fully connected layers.
    use_batch_norm: whether to put BatchNorm between each conv and its ReLU.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    num_classes: int = 10,
    width: int = 64,
    classifier_width: int = 4096,
    use_batch_norm: bool = False,
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      in_shape,
      vgg16_convs(width),
      (classifier_width, classifier_width),
      num_classes,
      use_batch_norm,
      conv_impl,
      rngs=rngs,
    )


class VGGBN(VGG):
  """A small VGG with BatchNorm: 2 x (2 x (conv 3x3 -> BN -> ReLU), pool), FC.

  ``width``, ``width``, pool, ``2 width``, ``2 width``, pool (32, 32, 64, 64
  by default), convolutions without bias, then FC (``hidden`` units) -> ReLU
  -> FC. A chain network: SWR's proportionality theorem holds. Layers run
  ``convs[i]``, ``norms[i]`` for i = 0..3, ``fc1``, ``head``.

  Args:
    in_shape: ``(height, width, channels)`` of one image.
    num_classes: size of the logits.
    width: channels of the first stage; the second has twice as many.
    hidden: units of the hidden fully connected layer.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    num_classes: int = 10,
    width: int = 32,
    hidden: int = 128,
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    super().__init__(
      in_shape,
      vgg_bn_convs(width),
      (hidden,),
      num_classes,
      True,
      conv_impl,
      rngs=rngs,
    )


class BasicBlock(nnx.Module):
  """ResNet's basic block: conv3x3-BN-ReLU-conv3x3-BN, plus a shortcut, ReLU.

  The shortcut is the identity, or a 1x1 convolution and BatchNorm
  (``shortcut_conv``, ``shortcut_bn``) where the shape changes.
  """

  def __init__(
    self,
    in_features: int,
    features: int,
    stride: int = 1,
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    conv_args = dict(
      use_bias=False, rngs=rngs, **patch_conv.conv_kwargs(conv_impl)
    )
    self.conv1 = nnx.Conv(
      in_features, features, (3, 3), stride, padding=1, **conv_args
    )
    self.bn1 = _batch_norm(features, rngs)
    self.conv2 = nnx.Conv(features, features, (3, 3), padding=1, **conv_args)
    self.bn2 = _batch_norm(features, rngs)
    if stride != 1 or in_features != features:
      self.shortcut_conv = nnx.Conv(
        in_features, features, (1, 1), stride, padding="VALID", **conv_args
      )
      self.shortcut_bn = _batch_norm(features, rngs)
    else:
      self.shortcut_conv = self.shortcut_bn = None

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x
    if self.shortcut_conv is not None:
      shortcut = self.shortcut_bn(self.shortcut_conv(x))
    return nnx.relu(y + shortcut)


class ResNet18(nnx.Module):
  """ResNet-18 for small images: a 3x3 stem (no max-pool), 4 stages, GAP, FC.

  ``width`` channels in the stem and first stage, doubling per stage; stages
  after the first start at stride 2. Not a chain network: each block adds its
  input back, so rescaling layers does not scale the logits by one constant
  and SWR's proportionality theorem does not apply; SWR still bounds the
  weight norms.

  Args:
    in_shape: ``(height, width, channels)`` of one image.
    num_classes: size of the logits.
    width: channels of the stem and the first stage.
    stages: BasicBlocks per stage.
    conv_impl: how the convolutions compute (``"xla"`` or ``"patches"``).
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    num_classes: int = 10,
    width: int = 64,
    stages: Sequence[int] = (2, 2, 2, 2),
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    _, _, in_channels = check_image_shape(in_shape, "in_shape")
    self.stem_conv = nnx.Conv(
      in_channels,
      width,
      (3, 3),
      padding=1,
      use_bias=False,
      rngs=rngs,
      **patch_conv.conv_kwargs(conv_impl),
    )
    self.stem_bn = _batch_norm(width, rngs)
    blocks, in_features = [], width
    for features, stride in resnet18_blocks(width, stages):
      blocks.append(
        BasicBlock(in_features, features, stride, conv_impl, rngs=rngs)
      )
      in_features = features
    self.blocks = List(blocks)
    self.head = nnx.Linear(in_features, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.stem_bn(self.stem_conv(x)))
    for block in self.blocks:
      x = block(x)
    x = x.mean(axis=(1, 2))
    return self.head(x)


class EncoderBlock(nnx.Module):
  """A pre-LayerNorm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(
      heads,
      dim,
      decode=False,
      deterministic=True,
      keep_rngs=False,
      rngs=rngs,
    )
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp_in = nnx.Linear(dim, mlp_dim, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    y = nnx.gelu(self.mlp_in(self.norm2(x)))
    return x + self.mlp_out(y)


class TransformerEncoder(nnx.Module):
  """A small ViT-style encoder: patches, position embedding, blocks, mean-pool.

  Patches are embedded by a ``patch_size`` conv with stride ``patch_size``
  (pixels that do not fill a patch are cropped); a learned ``pos_embedding``
  is added; ``depth`` pre-LN ``EncoderBlock``s, a final LayerNorm, the mean
  over tokens and a linear head follow. No dropout. Not a chain network:
  residual additions, softmax attention and LayerNorm break SWR's
  proportionality theorem; SWR still bounds the weight norms.

  Args:
    in_shape: ``(height, width, channels)`` of one image.
    num_classes: size of the logits.
    dim: token dimension.
    depth: number of encoder blocks.
    heads: attention heads; must divide ``dim``.
    mlp_dim: hidden units of each block's MLP.
    patch_size: height and width of a patch in pixels.
    conv_impl: how the patch embedding computes (``"xla"`` or
      ``"patches"``).
    rngs: the initialisation's random streams.
  """

  def __init__(
    self,
    in_shape: Sequence[int],
    num_classes: int = 10,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_dim: int = 128,
    patch_size: int = 4,
    conv_impl: patch_conv.ConvImpl = "xla",
    *,
    rngs: nnx.Rngs,
  ):
    tokens = num_patches(in_shape, patch_size)
    patch = (patch_size, patch_size)
    self.patch_embed = nnx.Conv(
      in_shape[-1],
      dim,
      patch,
      patch,
      padding="VALID",
      rngs=rngs,
      **patch_conv.conv_kwargs(conv_impl),
    )
    init = jax.nn.initializers.normal(POS_EMBEDDING_STDDEV)
    self.pos_embedding = nnx.Param(init(rngs.params(), (tokens, dim)))
    self.blocks = List(
      [EncoderBlock(dim, heads, mlp_dim, rngs=rngs) for _ in range(depth)]
    )
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.patch_embed(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1]) + self.pos_embedding
    for block in self.blocks:
      x = block(x)
    x = self.norm(x).mean(axis=1)
    return self.head(x)


MODELS: dict[str, type[nnx.Module]] = {
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
) -> nnx.Module:
  """Builds a model of the zoo, in training mode.

  Args:
    name: one of ``ALL_MODELS``.
    num_classes: size of the logits.
    in_shape: shape of one input, e.g. ``(32, 32, 3)``; image models need
      ``(height, width, channels)``.
    width: ``None`` for the paper's sizes, or a smaller width for tests; see
      ``examples.models.shapes.model_kwargs`` for what it means for each model.
    seed: seed of the initialisation.
    conv_impl: how convolutions compute: ``"xla"``
      (``lax.conv_general_dilated``) or ``"patches"``
      (``examples/models/patch_conv.py``); ``None``: ``"patches"`` on the
      CPU, ``"xla"`` elsewhere. The params are the same.

  Returns:
    The model, with the same parameter shapes as
    ``examples.models.linen.create``.
  """
  kwargs = model_kwargs(name, in_shape, width, conv_impl)
  rngs = nnx.Rngs(seed)
  if name == "mlp":
    in_features = math.prod(in_shape)
    return MLP(in_features, num_classes=num_classes, **kwargs, rngs=rngs)
  return MODELS[name](in_shape, num_classes=num_classes, **kwargs, rngs=rngs)
