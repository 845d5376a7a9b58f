"""One process of a multi-process Adam + SWR run on CPU; prints a JSON report.

Started by tests/test_multihost.py as::

  python tests/multihost_run.py PROCESS_ID NUM_PROCESSES PORT

Each process simulates ``8 // NUM_PROCESSES`` CPU devices and joins the
others through ``jax.distributed`` (coordinator on localhost:PORT, CPU
collectives through gloo). The 8 devices of all processes form one mesh axis;
params, Adam moments and the batch are sharded over it (FSDP), SWR's state is
replicated. With NUM_PROCESSES=1 the same program runs in one process, which
is the reference.

Before training, the worker prints ``COLLECTIVES_OK`` to stderr once a sum
over all processes' devices has come back right; a failure before that line
means this JAX cannot run CPU collectives here, not that SWR is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import json
import os
import sys
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

import optax_swr

GLOBAL_DEVICES = 8
STEPS = 4
BATCH = 64
CLASSES = 16
SIZES = (64, 64, 64, CLASSES)  # Input width, then each Dense layer's units.
AXIS = "fsdp"
COLLECTIVES_OK = "COLLECTIVES_OK"


def start(process_id: int, num_processes: int, port: int) -> None:
  """Joins the run: must come before anything touches a JAX backend."""
  local = GLOBAL_DEVICES // num_processes
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count={local}"
  ).strip()
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=f"localhost:{port}",
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=60,
  )


def check_collectives(mesh: Mesh) -> None:
  """Sums a value over every device of every process; raises if it is off."""
  ones = jax.make_array_from_callback(
    (GLOBAL_DEVICES,),
    NamedSharding(mesh, P(AXIS)),
    lambda index: np.ones(GLOBAL_DEVICES, np.float32)[index],
  )
  total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(ones)
  if float(total.addressable_data(0)) != GLOBAL_DEVICES:
    raise RuntimeError(f"a sum over {GLOBAL_DEVICES} ones gave {total}")
  print(COLLECTIVES_OK, file=sys.stderr, flush=True)


def global_params() -> dict[str, dict[str, np.ndarray]]:
  """The same numbers in every process: drawn from a fixed seed."""
  rng = np.random.default_rng(0)
  return {
    f"Dense_{i}": {
      "kernel": (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(
        np.float32
      ),
      "bias": (rng.normal(size=(n_out,)) / 10).astype(np.float32),
    }
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:]))
  }


def global_batches() -> list[tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(1)
  return [
    (
      rng.normal(size=(BATCH, SIZES[0])).astype(np.float32),
      rng.integers(0, CLASSES, BATCH).astype(np.int32),
    )
    for _ in range(STEPS)
  ]


def fsdp_spec(leaf: np.ndarray) -> P:
  """Shards the first axis over all devices (every axis here divides by 8)."""
  return P(AXIS, *([None] * (leaf.ndim - 1)))


def to_global(
  tree: Any, mesh: Mesh, spec_fn: Callable[[np.ndarray], P] = fsdp_spec
) -> Any:
  """Global arrays; each process only fills in its own devices' shards."""
  return jax.tree.map(
    lambda leaf: jax.make_array_from_callback(
      leaf.shape, NamedSharding(mesh, spec_fn(leaf)), lambda index: leaf[index]
    ),
    tree,
  )


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  for i in range(len(SIZES) - 1):
    layer = params[f"Dense_{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    x = jax.nn.relu(x) if i < len(SIZES) - 2 else x
  return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def train(mesh: Mesh) -> tuple[dict, dict, optax_swr.SWRState, list[float]]:
  """STEPS of Adam + SWR; returns params, Adam's mu, SWR's state, losses."""
  tx = optax.chain(optax.adam(1e-2), optax_swr.swr(0.3, reset_norms_at=(2,)))
  params = to_global(global_params(), mesh)
  param_shardings = jax.tree.map(lambda a: a.sharding, params)
  replicated = NamedSharding(mesh, P())
  # Adam's moments are sharded like the params; the rest is replicated.
  state_shardings = optax.tree_map_params(
    tx,
    lambda _, sharding: sharding,
    jax.eval_shape(tx.init, params),
    param_shardings,
    transform_non_params=lambda _: replicated,
  )
  state = jax.jit(tx.init, out_shardings=state_shardings)(params)

  @functools.partial(
    jax.jit, out_shardings=(param_shardings, state_shardings, replicated)
  )
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for batch in global_batches():
    x, y = to_global(batch, mesh)
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss.addressable_data(0)))
  return params, state[0][0].mu, state[1], losses


def report(
  params: dict,
  adam_mu: dict,
  swr_state: optax_swr.SWRState,
  losses: list[float],
) -> dict:
  """What the test compares: full params from all processes, the SWR state."""
  local_copies = [
    [np.asarray(shard.data) for shard in leaf.addressable_shards]
    for leaf in jax.tree.leaves(swr_state)
  ]
  gathered = multihost_utils.process_allgather(params, tiled=True)
  return {
    "process_index": jax.process_index(),
    "process_count": jax.process_count(),
    "local_devices": jax.local_device_count(),
    "global_devices": jax.device_count(),
    "param_shard_shape": list(
      params["Dense_0"]["kernel"].addressable_shards[0].data.shape
    ),
    "moment_shard_shape": list(
      adam_mu["Dense_0"]["kernel"].addressable_shards[0].data.shape
    ),
    "losses": losses,
    "params": jax.tree.map(lambda a: np.asarray(a).tolist(), gathered),
    "swr_state": {
      name: np.asarray(value.addressable_data(0)).tolist()
      for name, value in swr_state._asdict().items()
      if name != "deferred_factors"  # () for the chained swr
    },
    "swr_state_replicated": all(
      leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(swr_state)
    ),
    "swr_state_same_on_local_devices": all(
      np.array_equal(copy, copies[0])
      for copies in local_copies
      for copy in copies
    ),
  }


def main(argv: list[str]) -> None:
  process_id, num_processes, port = map(int, argv)
  start(process_id, num_processes, port)
  mesh = Mesh(np.array(jax.devices()), (AXIS,))
  check_collectives(mesh)
  result = report(*train(mesh))
  print(json.dumps(result), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
