"""What the report's tables share: loading the JSON, cells, ordering, settings.

Every ± is the sample standard deviation over seeds (``ddof=1``); a
comparison of two methods is the mean of their per-seed differences with a
95% t interval (``examples.paper.stats``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import dataclasses
import json
import os
from typing import Any

import numpy as np

from examples import methods as methods_lib
from examples.paper import stats
from examples.paper import task_runs
from examples.paper import task_sequence

METHOD_ORDER = methods_lib.names(layer_norm=True)
STATS_NOTE = (
  "± is the sample standard deviation over seeds (ddof=1); a difference is "
  "the mean of per-seed differences with its 95% t interval [low, high]."
)
PULL_NOTE = (
  "λ × steps: SWR's coefficient λ_f times the optimizer steps taken. On "
  "its own SWR would shrink a norm's excess over its initial value by about "
  "exp(−λ × steps); against the optimizer's growth the norm settles where "
  "the two balance. ≪ 1: SWR barely acted; ≫ 1: the norms reached that "
  "balance, which is near their initial values only for a large λ."
)


def load(paths: Sequence[str]) -> list[dict[str, Any]]:
  """Reads the JSON files and tags each with its ``kind`` and ``name``.

  Sweep files come after the others, so that a setting's own file supplies
  its configuration and its ``from_scratch`` reference.
  """
  in_order = sorted(
    paths, key=lambda p: (os.path.basename(p).startswith("sweep_"), p)
  )
  return [load_one(path) for path in in_order]


def load_one(path: str) -> dict[str, Any]:
  """One JSON file, with ``kind``, ``name`` and, for protocols, ``column``."""
  with open(path) as file:
    result = json.load(file)
  result["name"] = os.path.basename(path)
  result["kind"] = kind_of(result, path)
  result["sweep"] = False
  if result["kind"] == "protocol":
    result["column"] = column_label(result["config"])
    if result["name"].startswith("sweep_"):
      result["sweep"] = True
      coef = result["config"]["coefs"]["swr"][0]
      methods = result["methods"]
      methods[f"swr λ={coef:g}"] = methods.pop("swr")
  return result


def kind_of(result: dict[str, Any], path: str) -> str:
  """What wrote it: "protocol", "random_labels", "permuted_inputs",
  "calibration" (random labels' ``--calibrate``), "permuted_calibration"
  (permuted inputs' ``--calibrate``), "figure1", "beyond_chains" (no table:
  its numbers are in docs/how_it_works.md)."""
  if "calibration" in result:
    permuted = task_runs.protocol_of(result) == "permuted_inputs"
    return "permuted_calibration" if permuted else "calibration"
  if "factors" in result:
    return "figure1"
  if "models" in result:
    return "beyond_chains"
  config = result.get("config", {})
  if "methods" in result and "protocol" in config:
    return "protocol"
  if "methods" in result and "tasks" in config:
    return task_runs.protocol_of(result)
  raise ValueError(
    f"{path}: not a JSON file of examples.paper.warm_start / continual / "
    "generalization, examples.paper.random_labels / permuted_inputs, "
    "examples.paper.figure1 or examples.paper.beyond_chains; "
    "pass the files those scripts write with --out / --out-json."
  )


def column_label(config: dict[str, Any]) -> str:
  """What tells one setting from another: data, model, budget."""
  label = f"{data_name(config)} {config['model']}"
  if config.get("max_train"):
    label += f" ({config['num_train']} train)"
  rounds = config.get("online_rounds", 2)
  if rounds > 2:
    label += f", {rounds} rounds"
  until = config.get("until_train_acc")
  if until is None:
    return f"{label}, {config['epochs']} ep"
  return f"{label}, to {until:g} train acc (cap {config['epochs']} ep)"


def data_name(config: dict[str, Any]) -> str:
  """The data set's name; a user's .npz by its file name."""
  name = os.path.basename(str(config["data"]))
  return name[: -len(".npz")] if name.endswith(".npz") else name


def protocol_key(config: dict[str, Any]) -> str:
  """The key of ``fixed_epoch.TITLES`` a protocol run belongs to."""
  key = config["protocol"]
  if config.get("online_rounds", 2) > 2:
    key += "_online"
  return key + ("_lr_decay" if config.get("lr_decay") else "")


def of_kind(results: Iterable[dict[str, Any]], kind: str) -> list[dict]:
  """The results of one kind (:func:`kind_of`), in order."""
  return [r for r in results if r["kind"] == kind]


def report_runs(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """The task-sequence runs of ``--from-selection``, in order."""
  return [r for r in results if r.get("config", {}).get("selection")]


def plain_runs(results: Sequence[dict[str, Any]], kind: str) -> list[dict]:
  """The runs of one kind but the runs of ``--from-selection`` and the
  selection runs they name, which ``tables/selected.py`` reports."""
  reported = {
    os.path.basename(path)
    for run in report_runs(results)
    for path in run["config"]["selection"]["files"]
  }
  return [
    r
    for r in of_kind(results, kind)
    if not r["config"].get("selection") and r["name"] not in reported
  ]


# Cells.


def mean_std_cell(values: Sequence[float]) -> str:
  """The mean ± the sample standard deviation, with four decimals.

  One seed has no standard deviation: ``0.8123 (1 seed, no std)``.
  """
  return stats.mean_std_text(values)


def difference_cell(a: Sequence[float], b: Sequence[float]) -> str:
  """The paired difference ``a - b``; blank unless both have the same seeds."""
  if len(a) != len(b) or not len(a):
    return ""
  return str(stats.paired(a, b))


def number(value: float) -> str:
  """Three significant digits; large numbers whole, with separators."""
  return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def pull_cell(entry: dict[str, Any]) -> str:
  """SWR's ``λ_f × mean steps``; blank for other methods."""
  hparams = entry.get("hparams", {})
  steps = entry.get("total_steps") or hparams.get("total_steps")
  if not hparams.get("method", "").startswith("swr") or steps is None:
    return ""
  coef, steps = hparams["coefs"][0], float(np.mean(steps))
  return f"{coef:g} × {number(steps)} = {number(coef * steps)}"


def norm_ratio_cell(entry: dict[str, Any]) -> str:
  """Each layer's weight norm at the last task over its norm at
  initialisation (mean over seeds), ``1.10 / 1.05 / 2.63``; blank for runs
  without ``initial_weight_norms``."""
  initial = entry.get("initial_weight_norms")
  if initial is None:
    return ""
  final = np.asarray(entry["weight_norms"], float)[:, -1]  # [seed, layer]
  ratio = (final / np.asarray(initial, float)).mean(axis=0)
  return " / ".join(f"{r:.2f}" for r in ratio)


NORM_RATIO_NOTE = (
  "‖W‖/n: each layer's weight norm at the end of the last task over its "
  "norm at initialisation, first hidden layer to the head, mean over seeds."
)


def coefficients_text(config: dict[str, Any]) -> str:
  """The run's methods' coefficient flags, ``swr 0.001/0.01, snp 0.2``."""
  methods = config.get("methods", task_sequence.METHODS)
  return ", ".join(
    f"{key} " + "/".join(f"{c:g}" for c in config["coefs"][key])
    for method in methods
    for key in task_sequence.COEF_FLAGS.get(method, ())
    if key in config["coefs"]
  )


def seeds_text(config: dict[str, Any]) -> str:
  """``5 seeds`` (from 0), or ``10 seeds (3 to 12)``."""
  first = config.get("first_seed", 0)
  if not first:
    return f"{config['seeds']} seeds"
  return f"{config['seeds']} seeds ({first} to {first + config['seeds'] - 1})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]):
  """The lines of a markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  return lines + ["| " + " | ".join(row) + " |" for row in rows]


def order_key(name: str, entry: dict[str, Any]) -> tuple[Any, ...]:
  """Vanilla, the baselines, SWR (by coefficient), sweep rows, the reference."""
  hparams = entry.get("hparams", {})
  method = hparams.get("method", name)
  rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else 99
  group = 2 if name == "from_scratch" else int(name.startswith("swr λ="))
  return group, rank, tuple(hparams.get("coefs", ())), name


def ordered(methods: dict[str, dict[str, Any]]) -> list[str]:
  """The entries' names in the tables' order (:func:`order_key`)."""
  return sorted(methods, key=lambda name: order_key(name, methods[name]))


def minutes(result: dict[str, Any]) -> float:
  """The run's wall time; older files have only each method's seconds."""
  if "wall_time_s" in result:
    return result["wall_time_s"] / 60
  seconds = [e.get("seconds", 0.0) for e in result["methods"].values()]
  return sum(float(np.sum(s)) for s in seconds) / 60


@dataclasses.dataclass
class Setting:
  """One column of a protocol table: its first run and every method in it.

  Attributes:
    label: the column's label.
    result: the setting's own run (a sweep file's when it has none).
    methods: the entries of every file of the setting, sweep rows included.
  """

  label: str
  result: dict[str, Any]
  methods: dict[str, dict[str, Any]]


def group_settings(results: Sequence[dict[str, Any]]) -> list[Setting]:
  """Joins the files of each setting; the first file's entries win."""
  settings: dict[str, Setting] = {}
  for result in results:
    label = result["column"]
    setting = settings.setdefault(label, Setting(label, result, {}))
    for name, entry in result["methods"].items():
      setting.methods.setdefault(name, entry)
  return list(settings.values())


