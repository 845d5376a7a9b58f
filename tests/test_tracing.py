"""Layer order traced from Linen and NNX models, and the chain check."""

from __future__ import annotations

import dataclasses
import re
import warnings

from flax import linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_swr

X = jnp.ones((2, 8, 8, 1))


def linen_layers(module, x=X, **kwargs):
  variables = module.init(jax.random.key(0), x)
  return paths(optax_swr.layers_from_linen(module, variables, x, **kwargs))


def paths(layers):
  return tuple(layer.path for layer in layers)


@pytest.fixture
def no_chain_warning():
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    yield


class TwelveDense(nn.Module):
  """Constructed head first: Linen numbers Dense_0 the head."""

  @nn.compact
  def __call__(self, x):
    head = nn.Dense(3)
    x = x.reshape(x.shape[0], -1)
    for _ in range(11):
      x = nn.relu(nn.Dense(5)(x))
    return head(x)


def test_linen_order_is_the_call_order_not_the_name_order(no_chain_warning):
  order = linen_layers(TwelveDense())
  assert order == tuple((f"Dense_{i}",) for i in [*range(1, 12), 0])


class ConvBNHead(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
    x = nn.Dropout(0.5, deterministic=not train)(x)  # no params: skipped
    x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
    return nn.Dense(3, name="a_head")(x)


def test_linen_train_mode_with_batchnorm_and_dropout_is_a_chain(
  no_chain_warning,
):
  order = linen_layers(
    ConvBNHead(), train=True, rngs={"dropout": jax.random.key(1)}
  )
  assert order == (("conv",), ("bn",), ("a_head",))


def test_abstract_inputs_are_enough(no_chain_warning):
  module = ConvBNHead()
  variables = module.init(jax.random.key(0), X)
  abstract = jax.ShapeDtypeStruct((16, 8, 8, 1), jnp.float32)
  assert paths(optax_swr.layers_from_linen(module, variables, abstract)) == (
    ("conv",),
    ("bn",),
    ("a_head",),
  )


class OwnKernel(nn.Module):
  """A custom layer that owns its kernel directly."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (x.shape[-1], 4)
    )
    return x @ kernel


class WithCustomLayer(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(OwnKernel(name="z_custom")(x.reshape(x.shape[0], -1)))
    return nn.Dense(2)(x)


def test_custom_module_owning_a_kernel_is_a_layer(no_chain_warning):
  assert linen_layers(WithCustomLayer()) == (("z_custom",), ("Dense_0",))


class KernelAndChildren(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    kernel = self.param("kernel", nn.initializers.ones, (x.shape[-1], 4))
    return nn.Dense(2)(x @ kernel)


def test_module_owning_a_weight_and_layers_is_rejected():
  with pytest.raises(
    ValueError,
    match=re.escape(
      "the module at () owns a weight and also contains the layers [('Dense_0',)]"
    ),
  ):
    linen_layers(KernelAndChildren())


class Shared(nn.Module):
  @nn.compact
  def __call__(self, x):
    dense = nn.Dense(64)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(3)(dense(nn.relu(dense(x))))


def test_shared_module_counts_once_and_its_inputs_share_a_scale():
  module = Shared()
  variables = module.init(jax.random.key(0), X)
  with pytest.warns(optax_swr.ConstrainedLayersWarning, match="Dense_0"):
    layers = optax_swr.layers_from_linen(module, variables, X)
  assert paths(layers) == (("Dense_0",), ("Dense_1",))
  assert "Dense_0, called more than once" in layers.graph.notes
  report = optax_swr.check_proportional(
    lambda p, x: module.apply({"params": p}, x), variables["params"], layers, X
  )
  assert report.relative_error < 1e-5


class AuxHead(nn.Module):
  @nn.compact
  def __call__(self, x, aux: bool = False):
    x = nn.relu(nn.Dense(3, name="used")(x.reshape(x.shape[0], -1)))
    return nn.Dense(3, name="spare")(x) if aux else x


def test_layers_never_called_are_left_out_with_a_warning():
  module = AuxHead()
  variables = module.init(jax.random.key(0), X, aux=True)
  with pytest.warns(
    UserWarning, match=re.escape("never called") + r".*\('spare',\)"
  ):
    order = optax_swr.layers_from_linen(module, variables, X, aux=False)
  assert paths(order) == (("used",),)


class Residual(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3))(x)
    y = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(2)((x + y).mean((1, 2)))


class Tanh(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(2)(nn.tanh(nn.Dense(4)(x.reshape(x.shape[0], -1))))


class Attention(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8)(x.reshape(x.shape[0], 8, 8))
    x = nn.MultiHeadDotProductAttention(num_heads=2)(x)
    return nn.Dense(2)(x.mean(1))


class Shifted(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(4)(x.reshape(x.shape[0], -1)) + 1.0)
    return nn.Dense(2)(x)


@pytest.mark.parametrize(
  "module, note",
  [
    (Residual(), "a residual merge of [Conv_0] and [Conv_0, Conv_1]"),
    (Tanh(), "`tanh` (not positively homogeneous)"),
    (Attention(), "`exp` (not positively homogeneous)"),
    (Shifted(), "`add` of Dense_0 with the constant 1"),
  ],
  ids=["residual", "tanh", "attention", "constant_shift"],
)
def test_non_chain_networks_keep_their_function_exactly(module, note):
  """Each equation the trace finds is kept; the chain rule alone is not."""
  variables = module.init(jax.random.key(0), X)
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    warnings.simplefilter("ignore", optax_swr.ConstrainedLayersWarning)
    layers = optax_swr.layers_from_linen(module, variables, X)
  assert any(note in found for found in layers.graph.notes), layers.graph.notes
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  exact = optax_swr.check_proportional(apply_fn, variables["params"], layers, X)
  chain_rule = optax_swr.check_proportional(
    apply_fn, variables["params"], layers.chain_rule(), X
  )
  assert exact.relative_error < 1e-5, exact
  assert abs(exact.fitted_scale / exact.predicted_scale - 1) < 1e-5
  assert chain_rule.relative_error > 1e-3, chain_rule


def test_no_params_collection_is_an_error():
  with pytest.raises(
    ValueError, match="`variables` has no 'params' collection"
  ):
    optax_swr.layers_from_linen(TwelveDense(), {"batch_stats": {}}, X)


class NnxNet(nnx.Module):
  """Attribute names sort as bn, conv, head, layers; the call order differs."""

  def __init__(self, rngs):
    self.head = nnx.Linear(6, 3, rngs=rngs)
    self.conv = nnx.Conv(1, 4, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    node_list = getattr(nnx, "List", list)
    self.layers = node_list([nnx.Linear(256, 6, rngs=rngs)])
    self.unused_like = nnx.Linear(2, 2, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    x = self.layers[0](x.reshape(x.shape[0], -1))
    return self.head(nnx.relu(x))


def test_nnx_order_paths_match_the_optimizer_state(no_chain_warning):
  model = NnxNet(nnx.Rngs(0))
  with pytest.warns(UserWarning, match="unused_like"):
    order = optax_swr.layers_from_nnx(model, X)
  assert paths(order) == (("conv",), ("bn",), ("layers", 0), ("head",))
  # Paths resolve against what nnx.Optimizer hands to swr.
  import optax

  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-2, layers=order))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  assert optax.tree.get(optimizer.opt_state, "reference_norms").shape == (4,)


def test_nnx_tracing_leaves_the_model_and_classes_untouched():
  model = NnxNet(nnx.Rngs(0))
  before = jax.tree.map(np.asarray, nnx.state(model))
  linear_call = nnx.Linear.__call__
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    optax_swr.layers_from_nnx(model, X)
  after = jax.tree.map(np.asarray, nnx.state(model))
  jax.tree.map(np.testing.assert_array_equal, before, after)
  assert nnx.Linear.__call__ is linear_call
  assert (
    "__call__" not in nnx.Conv.__dict__
    or nnx.Conv.__call__.__name__ == "__call__"
  )


class NnxResidual(nnx.Module):
  def __init__(self, rngs):
    self.a = nnx.Linear(4, 4, rngs=rngs)
    self.b = nnx.Linear(4, 4, rngs=rngs)

  def __call__(self, x):
    h = self.a(x)
    return self.b(nnx.relu(h)) + h


def test_nnx_residual_keeps_its_function():
  model = NnxResidual(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (16, 4))
  with warnings.catch_warnings():
    warnings.simplefilter("error", optax_swr.NotAChainWarning)
    layers = optax_swr.layers_from_nnx(model, x)
  graphdef, params = nnx.split(model, nnx.Param)
  report = optax_swr.check_proportional(
    lambda p, x: nnx.merge(graphdef, p)(x), params, layers, x
  )
  assert report.relative_error < 1e-5


class SetupLayers(nn.Module):
  """Layers defined in setup, in the opposite order to their calls."""

  def setup(self):
    self.second = nn.Dense(2)
    self.first = nn.Dense(4)

  def __call__(self, x):
    _ = self.second.variables  # touches `second` (runs its setup) first
    return self.second(nn.relu(self.first(x.reshape(x.shape[0], -1))))


def test_linen_setup_order_does_not_matter(no_chain_warning):
  assert linen_layers(SetupLayers()) == (("first",), ("second",))


class WhileLoop(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(4)(x.reshape(x.shape[0], -1))
    x = jax.lax.while_loop(lambda h: jnp.sum(h) < 0, nn.relu, x)
    return nn.Dense(2)(x)


def test_control_flow_is_reported_not_assumed_fine():
  with pytest.warns(
    optax_swr.NotAChainWarning,
    match=r"`while` after Dense_0 at test_tracing.py:\d+ \(WhileLoop.__call__\): "
    "data flow through control flow is not",
  ):
    linen_layers(WhileLoop())


LINEN_NORMS_WITHOUT_SCALE = {
  "layer_norm": lambda: nn.LayerNorm(use_scale=False),
  "batch_norm": lambda: nn.BatchNorm(
    use_running_average=False, use_scale=False
  ),
  "group_norm": lambda: nn.GroupNorm(num_groups=4, use_scale=False),
  "no_params": lambda: nn.LayerNorm(use_scale=False, use_bias=False),
}


@pytest.mark.parametrize("kind", LINEN_NORMS_WITHOUT_SCALE)
def test_linen_norm_layers_without_scale_restart_the_factor(kind):
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Dense(16)(x)
      x = LINEN_NORMS_WITHOUT_SCALE[kind]()(x)
      return nn.Dense(4)(nn.relu(nn.Dense(16)(nn.relu(x))))

  x = jax.random.normal(jax.random.key(0), (64, 8))
  module = Net()
  variables = module.init(jax.random.key(1), x)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # the norm's internals are not blamed
    layers = optax_swr.layers_from_linen(module, variables, x)
  norm = layers[1]
  assert norm.norm and norm.weight is None and len(layers) == 4
  assert (norm.bias is None) == (kind == "no_params")

  def apply_fn(params, x):
    out, _ = module.apply(
      {**variables, "params": params}, x, mutable=["batch_stats"]
    )
    return out

  report = optax_swr.check_proportional(
    apply_fn, variables["params"], layers, x
  )
  assert report.relative_error <= 1e-4, report


def test_nnx_norm_layers_without_scale_restart_the_factor():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.fc1 = nnx.Linear(8, 16, rngs=rngs)
      self.ln = nnx.LayerNorm(16, use_scale=False, rngs=rngs)
      self.bn = nnx.BatchNorm(16, use_scale=False, use_bias=False, rngs=rngs)
      self.fc2 = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
      return self.fc2(nnx.relu(self.bn(self.ln(self.fc1(x)))))

  x = jax.random.normal(jax.random.key(0), (64, 8))
  model = Net(nnx.Rngs(0))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    layers = optax_swr.layers_from_nnx(model, x)
  assert [(layer.name, layer.norm) for layer in layers] == [
    ("fc1", False),
    ("ln", True),
    ("bn", True),
    ("fc2", False),
  ]
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  report = optax_swr.check_proportional(
    lambda p, x: nnx.merge(graphdef, p, rest)(x), params, layers, x
  )
  assert report.relative_error <= 1e-4, report


class Conflicting(nn.Module):
  """Dense_0 feeds a softmax and, unscaled by it, a residual merge."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(4)(x.reshape(x.shape[0], -1))
    return nn.Dense(2)(nn.relu(jax.nn.softmax(h) + h))


def test_conflicting_uses_pin_the_layer_and_name_it_and_the_operations():
  """The equations always have a solution (all factors 1); where they force
  a layer's factor to 1, the warning says which layer and which operations,
  and SWR leaves exactly that layer alone while keeping the function."""
  module = Conflicting()
  variables = module.init(jax.random.key(0), X)
  with pytest.warns(optax_swr.ConstrainedLayersWarning) as record:
    layers = optax_swr.layers_from_linen(module, variables, X)
  message = str(record[0].message)
  assert "['Dense_0']" in message, message
  assert "`exp` (not positively homogeneous)" in message, message
  assert "`add` of Dense_0 with" in message, message
  params = jax.tree.map(lambda p: 3.0 * p + 0.1, variables["params"])
  tx = optax_swr.swr(0.5, layers=layers)
  _, state = tx.update(
    jax.tree.map(jnp.zeros_like, params), tx.init(variables["params"]), params
  )
  assert state.layer_scales[0] == 1.0 and state.layer_scales[1] < 0.9
  report = optax_swr.check_proportional(
    lambda p, x: module.apply({"params": p}, x), params, layers, X
  )
  assert report.relative_error < 1e-5 and report.pinned_layers == ("Dense_0",)


# Modules that own a weight are walked inside, not assumed to be affine.


class TanhKernel(nn.Module):
  """A custom layer that owns its kernel and applies tanh inside."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (8, 8))
    return jnp.tanh(x @ kernel)


class ShiftedKernel(nn.Module):
  """A custom layer with an extra additive parameter (not named bias)."""

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (8, 8))
    shift = self.param("shift", nn.initializers.normal(1.0), (8,))
    return x @ kernel + shift


class LayerScale(nn.Module):
  """CaiT's LayerScale: a per-channel gain, named like a norm's scale."""

  @nn.compact
  def __call__(self, x):
    return x * self.param("scale", nn.initializers.constant(0.1), (8,))


def custom_net(block):
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Dense(8, name="first")(x))
      x = nn.relu(block(name="custom")(x))
      return nn.Dense(3, name="head")(x)

  return Net()


@pytest.mark.parametrize(
  "block, note",
  [
    (TanhKernel, "`tanh` (not positively homogeneous) after first, custom"),
    (ShiftedKernel, "`add` of first, custom with the param 'custom/shift'"),
    (LayerScale, None),
  ],
  ids=["tanh_inside", "extra_parameter", "layer_scale"],
)
def test_modules_owning_a_weight_are_walked_inside(block, note):
  """A tanh, an extra additive parameter or a LayerScale gain inside a
  module that owns a weight changed the logits by 0.10, 3.7% and 0.18 with
  no warning (the module was taken for an affine layer, the gain for a
  norm); now the trace sees them and SWR keeps the function."""
  module = custom_net(block)
  x = jax.random.normal(jax.random.key(0), (32, 4))
  variables = module.init(jax.random.key(1), x)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # exact: tied, nothing pinned
    layers = optax_swr.layers_from_linen(module, variables, x)
  custom = layers[1]
  assert custom.name == "custom" and not custom.norm
  if note is not None:
    assert any(n.startswith(note) for n in layers.graph.notes), layers.graph
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  report = optax_swr.check_proportional(
    apply_fn, variables["params"], layers, x
  )
  assert report.relative_error < 1e-5, report
  if block is LayerScale:  # a chain: what mattered was not taking it for a norm
    assert layers.graph is None
    as_norm = [layers[0], dataclasses.replace(custom, norm=True), layers[2]]
    wrong = optax_swr.check_proportional(
      apply_fn, variables["params"], as_norm, x
    )
  else:
    wrong = optax_swr.check_proportional(
      apply_fn, variables["params"], layers.chain_rule(), x
    )
  assert wrong.relative_error > 1e-2, wrong


def test_nnx_lora_linear_keeps_the_function_once_lora_b_is_trained():
  """nnx.LoRALinear adds x @ A @ B to its kernel's output: 0.11 error once B
  is non-zero, silently. Now its kernel is tied to the adapter's scale."""

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.fc = nnx.Linear(6, 8, rngs=rngs)
      self.lora = nnx.LoRALinear(8, 8, lora_rank=2, rngs=rngs)
      self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
      return self.head(nnx.relu(self.lora(nnx.relu(self.fc(x)))))

  model = Net(nnx.Rngs(0))
  lora_b = model.lora.lora.lora_b
  lora_b[...] = jax.random.normal(jax.random.key(3), lora_b[...].shape)
  x = jax.random.normal(jax.random.key(1), (16, 6))
  with pytest.warns(
    optax_swr.ConstrainedLayersWarning, match=r"\['lora'\].*lora\.py:\d+"
  ):
    layers = optax_swr.layers_from_nnx(model, x)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  apply_fn = lambda p, x: nnx.merge(graphdef, p, rest)(x)
  report = optax_swr.check_proportional(apply_fn, params, layers, x)
  assert report.relative_error < 1e-5, report
  chain_rule = optax_swr.check_proportional(
    apply_fn, params, layers.chain_rule(), x
  )
  assert chain_rule.relative_error > 1e-2, chain_rule


class TinyGPT(nn.Module):
  """A GPT's embedding: token table plus a raw position-embedding param."""

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(16, 8, name="wte")(tokens)
    x = x + self.param("wpe", nn.initializers.normal(0.02), (4, 8))
    h = nn.Dense(8, name="mlp_out")(nn.gelu(nn.Dense(16, name="mlp_in")(x)))
    return nn.Dense(16, name="lm_head")(nn.LayerNorm(name="ln_f")(x + h))


def test_warnings_name_the_culprit_and_point_to_the_users_line():
  module = TinyGPT()
  tokens = jnp.zeros((2, 4), jnp.int32)
  variables = module.init(jax.random.key(0), tokens)
  with pytest.warns(optax_swr.ConstrainedLayersWarning) as caught:
    optax_swr.layers_from_linen(module, variables, tokens)
  message = str(caught[0].message)
  assert "`add` of wte with the param 'wpe'" in message, message
  assert re.search(r"test_tracing\.py:\d+ \(TinyGPT.__call__\)", message)
  assert caught[0].filename == __file__  # the user's call, not optax_swr's


def test_low_precision_warning_points_to_the_users_line():
  import optax

  params = {"Dense_0": {"kernel": jnp.ones((2, 2), jnp.bfloat16)}}
  tx = optax.chain(optax.adam(1e-3), optax_swr.swr(1e-4))
  with pytest.warns(optax_swr.LowPrecisionWarning) as caught:
    tx.init(params)  # through optax.chain's init
  assert caught[0].filename == __file__


class ActorCritic(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
    x = nn.relu(nn.Dense(16)(x))
    return nn.Dense(3, name="policy")(x), nn.Dense(1, name="value")(x)


def test_traced_two_heads_share_one_output_scale_and_stay_exact():
  module = ActorCritic()
  variables = module.init(jax.random.key(0), X)
  layers = optax_swr.layers_from_linen(module, variables, X)
  assert layers.names == ("Dense_0", "Dense_1", "policy", "value")
  assert "the network's outputs" in layers.graph.notes
  apply_fn = lambda p, x: module.apply({"params": p}, x)
  report = optax_swr.check_proportional(
    apply_fn, variables["params"], layers, X
  )
  assert report.relative_error < 1e-5, report
  as_chain = optax_swr.check_proportional(
    apply_fn, variables["params"], layers.chain_rule(), X
  )
  assert as_chain.relative_error > 1e-2, as_chain
