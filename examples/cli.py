"""What every example script shares: its command line and what it writes.

* :func:`parser`: an ``ArgumentParser`` whose ``--help`` shows the defaults;
* :func:`add_common_flags` / :func:`check_common_flags`: the flags every
  protocol takes (``--data --methods --seeds --batch-size --lr --workers
  --out --no-progress``), checked before any training;
* :func:`parse_coefs`, :func:`parse_methods`, :func:`check_positive`,
  :func:`check_out_path`: errors that name the flag and the fix;
* :func:`versions` and :func:`write_json`: the JSON every script writes,
  whole or not at all.

Example::

  from examples import cli

  parser = cli.parser(__doc__)
  cli.add_common_flags(parser, methods="vanilla,swr", seeds=3)
  parser.add_argument("--tasks", type=int, default=20)
  args = parser.parse_args()
  cli.check_common_flags(args)  # --seeds 0: "--seeds must be at least 1"
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import copy
import json
import os
import platform
from typing import Any

import flax
import jax
import numpy as np
import optax

from examples import data
from examples import methods as methods_lib
import optax_swr

# The repository root, which the JSON files' recorded paths are relative to.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class DefaultsHelpFormatter(argparse.HelpFormatter):
  """Ends each flag's help with ``(default: ...)``, help text or not.

  Unlike ``argparse.ArgumentDefaultsHelpFormatter``, it also shows the default
  of a flag without help text, and leaves out defaults that say nothing: None
  (the flag is off unless given) and the booleans of ``store_true`` and
  ``store_false`` flags. A help text that already names ``%(default)`` is
  kept as written.
  """

  def add_argument(self, action: argparse.Action) -> None:
    help_text = action.help or ""
    if (
      action.help is not argparse.SUPPRESS
      and action.option_strings
      and action.default not in (None, argparse.SUPPRESS)
      and not isinstance(action.default, bool)
      and "%(default)" not in help_text
    ):
      action = copy.copy(action)  # The parser keeps its own unchanged.
      action.help = f"{help_text} (default: %(default)s)".lstrip()
    super().add_argument(action)


def parser(doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
  """An ``ArgumentParser`` described by ``doc``'s first line, with defaults.

  Args:
    doc: the script's module docstring; its first line describes the script.
    **kwargs: passed on to ``argparse.ArgumentParser`` (``prog``, ...).

  Returns:
    A parser whose ``--help`` shows every flag's default.
  """
  return argparse.ArgumentParser(
    description=(doc or "").split("\n")[0],
    formatter_class=DefaultsHelpFormatter,
    **kwargs,
  )


def add_data_flag(parser: argparse.ArgumentParser, default: str) -> None:
  """``--data``: a built-in data set or a user's ``.npz``."""
  parser.add_argument(
    "--data",
    default=default,
    help=(
      f"a built-in name {data.BUILT_IN} or a path to an .npz with x_train, "
      "y_train, x_test, y_test"
    ),
  )


def add_common_flags(
  parser: argparse.ArgumentParser,
  *,
  default_data: str = "digits",
  methods: str,
  allowed_methods: Sequence[str] = (),
  seeds: int = 3,
  batch_size: int = 256,
  lr: float = 1e-3,
) -> None:
  """The flags every protocol takes, with the protocol's defaults.

  Args:
    parser: the script's parser.
    default_data: ``--data``'s default.
    methods: ``--methods``'s default, comma-separated.
    allowed_methods: the names ``--methods`` accepts, for its help (default:
      every method of ``examples.methods``).
    seeds: ``--seeds``'s default.
    batch_size: ``--batch-size``'s default.
    lr: ``--lr``'s default (Adam's learning rate).
  """
  add_data_flag(parser, default_data)
  allowed = tuple(allowed_methods) or methods_lib.names()
  parser.add_argument(
    "--methods",
    default=methods,
    help=f"comma-separated, from {','.join(allowed)}",
  )
  parser.add_argument("--seeds", type=int, default=seeds)
  parser.add_argument("--batch-size", type=int, default=batch_size)
  parser.add_argument("--lr", type=float, default=lr, help="Adam")
  add_workers_flag(parser)
  parser.add_argument("--out", default=None, help="write the results as JSON")
  parser.add_argument("--no-progress", dest="progress", action="store_false")


