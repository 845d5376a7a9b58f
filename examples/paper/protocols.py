"""The paper's protocols' flags, coefficients and printed summary.

``warm_start.py``, ``continual.py`` and ``generalization.py`` take the same
flags (:func:`add_flags`: the common flags of ``examples.cli`` and the
paper's), turn them into a :class:`runner.Settings` with the paper's SWR
coefficients (:func:`settings_from_flags`), run with
``runner.run_protocol`` and print the final accuracies (:func:`finish`).

Methods (PAPER.md "Experiments"): ``vanilla`` (Adam), ``l2``, ``l2_init``,
``snp`` (Shrink & Perturb), ``head_reset``, ``swr`` and ``swr_reinit`` (SWR
with its reference norms reset where the learning rate drops), from the
registry in ``examples/methods.py``, and its other methods (``adamw``,
``snp_noise``, ``full_reset``, ``redo``, ``cbp``, ``swr_redo``).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from examples import cli
from examples import data
from examples import methods as methods_lib
from examples.models import linen as models_linen
from examples.paper import runner
from examples.paper import stats

# The paper's best SWR coefficients (lambda_f, lambda_c), PAPER.md.
PAPER_SWR_COEFS = {
  "warm_start": {
    "mlp": (1e-4, 1e-4),
    "cnn": (1e-3, 1e-3),
    "cnn_bn": (1e-4, 1.0),
    "vgg16": (1e-2, 1e-1),
  },
  "continual_full": {
    "mlp": (1e-4, 1e-4),
    "cnn": (1e-3, 1e-3),
    "cnn_bn": (1e-4, 1e-1),
    "vgg16": (1e-2, 1e-2),
  },
  "continual_limited": {
    "mlp": (1e-4, 1e-4),
    "cnn": (1e-1, 1e-1),
    "cnn_bn": (1e-1, 1e-2),
    "vgg16": (1e-4, 1.0),
  },
}
# The paper sweeps these baselines but does not publish the chosen values;
# these sit inside its sweeps (L2 1e-5..1e-1, S&P 0.2..0.8).
BASELINE_COEFS = {"l2": 1e-4, "l2_init": 1e-4, "snp": 0.2}
# The other methods of the registry, with their usual defaults: optax.adamw's
# weight decay, Sokar et al.'s tau and interval for supervised learning,
# Dohare et al.'s replacement rate.
OTHER_COEFS = {
  "adamw": 1e-4,
  "snp_noise_shrink": 0.8,
  "snp_noise_scale": 0.2,
  "redo": 0.1,
  "cbp": 1e-4,
}
REDO_EVERY = 1000
SWR_MAX_COEF = methods_lib.REGISTRY["swr"].max_coef


def add_flags(parser: argparse.ArgumentParser, default_methods: str) -> None:
  """The common flags (``examples.cli``) and the paper protocols' own."""
  cli.add_common_flags(
    parser, methods=default_methods, allowed_methods=runner.METHODS
  )
  parser.add_argument("--model", default="mlp", choices=models_linen.ALL_MODELS)
  parser.add_argument(
    "--width",
    type=int,
    default=None,
    help="model width (default: the paper's sizes)",
  )
  parser.add_argument("--epochs", type=int, default=10, help="per phase")
  parser.add_argument(
    "--max-train",
    type=int,
    default=None,
    help="train on a random subset of this size",
  )
  parser.add_argument("--max-test", type=int, default=None)
  parser.add_argument("--l2", type=float, default=BASELINE_COEFS["l2"])
  parser.add_argument(
    "--l2-init", type=float, default=BASELINE_COEFS["l2_init"]
  )
  parser.add_argument(
    "--snp",
    type=float,
    default=BASELINE_COEFS["snp"],
    help="Shrink & Perturb's weight of the fresh params",
  )
  for name, help_text in (
    ("adamw", "AdamW's decoupled weight decay"),
    ("snp_noise_shrink", "snp_noise: the factor on the params"),
    ("snp_noise_scale", "snp_noise: the factor on the fresh draw"),
    ("redo", "redo and swr_redo: the dormancy threshold tau"),
    ("cbp", "continual backprop's replacement rate"),
  ):
    parser.add_argument(
      f"--{name.replace('_', '-')}",
      type=float,
      default=OTHER_COEFS[name],
      help=help_text,
    )
  parser.add_argument(
    "--redo-every",
    type=int,
    default=REDO_EVERY,
    help="redo and swr_redo: steps between two recyclings",
  )
  parser.add_argument(
    "--swr",
    default=None,
    help=(
      "SWR's lambda_f (default: the paper's best); a comma-separated list "
      "adds one entry 'swr λ=X' (lambda_f = lambda_c = X) per further value"
    ),
  )
  parser.add_argument(
    "--swr-classifier",
    type=float,
    default=None,
    help="SWR's lambda_c (default: the paper's best)",
  )
  parser.add_argument(
    "--until-train-acc",
    type=float,
    default=None,
    help=(
      "train each phase until this training accuracy (e.g. 0.99), with "
      "--epochs as the cap"
    ),
  )


