"""Writes the tables of examples/paper/RESULTS.md from the experiments' JSON.

Takes any mix of the JSON files the experiment scripts write and generates
these sections, each only when a file of its kind is given:

* random-label tasks (``examples.paper.random_labels``) and the
  calibration pilot (its ``--calibrate``);
* the warm start trained to a training accuracy (``--until-train-acc``);
* the fixed-epoch protocols (warm start, continual, generalization);
* the paper's Tables 1 and 5 and best coefficients next to our closest runs;
* Figure 1 (``examples.paper.figure1``).

Every ± is the sample standard deviation over seeds (``ddof=1``); a
comparison of two methods is the mean of their per-seed differences with a
95% t interval (``examples.paper.stats``). A file named ``sweep_*`` (a run with
``--methods swr --swr X --swr-classifier X``) becomes the row ``swr λ=X`` of
its setting's table. With ``--write FILE`` the text between
``<!-- tables:begin -->`` and ``<!-- tables:end -->`` of FILE is replaced.

  python -m examples.paper.summarize_results examples/paper/results/*.json \\
      --write examples/paper/RESULTS.md
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import dataclasses
import json
import os
import re
from typing import Any

import numpy as np

from examples import cli
from examples.paper import protocols
from examples.paper import stats

BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
METHOD_ORDER = protocols.METHODS
FIXED_EPOCH_TITLES = {
  "warm_start": "Warm start (half the data, then all of it)",
  "warm_start_online": "Online warm start (round k: the first k parts)",
  "continual_full": "Continual learning, full access (stage k: chunks 1..k)",
  "continual_limited": "Continual learning, limited access (stage k: chunk k)",
  "generalization": "Generalization (all the data, constant learning rate)",
  "generalization_lr_decay": "Generalization with lr / 10 at 50% and 75%",
}
STATS_NOTE = (
  "± is the sample standard deviation over seeds (ddof=1); a difference is "
  "the mean of per-seed differences with its 95% t interval [low, high]."
)
PULL_NOTE = (
  "λ × steps: SWR's coefficient λ_f times the optimizer steps taken; a "
  "norm's excess over its initial value shrinks by about exp(−λ × steps) "
  "(≪ 1: SWR barely acted; ≫ 1: it pinned the norms)."
)

# The paper's published numbers (PAPER.md), constants by nature.
PAPER_COLUMNS = (
  "MNIST MLP",
  "CIFAR-10 CNN",
  "CIFAR-100 CNN",
  "CIFAR-100 CNN-BN",
  "TinyImageNet VGG-16",
)
PAPER_ROWS = {
  "vanilla": "vanilla",
  "l2": "L2",
  "l2_init": "L2 Init",
  "swr": "SWR",
  "swr_reinit": "SWR + re-init",
}
# Table 1: (mean, std) of the final test accuracy, 200 epochs, lr 1e-3.
PAPER_TABLE_1 = {
  "vanilla": (
    (0.9789, 0.0009),
    (0.6500, 0.0083),
    (0.3283, 0.0067),
    (0.3234, 0.0053),
    (0.3912, 0.0142),
  ),
  "l2": (
    (0.9795, 0.0019),
    (0.7119, 0.0037),
    (0.3882, 0.0064),
    (0.4222, 0.0043),
    (0.3915, 0.0108),
  ),
  "l2_init": (
    (0.9793, 0.0016),
    (0.7041, 0.0125),
    (0.3881, 0.0050),
    (0.4030, 0.0105),
    (0.3870, 0.0143),
  ),
  "swr": (
    (0.9822, 0.0024),
    (0.7158, 0.0063),
    (0.3914, 0.0070),
    (0.4129, 0.0105),
    (0.4348, 0.0025),
  ),
}
# Table 5: the mean final test accuracy with lr / 10 at epochs 100 and 150.
PAPER_TABLE_5 = {
  "vanilla": (0.9798, 0.6571, 0.3490, 0.3483, 0.4126),
  "l2": (0.9811, 0.7304, 0.3949, 0.4532, 0.4080),
  "l2_init": (0.9811, 0.7286, 0.4048, 0.4341, 0.4199),
  "swr": (0.9796, 0.6925, 0.3599, 0.4240, 0.5221),
  "swr_reinit": (0.9829, 0.7269, 0.4133, 0.4451, 0.5165),
}
PAPER_MODELS = {
  "mlp": "MLP",
  "cnn": "CNN",
  "cnn_bn": "CNN-BN",
  "vgg16": "VGG-16",
}
FIGURE1_ROWS = 7


# Loading.


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
  """What wrote it: "protocol", "random_labels", "calibration", "figure1"."""
  if "calibration" in result:
    return "calibration"
  if "factors" in result:
    return "figure1"
  config = result.get("config", {})
  if "methods" in result and "protocol" in config:
    return "protocol"
  if "methods" in result and "tasks" in config:
    return "random_labels"
  raise ValueError(
    f"{path}: not a JSON file of examples.paper.warm_start / continual / "
    "generalization, examples.paper.random_labels or examples.paper.figure1; "
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
  """The key of ``FIXED_EPOCH_TITLES`` a protocol run belongs to."""
  key = config["protocol"]
  if config.get("online_rounds", 2) > 2:
    key += "_online"
  return key + ("_lr_decay" if config.get("lr_decay") else "")


def of_kind(results: Iterable[dict[str, Any]], kind: str) -> list[dict]:
  return [r for r in results if r["kind"] == kind]


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
  return sorted(methods, key=lambda name: order_key(name, methods[name]))


def minutes(result: dict[str, Any]) -> float:
  """The run's wall time; older files have only each method's seconds."""
  if "wall_time_s" in result:
    return result["wall_time_s"] / 60
  seconds = [e.get("seconds", 0.0) for e in result["methods"].values()]
  return sum(float(np.sum(s)) for s in seconds) / 60


# A. Random-label tasks.


def random_label_section(
  runs: Sequence[dict[str, Any]], calibrations: Sequence[dict[str, Any]]
) -> list[str]:
  """Section A: one table per run, then the calibration pilots."""
  lines = ["### Random-label tasks", ""]
  for result in runs:
    lines += random_label_table(result)
  for result in calibrations:
    lines += calibration_table(result)
  return lines


def random_label_table(result: dict[str, Any]) -> list[str]:
  """Training accuracy by task, its last tasks against vanilla, diagnostics."""
  methods = result["methods"]
  tasks = result["config"]["tasks"]
  shown = sorted({0, (tasks - 1) // 2, tasks - 1})
  recent = min(5, tasks)
  header = [
    "entry",
    *(f"task {t + 1}" for t in shown),
    f"last {recent} tasks",
    f"last {recent} − vanilla",
    "λ × steps",
    "Σ‖W‖ at the end",
    "dormant",
    "eff. rank",
  ]
  baseline = None
  if "vanilla" in methods:
    baseline = last_tasks_mean(methods["vanilla"], recent)
  rows = [
    random_label_row(name, methods[name], shown, recent, baseline)
    for name in ordered(methods)
  ]
  return [
    f"#### {result['name']}",
    "",
    *markdown_table(header, rows),
    "",
    "Training accuracy on all the examples at the end of each task; "
    f"last {recent} tasks: the mean over them per seed. The last three "
    "columns are means over seeds at the last task: the layers' summed "
    "weight norm, the fraction of dormant hidden units, the effective rank "
    "of the last hidden layer. " + STATS_NOTE + " " + PULL_NOTE,
    "",
    random_label_settings(result),
    "",
  ]


def last_tasks_mean(entry: dict[str, Any], recent: int) -> np.ndarray:
  """Each seed's mean training accuracy over the last ``recent`` tasks."""
  return np.asarray(entry["task_train_acc"], float)[:, -recent:].mean(axis=1)


