"""Runs Adam + SWR on 8 simulated CPU devices; prints a JSON report.

Started by tests/test_sharding.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8, so that the other tests
keep their single device.

Two kinds of runs, each against one device:

* ``fsdp``, ``data_x_model``: params and optimizer state sharded with
  ``NamedSharding`` under ``jax.jit``; the report also lists the collectives
  in the compiled optimizer step (Adam alone has none, so they are SWR's).
* ``shard_map``, ``pmap``: data parallelism; every device holds the params
  and the state, computes the gradient of its slice of the batch, averages
  it with ``jax.lax.pmean`` and applies Adam + SWR itself.
"""

from __future__ import annotations

import json
import re

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

import optax_swr

STEPS = 5
BATCH = 64  # 8 examples per device.
CLASSES = 64  # The last Dense_3 layer gives the logits.
DATA_AXIS = "data"


def make_params():
  rng = np.random.default_rng(0)
  return {
    f"Dense_{i}": {
      "kernel": rng.normal(size=(64, 64)).astype(np.float32) / 8,
      "bias": rng.normal(size=(64,)).astype(np.float32) / 10,
    }
    for i in range(4)
  }


def train(params, shardings=None):
  """STEPS jitted steps; with shardings, params and state live sharded."""
  tx = optax.chain(optax.adam(0.05), optax_swr.swr(0.3, reset_norms_at=(2,)))
  rng = np.random.default_rng(1)
  grads = [
    jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    for _ in range(STEPS)
  ]
  if shardings is not None:
    params = jax.device_put(params, shardings)
    grads = [jax.device_put(g, shardings) for g in grads]
  state = jax.jit(tx.init)(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for g in grads:
    params, state = step(params, state, g)
  return params, state


def step_collectives(shardings: dict) -> list[str]:
  """The collectives of the compiled optimizer step, e.g. "all-reduce f32[]"."""
  tx = optax.chain(optax.adam(0.05), optax_swr.swr(0.3))
  params = jax.device_put(make_params(), shardings)

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  hlo = jax.jit(step).lower(params, jax.jit(tx.init)(params), params)
  pattern = r"= (.+?) (all-reduce|all-gather|reduce-scatter|all-to-all)\("
  return [
    f"{op} {shape}"
    for shape, op in re.findall(pattern, hlo.compile().as_text())
  ]


def mlp_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
  """Cross-entropy of a ReLU MLP over the Dense_0 ... Dense_3 of make_params."""
  for i in range(4):
    layer = params[f"Dense_{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    x = jax.nn.relu(x) if i < 3 else x
  return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def make_batches() -> list[tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(2)
  return [
    (
      rng.normal(size=(BATCH, 64)).astype(np.float32),
      rng.integers(0, CLASSES, BATCH).astype(np.int32),
    )
    for _ in range(STEPS)
  ]


def data_parallel_tx() -> optax.GradientTransformation:
  return optax.chain(optax.adam(1e-2), optax_swr.swr(0.3, reset_norms_at=(2,)))


def data_parallel_step(
  tx: optax.GradientTransformation,
  axis_name: str | None = None,
  replicated_params: bool = False,
):
  """One training step; with axis_name, on one device's slice of the batch.

  Args:
    tx: the optimizer.
    axis_name: the mapped axis to average the gradients over, if any.
    replicated_params: True under shard_map with params of spec P(). There,
      the gradient with respect to such (device-invariant) params comes back
      already summed over the axis, and pmean would not divide it; the
      gradient is taken at a device-varying copy instead.
  """

  def step(params, state, x, y):
    at = params
    if replicated_params:
      at = jax.lax.pcast(params, axis_name, to="varying")
    loss, grads = jax.value_and_grad(mlp_loss)(at, x, y)
    if axis_name is not None:
      loss, grads = jax.lax.pmean((loss, grads), axis_name)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  return step


def train_one_device() -> tuple[dict, tuple, list[float]]:
  """The reference: every step on the whole batch, on one device."""
  tx = data_parallel_tx()
  params = make_params()
  state = jax.jit(tx.init)(params)
  step = jax.jit(data_parallel_step(tx))
  losses = []
  for x, y in make_batches():
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
  return params, state, losses


def train_shard_map() -> tuple[list, list, list[float]]:
  """Replicated params and state (spec P()), the batch split over 8 devices.

  Returns the per-device copies: ``[device][leaf]`` for params and SWR state.
  """
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
  tx = data_parallel_tx()
  replicated = NamedSharding(mesh, P())
  params = jax.device_put(make_params(), replicated)
  state = jax.jit(tx.init, out_shardings=replicated)(params)
  step = jax.jit(
    jax.shard_map(
      data_parallel_step(tx, DATA_AXIS, replicated_params=True),
      mesh=mesh,
      in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS)),
      out_specs=(P(), P(), P()),
    )
  )
  losses = []
  for x, y in make_batches():
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
  per_device = lambda tree: [
    [
      np.asarray(leaf.addressable_shards[d].data)
      for leaf in jax.tree.leaves(tree)
    ]
    for d in range(len(jax.devices()))
  ]
  return per_device(params), per_device(state[1]), losses


def train_pmap() -> tuple[list, list, list[float]]:
  """jax.pmap: params and state stacked on a leading axis of 8 copies.

  Returns the per-device copies: ``[device][leaf]`` for params and SWR state.
  """
  devices = len(jax.devices())
  tx = data_parallel_tx()
  stack = lambda tree: jax.tree.map(
    lambda a: np.broadcast_to(a, (devices, *np.shape(a))), tree
  )
  params = stack(make_params())
  state = jax.pmap(tx.init)(params)
  step = jax.pmap(data_parallel_step(tx, DATA_AXIS), axis_name=DATA_AXIS)
  losses = []
  for x, y in make_batches():
    split = lambda a: a.reshape(devices, -1, *a.shape[1:])
    params, state, loss = step(params, state, split(x), split(y))
    losses.append(float(loss[0]))
  per_device = lambda tree: [
    [np.asarray(leaf)[d] for leaf in jax.tree.leaves(tree)]
    for d in range(devices)
  ]
  return per_device(params), per_device(state[1]), losses


def data_parallel_report(
  per_device_params: list,
  per_device_swr: list,
  losses: list[float],
  reference: tuple,
) -> dict:
  """How far device 0 is from one device, and whether the copies agree."""
  ref_params, ref_state, ref_losses = reference
  same_on_all = lambda copies: all(
    np.array_equal(a, b) for copy in copies[1:] for a, b in zip(copy, copies[0])
  )
  return {
    "devices": len(per_device_params),
    "max_abs_diff": max(
      float(np.max(np.abs(a - np.asarray(b))))
      for a, b in zip(per_device_params[0], jax.tree.leaves(ref_params))
    ),
    "swr_state_diff": max(
      float(np.max(np.abs(a - np.asarray(b)), initial=0.0))
      for a, b in zip(per_device_swr[0], jax.tree.leaves(ref_state[1]))
    ),
    "loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
    "loss_decreased": losses[-1] < losses[0],
    "params_same_on_all_devices": same_on_all(per_device_params),
    "swr_state_same_on_all_devices": same_on_all(per_device_swr),
  }


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  reference, reference_state = train(make_params())
  report = {}
  meshes = {
    "fsdp": (
      Mesh(np.array(jax.devices()), ("fsdp",)),
      lambda path: P("fsdp", None) if path == "kernel" else P("fsdp"),
    ),
    "data_x_model": (
      Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model")),
      lambda path: P("data", "model") if path == "kernel" else P("model"),
    ),
  }
  for name, (mesh, spec) in meshes.items():
    shardings = {
      layer: {leaf: NamedSharding(mesh, spec(leaf)) for leaf in leaves}
      for layer, leaves in make_params().items()
    }
    params, state = train(make_params(), shardings)
    swr_state = state[1]
    report[name] = {
      "max_abs_diff": max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference))
      ),
      "scales_diff": float(
        np.max(
          np.abs(
            np.asarray(swr_state.layer_scales)
            - np.asarray(reference_state[1].layer_scales)
          )
        )
      ),
      "params_keep_sharding": all(
        p.sharding.is_equivalent_to(s, p.ndim)
        for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))
      ),
      "moments_keep_sharding": all(
        m.sharding.is_equivalent_to(s, m.ndim)
        for m, s in zip(
          jax.tree.leaves(state[0][0].mu), jax.tree.leaves(shardings)
        )
      ),
      "swr_state_replicated": all(
        x.sharding.is_fully_replicated for x in jax.tree.leaves(swr_state)
      ),
      "swr_state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(swr_state))),
      "collectives": step_collectives(shardings),
    }
  one_device = train_one_device()
  report["shard_map"] = data_parallel_report(*train_shard_map(), one_device)
  report["pmap"] = data_parallel_report(*train_pmap(), one_device)
  print(json.dumps(report))


if __name__ == "__main__":
  main()
