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

"""What optax_swr knows of JAX's internals, in one place.

The analysis of ``_homogeneity`` walks jaxprs. It relies on the names JAX
gives its call-like primitives and on the params that hold their
sub-jaxprs (both change between releases: ``pjit`` became ``jit``, ``remat``
became ``remat2``), on where an equation's source information says it comes
from, and on a primitive of its own that marks a layer's inputs and outputs,
with a batching rule in JAX's global table so that a vmapped model can be
traced. When a JAX release changes one of these, this module is the one to
update; a higher-order primitive missing from the tables is never skipped
(``_homogeneity`` pins what runs inside it and says so).
"""

from __future__ import annotations

from collections.abc import Iterator
import os
from typing import Any

from jax.extend import core as jex_core
from jax.extend import source_info_util
from jax.interpreters import batching

# Marks a layer's input or output (params: ``kind``, ``layer``); the identity.
layer_marker_p = jex_core.Primitive("swr_layer_marker")
layer_marker_p.def_impl(lambda x, **_: x)
layer_marker_p.def_abstract_eval(lambda x, **_: x)
# JAX keeps batching rules in one process-wide table; this entry is for our
# own primitive only, and is the same rule every time the module is loaded.
batching.primitive_batchers[layer_marker_p] = lambda args, dims, **params: (
  layer_marker_p.bind(*args, **params),
  dims[0],
)

# Call-like primitives whose sub-jaxpr maps operands to results one to one,
# under every name a supported JAX release has given them.
CALLS = frozenset(
  {
    "pjit",
    "jit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "remat2",
    "checkpoint",
  }
)
# The params that hold a call's sub-jaxpr.
_CALL_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
# Control flow: its branches and bodies are not followed.
CONTROL_FLOW = frozenset({"cond", "while"})


def call_body(eqn: Any) -> Any:
  """The sub-jaxpr of a call in :data:`CALLS`, taking the call's operands as
  its inputs one to one; ``None`` for any other equation."""
  if eqn.primitive.name not in CALLS:
    return None
  for param in _CALL_JAXPR_PARAMS:
    if param in eqn.params:
      jaxpr = eqn.params[param]
      jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's open jaxpr
      return jaxpr if len(jaxpr.invars) == len(eqn.invars) else None
  return None


def sub_jaxprs(eqn: Any) -> list[Any]:
  """Every jaxpr among the params of ``eqn``: non-empty for a higher-order
  primitive (a call, a loop, a branch, or one this module does not know)."""
  return list(jex_core.jaxprs_in_params(eqn.params))


def is_marker(eqn: Any) -> bool:
  return eqn.primitive is layer_marker_p


def marked_layers(jaxpr: Any) -> Iterator[int]:
  """The layers marked anywhere in ``jaxpr``, its sub-jaxprs included."""
  for eqn in jaxpr.eqns:
    if is_marker(eqn):
      yield eqn.params["layer"]
    for inner in sub_jaxprs(eqn):
      yield from marked_layers(inner)


def location(eqn: Any) -> str:
  """`` at file.py:12 (fn)``: where the operation is in the user's code."""
  try:
    where = source_info_util.summarize(eqn.source_info)
  except Exception:  # pylint: disable=broad-except
    return ""  # A jax version whose source info reads differently.
  path, _, rest = where.partition(":")
  line = rest.split(":")[0].split(" ")[0]
  function = rest.rpartition(" ")[2] if " " in rest else ""
  if not line.isdigit():
    return ""
  return f" at {os.path.basename(path)}:{line}" + (
    f" {function}" if function else ""
  )
