"""Where a continual agent's weight norm goes: each layer's, after each phase.

The shifting protocol records the summed weight norm; this splits it by layer
for one method, on the protocol's own phases (``examples.rl.shifting``), to
see which layers grow. SWR's exact mode (``--swr-head-coef 0``) keeps the
torso's norms bounded and the outputs unchanged, so the output layer must
absorb every factor the torso takes: its norm grows instead. From the
repository root::

  python -m examples.rl.layer_norms --method swr --lr 3e-3 --swr-coef 1e-3 \\
      --phases 6 --seeds 4
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from examples import cli
from examples.rl import envs
from examples.rl import shifting
from examples.rl.config import add_config_flags
from examples.rl.config import check_method
from examples.rl.config import config_from_flags


def kernel_norms(params: Any) -> dict[str, np.ndarray]:
  """Each kernel's Frobenius norm, per seed.

  Args:
    params: the agents' params, vmapped over seeds (every leaf
      ``[seed, ...]``).

  Returns:
    ``{path: [seed] norms}`` for the leaves named ``kernel``.
  """
  norms = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if getattr(path[-1], "key", None) != "kernel":
      continue
    per_seed = jnp.sqrt(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, axis=1))
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    norms[name] = np.asarray(per_seed, float)
  return norms


def per_phase(
  runner: shifting.PhaseRunner,
  keys: jax.Array,
  shifts: Sequence[envs.ShiftParams],
) -> list[dict[str, np.ndarray]]:
  """:func:`kernel_norms` at the start and after each phase of the continual agents."""
  state = runner.new_agents(keys)
  norms = [kernel_norms(state.train_state.params)]
  for shift in shifts:
    state, _ = runner(state, shift)
    norms.append(kernel_norms(state.train_state.params))
  return norms


def main(argv: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
  parser = cli.parser(__doc__)
  parser.add_argument("--env", default="CartPole-v1", help="gymnax name")
  parser.add_argument("--method", default="swr", help="one of the agent's")
  parser.add_argument("--phases", type=int, default=6, help="K")
  parser.add_argument("--steps-per-phase", type=int, default=50_000)
  parser.add_argument("--seeds", type=int, default=4, help="number of seeds")
  parser.add_argument("--seed", type=int, default=0, help="the first seed")
  add_config_flags(parser, exclude=("total_steps", "network"))
  args = parser.parse_args(argv)
  check_method(args.method)
  shifting.check_flags(args.phases, args.steps_per_phase, args.seeds)
  config = config_from_flags(
    args, total_steps=args.steps_per_phase, network="mlp"
  )
  env, env_params = envs.make_env(args.env)
  seeds = shifting.seed_numbers(args.seed, args.seeds)
  keys = jax.vmap(jax.random.key)(jnp.array(seeds))
  shifts = shifting.phase_shifts(env, env_params, seeds, args.phases)
  runner = shifting.PhaseRunner(config, env, env_params, args.method)
  norms = per_phase(runner, keys, shifts)
  names = list(norms[0])
  print("mean over seeds [smallest, largest seed]")
  print("phase  " + "  ".join(f"{name:>26s}" for name in names))
  for phase, row in enumerate(norms):
    label = "start" if phase == 0 else f"{phase:5d}"
    cells = [
      f"{np.mean(row[n]):8.1f} [{np.min(row[n]):6.1f}, {np.max(row[n]):6.1f}]"
      for n in names
    ]
    print(f"{label}  " + "  ".join(f"{cell:>26s}" for cell in cells))
  return norms


if __name__ == "__main__":
  main()
