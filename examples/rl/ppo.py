"""PPO on any gymnax environment, one jitted function, with SWR and baselines.

A compact PPO in the style of PureJaxRL (Lu et al., 2022): the rollout of
vmapped environments, GAE and the epochs of minibatch updates are one update,
``lax.scan`` runs the updates, and the seeds are vmapped, so a whole run is
one XLA program. The methods that fight the loss of plasticity, built by
the registry of ``examples.methods``, plug in as optimizer transforms or as
interventions on the params every few updates:

* ``vanilla``: clip the gradient's global norm, then Adam.
* ``adamw``: the same with AdamW's decoupled weight decay (``--adamw-coef``).
* ``swr``: Adam, then ``optax_swr.swr(--swr-coef)`` on the layers traced
  by ``optax_swr.layers_from_linen``; the output layer's lambda is
  ``--swr-head-coef``, 0 by default: it then absorbs the torso's factors,
  so that the logits and the value are kept exactly (see below).
* ``l2`` / ``l2_init``: ``optax_swr.baselines.l2`` / ``l2_init`` before the
  clipping, as terms of the loss.
* ``snp``: Shrink & Perturb toward the initial params,
  ``baselines.shrink_perturb(--snp-coef)``, after every ``--snp-every``-th
  update.
* ``redo``: ReDo (Sokar et al., 2023), ``baselines.redo`` with the torso's
  activations on a minibatch and a fresh initialisation, after every
  ``--redo-every``-th update.
* ``cbp``: continual backprop (Dohare et al., 2024),
  ``baselines.continual_backprop(--cbp-rate)`` after every minibatch step,
  on that minibatch's activations.
* ``swr_redo``: SWR (``--swr-redo-coef``, the output layer's
  ``--swr-head-coef``) and ReDo (``--swr-redo-tau``) at the last minibatch
  step of every ``--redo-every``-th update, on that minibatch's activations.

The network is a shared torso (two ReLU Dense layers of ``--width`` units on
the flattened observation; for image observations, MinAtar's, a 16-channel
3x3 conv and a 128-unit Dense layer) and one output Dense layer whose first
``num_actions`` units are the actor's logits and whose last is the critic's
value. The two heads are initialised separately (orthogonal, scale 0.01 and
1, as PureJaxRL) but share that layer so that the network is a chain, which
is what ReDo's incoming/outgoing weights and SWR's proportional rescaling
are defined on; ReLU replaces PureJaxRL's tanh, which is not positively
homogeneous. The paper's SWR multiplies the network's output, logits and
value, by one positive factor per step: it keeps the greedy action but
flattens or sharpens the policy and scales the critic. With the output
layer's lambda at 0 (the default) the output layer takes the inverse of the
torso's factors instead, and the outputs are kept exactly
(``examples/rl/models.py`` says why).

The agent lives in modules of its own, which every RL protocol imports:
``config`` (``Config`` and its flags), ``envs`` (gymnax), ``models`` (the
network), ``agent`` (optimizer and state), ``train`` (``make_train``) and
``records`` (what the JSON holds, traces thinned). This script trains each
method on every seed at once and writes one JSON. The learning rate is
constant, so that ``train`` can continue a run, on the same or another
environment with the same observation and action shapes (see
``train.make_train`` and ``agent.without_envs``). From the repository root::

  python -m examples.rl.ppo --env CartPole-v1 --total-steps 200000 \\
      --seeds 3 --methods vanilla,swr --out /tmp/cartpole.json
  python -m examples.rl.ppo --env SpaceInvaders-MinAtar --num-envs 64
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import functools
import time
from typing import Any

import jax
import numpy as np

from examples import cli
from examples.rl import envs
from examples.rl import records
from examples.rl.agent import make_agent
from examples.rl.config import METHODS
from examples.rl.config import Config
from examples.rl.config import add_config_flags
from examples.rl.config import config_from_flags
from examples.rl.config import parse_methods
from examples.rl.train import Metrics
from examples.rl.train import make_train


def run_method(
  config: Config,
  env: Any,
  env_params: Any,
  method: str,
  keys: jax.Array,
) -> tuple[Metrics, dict[str, float]]:
  """Trains one method on every seed at once (the keys), in one program.

  Returns:
    The metrics, ``[seed, update, ...]``, and the timings: ``compile_s``,
    ``run_s`` (the compiled program alone) and ``env_steps_per_s`` (all
    seeds' environment steps over ``run_s``).
  """
  train = make_train(config, env, env_params, method)
  run = jax.jit(
    jax.vmap(functools.partial(train, num_updates=config.num_updates))
  )
  start = time.perf_counter()
  compiled = run.lower(keys).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  _, measured = jax.block_until_ready(compiled(keys))
  run_s = time.perf_counter() - start
  env_steps = len(keys) * config.num_updates * config.batch_size
  return measured, {
    "compile_s": compile_s,
    "run_s": run_s,
    "env_steps_per_s": env_steps / run_s,
  }


def parse_flags(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.parser(__doc__)
  parser.add_argument("--env", default="CartPole-v1", help="gymnax name")
  parser.add_argument(
    "--methods",
    default="vanilla,swr",
    help=f"comma-separated, from {', '.join(METHODS)}",
  )
  parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
  parser.add_argument("--seed", type=int, default=0, help="the first key")
  parser.add_argument("--out", help="write the results to this JSON file")
  add_config_flags(parser)
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error("--seeds must be at least 1")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_flags(argv)
  cli.check_out_path(args.out)
  config = config_from_flags(args)
  methods = parse_methods(args.methods)
  env, env_params = envs.make_env(args.env)
  keys = jax.random.split(jax.random.key(args.seed), args.seeds)
  _, _, layers = make_agent(config, env, env_params, methods[0])
  results: dict[str, Any] = {
    "config": {
      **dataclasses.asdict(config),
      "env": args.env,
      "seeds": args.seeds,
      "seed": args.seed,
      "num_updates": config.num_updates,
      "layers": [layer.name for layer in layers],
      **records.trace_config(config.num_updates),
    },
    "versions": records.versions(),
    "methods": {},
  }
  start = time.perf_counter()
  for method in methods:
    measured, timing = run_method(config, env, env_params, method, keys)
    results["methods"][method] = {**records.record(measured), **timing}
    final = records.recent_return(measured)
    print(
      f"{args.env} {method:8s} return (last 10% of updates) "
      f"{np.nanmean(final):7.1f}, seeds {np.round(final, 1).tolist()}; "
      f"{timing['env_steps_per_s']:,.0f} env steps/s (all seeds), "
      f"compiled in {timing['compile_s']:.1f} s",
      flush=True,
    )
  results["wall_time_s"] = time.perf_counter() - start
  if args.out:
    cli.write_json(args.out, results)
  return results


if __name__ == "__main__":
  main()
