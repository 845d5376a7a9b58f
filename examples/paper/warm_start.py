"""Warm start (Ash & Adams, 2020): train on half the data, then on all of it.

Every method trains on a random 50% of the training set, then on all of it
(the data change, where Shrink & Perturb and head reset act, is at the
switch). ``from_scratch`` is the reference: a fresh network trained on all of
the data with Adam. The split into halves is drawn per seed.

Two budgets:

* ``--epochs E``: every phase trains E epochs (the paper's protocol, at 100
  epochs per phase).
* ``--until-train-acc 0.99``: every phase, and ``from_scratch``, trains until
  its training accuracy (eval mode, on the phase's data) reaches 99%, as Ash
  & Adams did, with ``--epochs`` as a cap per phase. ``from_scratch`` is then
  a converged reference, so the gap (scratch minus warm) measures lost
  generalization, not missing steps.

``--online-rounds R`` is Ash & Adams' online variant: the data arrives in R
equal rounds, and round k trains on the first k.

  python -m examples.paper.warm_start --data digits --model mlp --epochs 20
  python -m examples.paper.warm_start --data fashion_mnist --max-train 10000 \\
      --until-train-acc 0.99 --epochs 100 --seeds 5 --out ws.json
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import numpy as np

from examples import cli
from examples.paper import protocols
from examples.paper import runner


def rounds(train: np.ndarray, seed: int, count: int) -> list[np.ndarray]:
  """The training sets of ``count`` rounds: round k holds the first k parts.

  ``count=2`` is the warm start (half, then all). The order of the examples
  is drawn from ``seed``.
  """
  order = np.random.default_rng(seed).permutation(train)
  parts = np.array_split(order, count)
  return [np.sort(np.concatenate(parts[: k + 1])) for k in range(count)]


def main(argv: Sequence[str] | None = None) -> dict:
  parser = cli.parser(__doc__)
  protocols.add_flags(parser, "vanilla,l2,l2_init,snp,head_reset,swr")
  parser.add_argument(
    "--online-rounds",
    type=int,
    default=2,
    help="data arrives in this many equal rounds (2: the warm start)",
  )
  args = parser.parse_args(argv)
  if args.online_rounds < 2:
    parser.error("--online-rounds must be at least 2 (2 is the warm start)")
  settings = protocols.settings_from_flags(args, "warm_start", "warm_start")
  dataset = protocols.load_data(settings)
  results = runner.run_protocol(
    settings,
    dataset,
    functools.partial(rounds, count=args.online_rounds),
    extra_runs={"from_scratch": runner.all_data},
  )
  results["config"].update(online_rounds=args.online_rounds)
  protocols.finish(results, settings)
  return results


if __name__ == "__main__":
  main()