def random_label_row(
  name: str,
  entry: dict[str, Any],
  shown: Sequence[int],
  recent: int,
  baseline: np.ndarray | None,
) -> list[str]:
  accuracy = np.asarray(entry["task_train_acc"], float)
  last = last_tasks_mean(entry, recent)
  compare = name != "vanilla" and baseline is not None
  norms = np.asarray(entry["weight_norms"], float)[:, -1].sum(axis=-1)
  return [
    name,
    *(mean_std_cell(accuracy[:, t]) for t in shown),
    mean_std_cell(last),
    difference_cell(last, baseline) if compare else "",
    pull_cell(entry),
    f"{norms.mean():.1f}",
    f"{np.mean(np.asarray(entry['dormant_fraction'])[:, -1]):.3f}",
    f"{np.mean(np.asarray(entry['effective_rank'])[:, -1]):.1f}",
  ]


def random_label_settings(result: dict[str, Any]) -> str:
  config = result["config"]
  coefs = ", ".join(
    f"{name} " + "/".join(f"{c:g}" for c in values)
    for name, values in config["coefs"].items()
    if name in config.get("methods", config["coefs"])
  )
  return (
    f"Settings: {data_name(config)}, {config['num_examples']} examples, "
    f"{config['tasks']} tasks × {config['steps_per_task']} steps, "
    f"{config['seeds']} seeds, batch {config['batch_size']}, Adam lr "
    f"{config['lr']:g}, coefficients {coefs}; {minutes(result):.1f} min."
  )