def add_workers_flag(parser: argparse.ArgumentParser) -> None:
  """``--workers``: the methods in that many processes, one CPU core each."""
  parser.add_argument(
    "--workers",
    type=int,
    default=None,
    help=(
      "train the methods in this many processes, one CPU core each "
      "(default: one per core on a CPU, 1 on a GPU or TPU)"
    ),
  )


def check_common_flags(args: argparse.Namespace) -> None:
  """Checks :func:`add_common_flags`' numbers and ``--out``, before training.

  Raises:
    ValueError: naming the flag, for a count below 1 or an ``--out`` whose
      folder does not exist.
  """
  check_positive("--seeds", args.seeds)
  check_positive("--batch-size", args.batch_size)
  if args.workers is not None:
    check_positive("--workers", args.workers)
  check_out_path(args.out)


def parse_methods(
  text: str, allowed: Sequence[str] | None = None, flag: str = "--methods"
) -> tuple[str, ...]:
  """``"vanilla,swr"`` as a tuple of names, each one of ``allowed``.

  Raises:
    ValueError: naming ``flag``, for an empty list or an unknown name.
  """
  names = tuple(name.strip() for name in text.split(",") if name.strip())
  methods_lib.check_names(names, allowed, flag)
  return names


def parse_coefs(
  flag: str, text: str, upper: float | None = 1.0
) -> tuple[float, ...]:
  """A flag's comma-separated coefficients, each >= 0 and <= ``upper``.

  Raises:
    ValueError: naming ``flag``, for text that is not such a list.
  """
  try:
    values = tuple(float(v) for v in str(text).split(",") if v)
  except ValueError:
    raise ValueError(
      f"{flag}: {text!r} is not a comma-separated list of numbers."
    ) from None
  if not values or not all(
    0 <= v <= (np.inf if upper is None else upper) for v in values
  ):
    bounds = ">= 0" if upper is None else f"in [0, {upper:g}]"
    raise ValueError(f"{flag}: every coefficient must be {bounds}; got {text}.")
  return values


def check_positive(flag: str, value: int) -> None:
  """Raises a ValueError naming ``flag`` unless ``value`` >= 1."""
  if value < 1:
    raise ValueError(f"{flag} must be at least 1; got {value}.")


def check_out_path(path: str | None, flag: str = "--out") -> None:
  """Fails before any training if ``flag``'s file can't be written."""
  if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
    raise ValueError(
      f"{flag}: the folder of {path!r} does not exist; create it first."
    )


def versions() -> dict[str, str]:
  """Versions of what produced the results, for the JSON."""
  return {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "flax": flax.__version__,
    "numpy": np.__version__,
    "optax_swr": optax_swr.__version__,
    "device": str(jax.devices()[0].device_kind),
  }


def recorded_path(path: str) -> str:
  """``path`` as a JSON records it: relative to the repository when inside it.

  So that a result names the same file whatever the working directory of
  the run; a path outside the repository stays absolute.
  """
  absolute = os.path.abspath(path)
  relative = os.path.relpath(absolute, REPOSITORY)
  return absolute if relative.split(os.sep)[0] == os.pardir else relative


def write_json(path: str, results: dict[str, Any]) -> None:
  """Writes ``results`` to ``path`` whole or not at all (never a partial file).

  A ``results["config"]["out"]`` (the ``--out`` flag as given) is written
  as :func:`recorded_path` of ``path``; ``results`` itself is left as it is.
  """
  config = results.get("config")
  if isinstance(config, dict) and "out" in config:
    results = {**results, "config": {**config, "out": recorded_path(path)}}
  temporary = f"{path}.partial"
  try:
    with open(temporary, "w") as file:
      json.dump(results, file)
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
