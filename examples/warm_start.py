"""Warm start (Ash & Adams, 2020): train on half the data, then on all of it.

Every method trains ``--epochs`` epochs on a random 50% of the training set,
then ``--epochs`` more on all of it (the data change, where Shrink & Perturb
and head reset act, is at the switch). ``from_scratch`` is the reference: a
fresh network trained on all of the data for ``--epochs`` epochs, with Adam.

  python examples/warm_start.py --data digits --model mlp --epochs 20
  python examples/warm_start.py --data my_data.npz --model cnn --out ws.json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys

if __name__ == "__main__":  # Run as a script: make `examples` importable.
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

# pylint: disable=g-import-not-at-top
import numpy as np

from examples import protocols


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  protocols.add_flags(parser, "vanilla,l2,l2_init,snp,head_reset,swr")
  settings = protocols.settings_from_flags(
    parser.parse_args(argv), "warm_start", "warm_start"
  )
  dataset = protocols.load_data(settings)
  half = np.random.default_rng(0).permutation(len(dataset.x_train))
  half = np.sort(half[: len(half) // 2])
  full = (dataset.x_train, dataset.y_train)
  results = protocols.run_protocol(
    settings,
    dataset,
    [(dataset.x_train[half], dataset.y_train[half]), full],
    extra_runs={"from_scratch": [full]},
  )
  protocols.finish(results, settings)
  return results


if __name__ == "__main__":
  main()