def calibration_table(result: dict[str, Any]) -> list[str]:
  """Vanilla's task-1 training accuracy at each checkpoint of the pilot."""
  config, calibration = result["config"], result["calibration"]
  accuracy = np.asarray(calibration["train_acc"], float)  # [seed, checkpoint]
  rows = [
    [str(step), f"{accuracy[:, i].mean():.4f}", f"{accuracy[:, i].min():.4f}"]
    for i, step in enumerate(calibration["steps"])
  ]
  return [
    f"#### Calibration: {result['name']}",
    "",
    *markdown_table(["steps", "mean", "min over seeds"], rows),
    "",
    f"Vanilla Adam's training accuracy on task 1 ({data_name(config)}, "
    f"{config['num_examples']} examples, {config['seeds']} seeds, batch "
    f"{config['batch_size']}). Calibrated steps per task, the first "
    f"checkpoint where every seed reaches {calibration['target']:g}: "
    f"{calibration['calibrated_steps']}; {minutes(result):.1f} min.",
    "",
  ]


# Protocol settings: a setting's own run and its sweep rows.


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
  return entry["final_test_acc"]


# B. Warm start trained to a training accuracy.


def until_section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Section B: one table per setting, sweep rows joining theirs."""
  lines = ["### Warm start trained to convergence", ""]
  for setting in group_settings(results):
    lines += until_table(setting)
  return lines


def until_table(setting: Setting) -> list[str]:
  config = setting.result["config"]
  rounds = config.get("online_rounds", 2)
  kind = "warm start" if rounds == 2 else f"online, {rounds} rounds"
  if config["protocol"] != "warm_start":
    kind = config["protocol"].replace("_", " ")
  scratch = setting.methods.get("from_scratch")
  header = [
    "method",
    "final test acc",
    "gap: from_scratch − method",
    "epochs per phase",
    "λ_f × steps",
  ]
  rows = [
    until_row(name, setting.methods[name], scratch)
    for name in ordered(setting.methods)
  ]
  return [
    f"#### {setting.label}: {kind}",
    "",
    *markdown_table(header, rows),
    "",
    "Each phase trains until its training accuracy reaches "
    f"{config['until_train_acc']:g} (at most {config['epochs']} epochs); "
    "epochs per phase: the mean over seeds. The gap > 0 means the warm "
    "start generalizes worse than training from scratch. "
    + STATS_NOTE
    + " "
    + PULL_NOTE,
    "",
    f"Settings: {setting_description(setting)}.",
    "",
  ]


def until_row(
  name: str, entry: dict[str, Any], scratch: dict[str, Any] | None
) -> list[str]:
  compare = scratch is not None and name != "from_scratch"
  epochs = np.mean(np.asarray(entry["epochs_per_phase"], float), axis=0)
  return [
    name,
    mean_std_cell(final_accuracy(entry)),
    difference_cell(final_accuracy(scratch), final_accuracy(entry))
    if compare
    else "",
    " / ".join(number(e) for e in epochs),
    pull_cell(entry),
  ]


# C. The fixed-epoch protocols.


def fixed_epoch_section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Section C: per protocol, settings across and methods down."""
  lines = []
  for key, title in FIXED_EPOCH_TITLES.items():
    group = [r for r in results if protocol_key(r["config"]) == key]
    if group:
      lines += fixed_epoch_tables(title, group_settings(group))
  return lines