def setting_description(setting: Setting) -> str:
  """Epochs, seeds, data sizes, split, coefficients, batch and wall time."""
  config = setting.result["config"]
  parts = [f"{config['epochs']} epochs per phase"]
  if config.get("until_train_acc") is not None:
    parts = [f"at most {config['epochs']} epochs per phase"]
  if config.get("chunks"):
    parts.append(f"{config['chunks']} chunks")
  parts.append(f"{config['seeds']} seeds")
  parts.append(f"{config['num_train']} train / {config['num_test']} test")
  if "split_per_seed" in config:
    per_seed = config["split_per_seed"]
    parts.append("split drawn per seed" if per_seed else "fixed split")
  swr = ", ".join(f"{c:g}" for c in config["coefs"]["swr"])
  parts.append(f"SWR (λ_f, λ_c) = ({swr})")
  parts.append(f"batch {config['batch_size']}")
  parts.append(f"{minutes(setting.result):.1f} min")
  return f"{setting.label}: " + ", ".join(parts)


def final_accuracy(entry: dict[str, Any]) -> list[float]:
  """Each seed's final test accuracy."""
  return entry["final_test_acc"]


def protocol_runs(
  results: Iterable[dict[str, Any]], until: bool | None = None
) -> list[dict[str, Any]]:
  """The phased protocols' runs; ``until``: only those trained to a target
  training accuracy (True) or for fixed epochs (False)."""
  runs = of_kind(results, "protocol")
  if until is None:
    return runs
  return [r for r in runs if bool(r["config"].get("until_train_acc")) == until]
