"""Thins the traces of the experiments' JSON so that committed results stay small.

The scripts record a value per epoch (the phased protocols: ``test_acc``,
``online_acc``, ``weight_norms``, ``balancedness``) or per step
(``beyond_chains``: ``distance``, ``distance_unpinned``, ``max_log_ratio``,
``loss``). The figures draw them; no table reads more than the last value.
This rounds every trace to ``--digits`` significant digits and keeps at most
``--max-points`` of each (every k-th, from the first, and always the last);
where it drops points, it records the epochs (``trace_epochs`` per method and
seed) or steps (``steps`` per model) it kept, which the figures use as their
x values. Everything else, every summary a table is generated from, is kept
as written (random-label files are all summaries: one value per task).
A file moved after its run (written to a scratch folder, then copied into
the results) gets its recorded ``config.out`` set to where it now is.
Running it twice changes nothing.

  python -m examples.paper.compact_results examples/paper/results/*.json
"""

from __future__ import annotations

from collections.abc import Sequence
import json
from typing import Any

from examples import cli
from examples.paper.tables import common

EPOCH_TRACES = ("test_acc", "online_acc", "weight_norms", "balancedness")
STEP_TRACES = ("distance", "distance_unpinned", "max_log_ratio", "loss")
MAX_POINTS = 60
DIGITS = 5


def kept_indices(length: int, stride: int) -> list[int]:
  """Every ``stride``-th index of ``range(length)`` from 0, and the last."""
  indices = list(range(0, length, stride))
  if length and indices[-1] != length - 1:
    indices.append(length - 1)
  return indices


def stride_for(length: int, max_points: int) -> int:
  """The smallest stride that keeps at most ``max_points`` of ``length``."""
  stride = 1
  while len(kept_indices(length, stride)) > max_points:
    stride += 1
  return stride


def rounded(values: Any, digits: int) -> Any:
  """Floats (in nested lists) to ``digits`` significant digits."""
  if isinstance(values, float):
    return float(f"{values:.{digits}g}")
  if isinstance(values, list):
    return [rounded(v, digits) for v in values]
  return values


def compact_protocol(
  results: dict[str, Any], max_points: int, digits: int
) -> None:
  """Thins each method's per-epoch traces, one stride for the whole file."""
  methods = results["methods"].values()
  longest = max(len(seed) for entry in methods for seed in entry["test_acc"])
  stride = stride_for(longest, max_points)
  for entry in methods:
    epochs = entry.get("trace_epochs") or [
      list(range(1, len(seed) + 1)) for seed in entry["test_acc"]
    ]
    kept = [kept_indices(len(seed), stride) for seed in epochs]
    if stride > 1:
      entry["trace_epochs"] = [
        [seed[i] for i in indices] for seed, indices in zip(epochs, kept)
      ]
    for key in EPOCH_TRACES:
      if entry.get(key) is not None:
        entry[key] = [
          rounded([seed[i] for i in indices], digits)
          for seed, indices in zip(entry[key], kept)
        ]


def compact_beyond_chains(
  results: dict[str, Any], max_points: int, digits: int
) -> None:
  """Thins each model's per-step traces; ``steps`` numbers what is kept."""
  for model in results["models"].values():
    variants = model["variants"].values()
    length = max(len(v["distance"]) for v in variants)
    stride = stride_for(length, max_points)
    steps = model.get("steps") or list(range(1, length + 1))
    kept = kept_indices(length, stride)
    if stride > 1:
      model["steps"] = [steps[i] for i in kept]
    for variant in variants:
      for key in STEP_TRACES:
        variant[key] = rounded([variant[key][i] for i in kept], digits)


def compact(
  results: dict[str, Any],
  path: str,
  max_points: int = MAX_POINTS,
  digits: int = DIGITS,
) -> None:
  """Thins ``results`` (read from ``path``) in place, by its kind."""
  kind = common.kind_of(results, path)
  if kind == "protocol":
    compact_protocol(results, max_points, digits)
  elif kind == "beyond_chains":
    compact_beyond_chains(results, max_points, digits)


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.parser(__doc__)
  parser.add_argument("files", nargs="+", help="the experiments' JSON files")
  parser.add_argument(
    "--max-points", type=int, default=MAX_POINTS, help="per trace"
  )
  parser.add_argument(
    "--digits", type=int, default=DIGITS, help="significant digits"
  )
  args = parser.parse_args(argv)
  if args.max_points < 2:
    raise ValueError(
      f"--max-points must be at least 2 (the first and the last); got "
      f"{args.max_points}."
    )
  cli.check_positive("--digits", args.digits)
  for path in args.files:
    with open(path) as file:
      results = json.load(file)
    before = json.dumps(results)
    compact(results, path, args.max_points, args.digits)
    out = results.get("config", {}).get("out")
    moved = out is not None and out != cli.recorded_path(path)
    if moved or json.dumps(results) != before:
      cli.write_json(path, results)
      print(f"compacted {path}")


if __name__ == "__main__":
  main()