def fixed_epoch_tables(title: str, settings: Sequence[Setting]) -> list[str]:
  differences = settings_table(settings, difference_from_vanilla)
  pulls = [pull_cell(s.methods.get("swr", {})) for s in settings]
  differences.append("| SWR λ_f × steps | " + " | ".join(pulls) + " |")
  descriptions = "; ".join(setting_description(s) for s in settings)
  return [
    f"### {title}",
    "",
    "Final test accuracy:",
    "",
    *settings_table(settings, lambda s, name: accuracy_cell(s.methods[name])),
    "",
    "Final test accuracy, method − vanilla (paired per seed, 95% CI):",
    "",
    *differences,
    "",
    "Sum of the layers' weight norms at the end (mean over seeds):",
    "",
    *settings_table(settings, lambda s, name: norm_cell(s.methods[name])),
    "",
    STATS_NOTE + " " + PULL_NOTE,
    "",
    f"Settings: {descriptions}.",
    "",
  ]


def settings_table(
  settings: Sequence[Setting], cell: Callable[[Setting, str], str]
) -> list[str]:
  """Methods down, settings across; blank where a setting lacks a method."""
  methods: dict[str, dict[str, Any]] = {}
  for setting in settings:
    for name, entry in setting.methods.items():
      methods.setdefault(name, entry)
  rows = [
    [name, *(cell(s, name) if name in s.methods else "" for s in settings)]
    for name in ordered(methods)
  ]
  return markdown_table(["method", *(s.label for s in settings)], rows)


def accuracy_cell(entry: dict[str, Any]) -> str:
  return mean_std_cell(final_accuracy(entry))


def norm_cell(entry: dict[str, Any]) -> str:
  norms = np.array([seed[-1] for seed in entry["weight_norms"]]).sum(axis=-1)
  return f"{norms.mean():.1f}"


def difference_from_vanilla(setting: Setting, name: str) -> str:
  vanilla = setting.methods.get("vanilla")
  if vanilla is None or name == "vanilla":
    return ""
  return difference_cell(
    final_accuracy(setting.methods[name]), final_accuracy(vanilla)
  )


# D. The paper's numbers next to ours.


def paper_section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Section D: Tables 1 and 5 and the best coefficients, with our runs."""
  own = [r for r in results if not r["sweep"]]
  constant = [r for r in own if protocol_key(r["config"]) == "generalization"]
  decay = [
    r for r in own if protocol_key(r["config"]) == "generalization_lr_decay"
  ]
  return [
    "### The paper's numbers next to ours",
    "",
    "The paper's columns are its published values (PAPER.md), kept as "
    "constants in `examples/paper/summarize_results.py`; the columns marked "
    "ours are generated from our generalization runs, on our data and "
    "budgets.",
    "",
    "Final test accuracy, constant learning rate (the paper's Table 1: 200 "
    "epochs, lr 1e-3, mean ± std):",
    "",
    *paper_table(PAPER_TABLE_1, constant, with_std=True),
    "",
    "Final test accuracy with lr / 10 at 50% and 75% of training (the "
    "paper's Table 5, means only):",
    "",
    *paper_table(PAPER_TABLE_5, decay, with_std=False),
    "",
    "SWR's best coefficients (λ_f, λ_c) in the paper's warm-start and "
    "continual sweeps, and those our runs used:",
    "",
    *best_coefficients_table(own),
    "",
  ]


def paper_table(
  paper: dict[str, tuple[Any, ...]],
  ours: Sequence[dict[str, Any]],
  with_std: bool,
) -> list[str]:
  """The paper's columns, then one column per run of ours."""
  header = ["method", *PAPER_COLUMNS]
  header += [f"ours: {r['column']}" for r in ours]
  rows = []
  for method, values in paper.items():
    cells = [
      f"{v[0]:.4f} ± {v[1]:.4f}" if with_std else f"{v:.4f}" for v in values
    ]
    cells += [
      accuracy_cell(r["methods"][method]) if method in r["methods"] else ""
      for r in ours
    ]
    rows.append([PAPER_ROWS[method], *cells])
  return markdown_table(header, rows)


