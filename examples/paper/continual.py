"""Continual learning: the training data arrives in chunks, stage by stage.

The training set is split into ``--chunks`` random chunks. With ``--access
full``, stage k trains on chunks 1..k; with ``--access limited``, only on
chunk k. Each stage trains ``--epochs`` epochs; the test set is evaluated
after every epoch; the data change (Shrink & Perturb, head reset) comes
before every stage but the first. The split into chunks is drawn per seed;
a chunk smaller than one batch is refused.

  python -m examples.paper.continual --data digits --access full --chunks 10
  python -m examples.paper.continual --data fashion_mnist --access limited --out cl.json
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import numpy as np

from examples import cli
from examples.paper import protocols
from examples.paper import runner


def stages(
  train: np.ndarray, seed: int, chunks: int, access: str
) -> list[np.ndarray]:
  """The training examples of every stage, from a random split per seed."""
  order = np.random.default_rng(seed).permutation(train)
  parts = np.array_split(order, chunks)
  if access == "full":
    parts = [np.concatenate(parts[: k + 1]) for k in range(chunks)]
  return [np.sort(part) for part in parts]


def main(argv: Sequence[str] | None = None) -> dict:
  parser = cli.parser(__doc__)
  protocols.add_flags(parser, "vanilla,l2,l2_init,snp,head_reset,swr")
  parser.add_argument("--access", choices=("full", "limited"), default="full")
  parser.add_argument("--chunks", type=int, default=10)
  args = parser.parse_args(argv)
  if args.chunks < 2:
    parser.error("--chunks must be at least 2")
  settings = protocols.settings_from_flags(
    args, f"continual_{args.access}", f"continual_{args.access}"
  )
  dataset = protocols.load_data(settings)
  results = runner.run_protocol(
    settings,
    dataset,
    functools.partial(stages, chunks=args.chunks, access=args.access),
  )
  results["config"].update(access=args.access, chunks=args.chunks)
  protocols.finish(results, settings)
  return results


if __name__ == "__main__":
  main()
