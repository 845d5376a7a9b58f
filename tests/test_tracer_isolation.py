"""The tracers observe a copy of the model and patch nothing.

A trace must not reach beyond its own copy: two threads tracing two models
built from the same classes at the same time each get their own layers, and
the user's classes and module instances are the same objects, with the same
attributes, during and after a trace (Linen, NNX, Equinox; scanned stacks
included).
"""

from __future__ import annotations

from collections.abc import Callable
import concurrent.futures
import threading
from typing import Any

from flax import linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import pytest

import optax_swr
from tests import test_scanned_stacks as stacks

eqx = pytest.importorskip("equinox")

X = jnp.ones((3, 4))
# Both models have the layers `a` and `b`; they call them in opposite orders.
ORDERS = (("a", "b"), ("b", "a"))
TIMEOUT_S = 120


def no_op(step: int) -> None:
  del step


class LinenPair(nn.Module):
  order: tuple[str, ...]

  @nn.compact
  def __call__(self, x, meet: Callable[[int], None] = no_op):
    layers = {name: nn.Dense(4, name=name) for name in sorted(self.order)}
    for step, name in enumerate(self.order):
      meet(step)
      x = nn.relu(layers[name](x))
    return x


class NnxPair(nnx.Module):
  def __init__(self, order: tuple[str, ...], rngs: nnx.Rngs):
    self.order = order
    self.a = nnx.Linear(4, 4, rngs=rngs)
    self.b = nnx.Linear(4, 4, rngs=rngs)

  def __call__(self, x, meet: Callable[[int], None] = no_op):
    for step, name in enumerate(self.order):
      meet(step)
      x = nnx.relu(getattr(self, name)(x))
    return x


class EqxPair(eqx.Module):
  a: eqx.nn.Linear
  b: eqx.nn.Linear
  order: tuple[str, ...] = eqx.field(static=True)

  def __init__(self, order: tuple[str, ...], key: jax.Array):
    a, b = jax.random.split(key)
    self.a = eqx.nn.Linear(4, 4, key=a)
    self.b = eqx.nn.Linear(4, 4, key=b)
    self.order = order

  def __call__(self, x, meet: Callable[[int], None] = no_op):
    for step, name in enumerate(self.order):
      meet(step)
      x = jax.nn.relu(getattr(self, name)(x))
    return x


def pair_tracer(framework: str, order: tuple[str, ...]) -> Callable[..., Any]:
  """``trace(meet)``: the layers of a fresh pair model, traced."""
  if framework == "linen":
    module = LinenPair(order)
    variables = module.init(jax.random.key(0), X)
    return lambda meet: optax_swr.layers_from_linen(
      module, variables, X, meet=meet
    )
  if framework == "nnx":
    model = NnxPair(order, nnx.Rngs(0))
    return lambda meet: optax_swr.layers_from_nnx(model, X, meet=meet)
  model = EqxPair(order, jax.random.key(0))
  return lambda meet: optax_swr.layers_from_equinox(model, X[0], meet=meet)


def wait(event: threading.Event) -> None:
  if not event.wait(TIMEOUT_S):
    raise TimeoutError("the other trace never got there")


class Interleaving:
  """Two traces whose layer calls interleave at fixed points.

  The second trace starts once the first is inside its forward pass; the
  two meet at a barrier before their first layer call, and the second makes
  its first call after the first's. So both tracers are active whenever
  either model calls a layer, and a tracer that reached beyond its own copy
  would see the other model's first call before its own model's.
  """

  def __init__(self):
    self.barrier = threading.Barrier(2, timeout=TIMEOUT_S)
    self.first_inside = threading.Event()
    self.first_called = threading.Event()

  def first(self, step: int) -> None:
    if step == 0:
      self.first_inside.set()
      self.barrier.wait()
    elif step == 1:
      self.first_called.set()

  def second(self, step: int) -> None:
    if step == 0:
      self.barrier.wait()
      wait(self.first_called)

  def start_second(self, trace: Callable[..., Any]) -> Any:
    wait(self.first_inside)
    return trace(self.second)