def best_coefficients_table(own: Sequence[dict[str, Any]]) -> list[str]:
  rows = []
  for protocol, by_model in protocols.PAPER_SWR_COEFS.items():
    paper = [
      coefficient_text(by_model[m]) if m in by_model else ""
      for m in PAPER_MODELS
    ]
    used = {
      r["config"]["model"]: coefficient_text(r["config"]["coefs"]["swr"])
      for r in own
      if protocol_key(r["config"]) == protocol
    }
    ours = ", ".join(f"{m} {c}" for m, c in sorted(used.items()))
    rows.append([protocol.replace("_", " "), *paper, ours])
  header = ["protocol", *PAPER_MODELS.values(), "ours"]
  return markdown_table(header, rows)


def coefficient_text(coefs: Sequence[float]) -> str:
  return "(" + ", ".join(f"{c:g}" for c in coefs) + ")"


# E. Figure 1.


def figure1_section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Section E: test accuracy after scaling, at a handful of factors."""
  lines = ["### Figure 1: scaling the weights with and without the biases", ""]
  for result in results:
    lines += figure1_table(result)
  return lines


def figure1_table(result: dict[str, Any]) -> list[str]:
  config, factors = result["config"], result["factors"]
  count = min(FIGURE1_ROWS, len(factors))
  picked = np.unique(np.round(np.linspace(0, len(factors) - 1, count)))
  rows = [
    [
      f"{factors[i]:.3g}",
      f"{result['proportional_test_acc'][i]:.4f}",
      f"{result['weights_only_test_acc'][i]:.4f}",
      f"{result['proportional_max_rel_error'][i]:.1e}",
    ]
    for i in picked.astype(int)
  ]
  header = ["factor c", "proportional", "weights only", "max rel. error"]
  return [
    f"#### {result['name']}",
    "",
    *markdown_table(header, rows),
    "",
    "Test accuracy after multiplying every kernel by c: proportional also "
    "multiplies layer l's bias by c^l (Theorem 1), weights only leaves the "
    "biases; max rel. error: max |f_c(x) − C_L f(x)| / max |C_L f(x)| of "
    f"proportional scaling. Settings: {data_name(config)} "
    f"{config['model']}, {config['epochs']} "
    f"{'epoch' if config['epochs'] == 1 else 'epochs'}, seed {config['seed']}; "
    f"unscaled test accuracy {result['base_test_acc']:.4f}; "
    f"{minutes(result):.1f} min.",
    "",
  ]


# The whole report.


def markdown(results: Sequence[dict[str, Any]]) -> str:
  """Every section for which a file of its kind is given."""
  protocol_runs = of_kind(results, "protocol")
  until = [r for r in protocol_runs if r["config"].get("until_train_acc")]
  fixed = [r for r in protocol_runs if r not in until]
  runs = of_kind(results, "random_labels")
  calibrations = of_kind(results, "calibration")
  lines = []
  if runs or calibrations:
    lines += random_label_section(runs, calibrations)
  if until:
    lines += until_section(until)
  if fixed:
    lines += fixed_epoch_section(fixed)
  if protocol_runs:
    lines += paper_section(protocol_runs)
  if of_kind(results, "figure1"):
    lines += figure1_section(of_kind(results, "figure1"))
  return "\n".join(lines).rstrip("\n")


def replace_tables(content: str, text: str, path: str = "the file") -> str:
  """``content`` with the text between the markers replaced by ``text``."""
  if BEGIN not in content or END not in content:
    raise ValueError(
      f"{path} lacks the markers {BEGIN} ... {END}; add them where the "
      "tables should go."
    )
  pattern = re.escape(BEGIN) + ".*?" + re.escape(END)
  block = f"{BEGIN}\n{text}\n{END}"
  return re.sub(pattern, lambda _: block, content, count=1, flags=re.DOTALL)


def main(argv: Sequence[str] | None = None) -> None:
  parser = cli.parser(__doc__)
  parser.add_argument("files", nargs="+", help="the experiments' JSON files")
  parser.add_argument(
    "--write", default=None, help="replace the tables between FILE's markers"
  )
  args = parser.parse_args(argv)
  text = markdown(load(args.files))
  if args.write is None:
    print(text)
    return
  content = open(args.write).read() if os.path.exists(args.write) else ""
  content = replace_tables(content, text, args.write)
  with open(args.write, "w") as file:
    file.write(content)


if __name__ == "__main__":
  main()