def settings_from_flags(
  args: argparse.Namespace, protocol: str, swr_table: str, **extra: Any
) -> runner.Settings:
  """Checks the flags and fills in the paper's SWR coefficients."""
  methods = cli.parse_methods(args.methods, runner.METHODS)
  cli.check_common_flags(args)
  cli.check_positive("--epochs", args.epochs)
  cli.check_positive("--redo-every", args.redo_every)
  if args.until_train_acc is not None and not 0 < args.until_train_acc <= 1:
    raise ValueError(
      f"--until-train-acc must be in (0, 1]; got {args.until_train_acc}."
    )
  paper = PAPER_SWR_COEFS[swr_table].get(args.model, (1e-3, 1e-3))
  swr_values = (
    () if args.swr is None else cli.parse_coefs("--swr", args.swr, SWR_MAX_COEF)
  )
  swr_coefs = (
    swr_values[0] if swr_values else paper[0],
    paper[1] if args.swr_classifier is None else args.swr_classifier,
  )
  coefs = {
    "l2": (args.l2,),
    "l2_init": (args.l2_init,),
    "snp": (args.snp,),
    "swr": swr_coefs,
    "swr_reinit": swr_coefs,
    "adamw": (args.adamw,),
    "snp_noise": (args.snp_noise_shrink, args.snp_noise_scale),
    "redo": (args.redo,),
    "cbp": (args.cbp,),
    "swr_redo": (swr_coefs[0], args.redo),
  }
  sweep = tuple(swr_values[1:]) if "swr" in methods else ()
  return runner.Settings(
    protocol=protocol,
    data=args.data,
    model=args.model,
    width=args.width,
    methods=methods,
    epochs=args.epochs,
    batch_size=args.batch_size,
    lr=args.lr,
    seeds=args.seeds,
    max_train=args.max_train,
    max_test=args.max_test,
    coefs=coefs,
    redo_every=args.redo_every,
    until_train_acc=args.until_train_acc,
    swr_sweep=sweep,
    workers=args.workers,
    progress=args.progress,
    out=args.out,
    **extra,
  )


def load_data(settings: runner.Settings) -> data.Dataset:
  """The data set named by ``--data``, cut to ``--max-train/--max-test``."""
  dataset = data.load(settings.data)
  return data.subset(dataset, settings.max_train, settings.max_test)


def finish(results: dict[str, Any], settings: runner.Settings) -> None:
  """Writes the JSON (if ``--out``) and prints the final accuracies.

  The +- is the sample standard deviation over seeds (ddof=1).
  """
  if settings.out:
    cli.write_json(settings.out, results)
  print(
    f"\n{settings.protocol}: {settings.data}, {settings.model}, "
    f"{settings.epochs} epochs per phase, {settings.seeds} seeds"
  )
  print(f"{'method':12s} {'final test accuracy':>22s} {'sum ||W_l||':>12s}")
  for name, entry in results["methods"].items():
    final = np.array(entry["final_test_acc"])
    norm = np.mean([seed[-1] for seed in entry["weight_norms"]], axis=0).sum()
    accuracy = stats.mean_std_text(final, "+-")
    print(f"{name:12s} {accuracy:>24s} {norm:12.2f}")
  if settings.out:
    print(f"results written to {settings.out}")