FRAMEWORKS = ["linen", "nnx", "equinox"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_two_threads_tracing_at_once_each_get_their_own_layers(framework):
  first, second = [pair_tracer(framework, order) for order in ORDERS]
  interleaving = Interleaving()
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    futures = [
      pool.submit(first, interleaving.first),
      pool.submit(interleaving.start_second, second),
    ]
    traced = [future.result() for future in futures]
  for order, layers in zip(ORDERS, traced):
    assert [layer.name for layer in layers] == list(order)
  # The same traces one at a time give the same answer.
  for order, trace in zip(ORDERS, (first, second)):
    assert [layer.name for layer in trace(no_op)] == list(order)


# What "unchanged" means: the same objects under the same names. A dict in a
# class is compared by its items: Flax's lifted transforms (nn.scan) replace
# a class's __dataclass_fields__ by an equal copy at every apply.
def class_snapshot(classes: set[type]) -> dict[type, dict[str, Any]]:
  return {
    cls: {
      k: dict(v) if isinstance(v, dict) else v for k, v in vars(cls).items()
    }
    for cls in classes
  }


def instance_snapshot(instances: list[Any]) -> list[tuple[type, dict]]:
  return [(type(x), {k: id(v) for k, v in vars(x).items()}) for x in instances]


def with_bases(types: set[type]) -> set[type]:
  return {cls for t in types for cls in t.__mro__ if cls is not object}


def linen_classes(module: nn.Module, variables: Any, *args: Any) -> set[type]:
  """The classes of every module a plain apply calls."""
  called: set[type] = set()

  def interceptor(next_fun, args, kwargs, context):
    called.add(type(context.module))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    module.apply(variables, *args)
  return called


def eqx_modules(node: Any) -> list[Any]:
  is_module = lambda x: x is not node and isinstance(x, eqx.Module)
  children = jax.tree.leaves(node, is_leaf=is_module)
  below = [eqx_modules(c) for c in children if isinstance(c, eqx.Module)]
  return [node, *(m for modules in below for m in modules)]


class Model:
  """A model to trace: its instances, its classes, and the trace."""

  def __init__(self, instances, classes, trace):
    self.instances = instances
    self.classes = with_bases(classes)
    self.trace = trace


def linen_model(module: nn.Module, x: jax.Array, **call) -> Model:
  variables = module.init(jax.random.key(0), x)
  classes = linen_classes(module, variables, x)
  trace = lambda **kw: optax_swr.layers_from_linen(
    module, variables, x, **call, **kw
  )
  return Model([module], classes, trace)


def nnx_model(model: nnx.Module, x: jax.Array) -> Model:
  instances = [
    node
    for _, node in nnx.iter_graph(model)
    if isinstance(node, (nnx.Module, nnx.Variable))
  ]
  trace = lambda **kw: optax_swr.layers_from_nnx(model, x, **kw)
  return Model(instances, {type(node) for node in instances}, trace)


def eqx_model(model: Any, x: jax.Array, **options) -> Model:
  instances = eqx_modules(model)
  trace = lambda **kw: optax_swr.layers_from_equinox(model, x, **options, **kw)
  return Model(instances, {type(m) for m in instances}, trace)


def stack_input() -> jax.Array:
  return jax.random.normal(jax.random.key(0), (12, 5))


MODELS = {
  "linen": lambda: linen_model(LinenPair(ORDERS[1]), X),
  "nnx": lambda: nnx_model(NnxPair(ORDERS[1], nnx.Rngs(0)), X),
  "equinox": lambda: eqx_model(EqxPair(ORDERS[1], jax.random.key(0)), X[0]),
  "linen_scan": lambda: linen_model(stacks.LinenStack(), stack_input()),
  "nnx_scan": lambda: nnx_model(stacks.NnxStack(nnx.Rngs(0)), stack_input()),
  "equinox_scan": lambda: eqx_model(
    stacks.EqxStack(jax.random.key(0)),
    stack_input(),
    apply=lambda m, x: jax.vmap(m)(x),
  ),
}
# The pair models call `meet` before each layer: checked during the trace too.
PROBED = {"linen", "nnx", "equinox"}


@pytest.mark.parametrize("name", MODELS)
def test_a_trace_leaves_the_users_classes_and_instances_unchanged(name):
  model = MODELS[name]()
  classes = class_snapshot(model.classes)
  instances = instance_snapshot(model.instances)
  methods = {
    cls: cls.__call__ for cls in model.classes if "__call__" in dir(cls)
  }
  probes = []

  def unchanged(step: int = -1):
    probes.append(step)
    assert class_snapshot(model.classes) == classes
    assert instance_snapshot(model.instances) == instances
    for cls, method in methods.items():
      assert cls.__call__ is method, cls

  layers = model.trace(meet=unchanged) if name in PROBED else model.trace()
  assert len(layers) >= 2
  assert probes == ([0, 1] if name in PROBED else [])
  unchanged()


def test_wrapped_stateful_layers_still_get_the_state_in_eqx_sequential():
  """eqx.nn.Sequential hands the state only to StatefulLayer instances: the
  wrapper of a BatchNorm must be one."""
  keys = jax.random.split(jax.random.key(0))
  model, state = eqx.nn.make_with_state(eqx.nn.Sequential)(
    [
      eqx.nn.Linear(4, 4, key=keys[0]),
      eqx.nn.BatchNorm(4, axis_name="batch", mode="batch"),
      eqx.nn.Lambda(jax.nn.relu),
      eqx.nn.Linear(4, 2, key=keys[1]),
    ]
  )
  train = lambda m, x, s: jax.vmap(
    m, axis_name="batch", in_axes=(0, None), out_axes=(0, None)
  )(x, s)
  layers = optax_swr.layers_from_equinox(model, X, state, apply=train)
  assert [layer.path for layer in layers] == [
    ("layers", 0),
    ("layers", 1),
    ("layers", 3),
  ]
  assert [layer.norm for layer in layers] == [False, True, False]
