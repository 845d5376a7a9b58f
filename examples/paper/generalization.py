"""Generalization: train on all of the data, with or without learning-rate decay.

Every method trains ``--epochs`` epochs on the full training set. With
``--lr-decay`` the learning rate drops to a tenth at 50% and 75% of the steps
(the paper's Table 5) and the method ``swr_reinit`` ("SWR + re-init") resets
SWR's reference norms at those steps.

  python -m examples.paper.generalization --data digits --epochs 40
  python -m examples.paper.generalization --data fashion_mnist --lr-decay --out g.json
"""

from __future__ import annotations

from collections.abc import Sequence

from examples import cli
from examples.paper import protocols
from examples.paper import runner

LR_DECAY_AT = (0.5, 0.75)


def main(argv: Sequence[str] | None = None) -> dict:
  parser = cli.parser(__doc__)
  protocols.add_flags(parser, "")
  parser.add_argument("--lr-decay", action="store_true")
  args = parser.parse_args(argv)
  if not args.methods:
    args.methods = "vanilla,l2,l2_init,swr" + (
      ",swr_reinit" if args.lr_decay else ""
    )
  settings = protocols.settings_from_flags(
    args, "generalization", "warm_start", lr_decay=args.lr_decay
  )
  dataset = protocols.load_data(settings)
  results = runner.run_protocol(
    settings,
    dataset,
    runner.all_data,
    lr_boundaries_at=LR_DECAY_AT if args.lr_decay else (),
  )
  protocols.finish(results, settings)
  return results


if __name__ == "__main__":
  main()
