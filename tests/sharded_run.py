"""Runs Adam + SWR on 8 simulated CPU devices; prints a JSON report.

Started by tests/test_sharding.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8, so that the other tests
keep their single device.
"""

from __future__ import annotations

import json

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

import optax_swr

STEPS = 5


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
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32),
                        params) for _ in range(STEPS)]
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


def main() -> None:
  assert len(jax.devices()) == 8, jax.devices()
  reference, reference_state = train(make_params())
  report = {}
  meshes = {
      "fsdp": (Mesh(np.array(jax.devices()), ("fsdp",)),
               lambda path: P("fsdp", None) if path == "kernel" else P("fsdp")),
      "data_x_model": (Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model")),
                       lambda path: P("data", "model") if path == "kernel" else P("model")),
  }
  for name, (mesh, spec) in meshes.items():
    shardings = {layer: {leaf: NamedSharding(mesh, spec(leaf)) for leaf in leaves}
                 for layer, leaves in make_params().items()}
    params, state = train(make_params(), shardings)
    swr_state = state[1]
    report[name] = {
        "max_abs_diff": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference))),
        "scales_diff": float(np.max(np.abs(
            np.asarray(swr_state.layer_scales) - np.asarray(reference_state[1].layer_scales)))),
        "params_keep_sharding": all(
            p.sharding.is_equivalent_to(s, p.ndim)
            for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))),
        "moments_keep_sharding": all(
            m.sharding.is_equivalent_to(s, m.ndim)
            for m, s in zip(jax.tree.leaves(state[0][0].mu), jax.tree.leaves(shardings))),
        "swr_state_replicated": all(
            x.sharding.is_fully_replicated for x in jax.tree.leaves(swr_state)),
        "swr_state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(swr_state))),
    }
  print(json.dumps(report))


if __name__ == "__main__":
  main()
