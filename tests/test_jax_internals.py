"""A higher-order primitive the tables do not know is pinned, never skipped.

``optax_swr._jax_internals`` lists the call-like primitives whose inside the
analysis walks. One it does not know (a new JAX release's name, another
library's primitive) carries layers the walk cannot see: they keep their
scale, and a ConstrainedLayersWarning names the primitive.
"""

from __future__ import annotations

from flax import linen as nn
import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

import optax_swr
from optax_swr import _jax_internals

eqx = pytest.importorskip("equinox")

# A call-like primitive of another library: its sub-jaxpr is a param.
opaque_call_p = jex_core.Primitive("opaque_call")
opaque_call_p.multiple_results = True
opaque_call_p.def_abstract_eval(lambda *avals, jaxpr: jaxpr.out_avals)


def opaque_call(fun, *args):
  """``fun(*args)`` (one array out), traced inside ``opaque_call_p``."""
  leaves, treedef = jax.tree.flatten(args)
  jaxpr = jax.make_jaxpr(lambda *xs: fun(*jax.tree.unflatten(treedef, xs)))(
    *leaves
  )
  return opaque_call_p.bind(*leaves, jaxpr=jaxpr)[0]


class OpaqueHead(eqx.Module):
  """body, then a parameter-free LayerNorm and the head inside the call."""

  body: eqx.nn.Linear
  norm: eqx.nn.LayerNorm
  head: eqx.nn.Linear

  def __init__(self, key):
    body, head = jax.random.split(key)
    self.body = eqx.nn.Linear(4, 8, key=body)
    self.norm = eqx.nn.LayerNorm(8, use_weight=False, use_bias=False)
    self.head = eqx.nn.Linear(8, 3, key=head)

  def __call__(self, x):
    h = jax.nn.relu(self.body(x))
    inside, static = eqx.partition((self.norm, self.head), eqx.is_array)

    def run(inside, h):
      norm, head = eqx.combine(inside, static)
      return head(norm(h))

    return opaque_call(run, inside, h)


def pinned(layers):
  return {
    l.name for l, c in zip(layers, layers.graph.classes()) if c == "pinned"
  }


def test_an_unknown_primitive_pins_what_it_calls_and_names_itself():
  with pytest.warns(
    optax_swr.ConstrainedLayersWarning,
    match=r"`opaque_call` \(a higher-order primitive not followed\)",
  ) as record:
    layers = optax_swr.layers_from_equinox(
      OpaqueHead(jax.random.key(0)), jnp.ones(4)
    )
  assert [layer.name for layer in layers] == ["body", "norm", "head"]
  # body feeds the call; the norm, without params, is pinned because it is
  # called inside (no operand of the call is its).
  assert pinned(layers) == {"body", "norm", "head"}
  message = str(record[0].message)
  assert "that calls norm" in message and "that calls head" in message


class RematChain(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(8, name="body")(x))
    return nn.remat(nn.Dense)(3, name="head")(h)


def test_a_call_missing_from_the_tables_is_pinned_not_walked(monkeypatch):
  module, x = RematChain(), jax.random.normal(jax.random.key(0), (8, 4))
  variables = module.init(jax.random.key(1), x)
  known = optax_swr.layers_from_linen(module, variables, x)
  assert known.graph is None  # walked inside the remat: a chain
  (remat,) = {
    e.primitive.name for e in jax.make_jaxpr(module.apply)(variables, x).eqns
  } & {"remat", "remat2", "checkpoint"}  # its name in this JAX release
  monkeypatch.setattr(_jax_internals, "CALLS", _jax_internals.CALLS - {remat})
  with pytest.warns(
    optax_swr.ConstrainedLayersWarning, match=f"`{remat}` \\(a higher"
  ):
    unknown = optax_swr.layers_from_linen(module, variables, x)
  assert pinned(unknown) == {"body", "head"}
  # Left alone, the network's function is kept: SWR rescales neither.
  report = optax_swr.check_proportional(
    lambda p, x: module.apply({"params": p}, x),
    variables["params"],
    unknown,
    x,
  )
  assert report.relative_error < 1e-6, report
  assert np.allclose(report.predicted_scale, 1.0)
