"""Tables and figures of ``examples/lm/RESULTS.md`` from the scripts' JSON.

  python -m examples.lm.report --char-gpt examples/lm/results/char_gpt.json \\
      --permuted examples/lm/results/permuted_vocab.json \\
      --figures examples/lm/figures --write examples/lm/RESULTS.md

prints the markdown tables, or with ``--write`` puts them between the
``<!-- tables:begin -->`` and ``<!-- tables:end -->`` markers of the file,
and writes one figure per JSON. Differences between methods are paired by seed, with
Holm's correction over each table's comparisons and Bonferroni intervals
(``examples/paper/stats.py``).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Sequence
import os
from typing import Any

import numpy as np

from examples.lm import selection
from examples.paper import stats
from examples.paper import summarize_results


def steps_to_reach(
  curve: np.ndarray, steps: Sequence[int], target: float
) -> str:
  """The first evaluated step whose mean loss is at most ``target``, or '-'."""
  hits = np.flatnonzero(curve <= target)
  return str(steps[hits[0]]) if hits.size else "not reached"


def char_gpt_lines(
  results: dict[str, Any], reference: str = "adamw"
) -> list[str]:
  """The char-GPT table: each method's chosen setting, test loss, speed, norms."""
  methods = results["methods"]
  steps = results["eval_steps"]
  final = {m: np.asarray(e["test_loss"])[:, -1] for m, e in methods.items()}
  others = [m for m in methods if m != reference]
  comparisons = (
    stats.holm({m: (final[m], final[reference]) for m in others})
    if reference in methods and len(final[reference]) > 1 and others
    else {}
  )
  target = final[reference].mean() if reference in methods else np.nan
  lines = [
    f"| method | lr | coef | test loss at step {steps[-1]} | − {reference} "
    "(Holm p) | steps to "
    f"{reference}'s final loss | ms per step (runs) | summed matrix norm |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for name, entry in methods.items():
    curve = np.asarray(entry["test_loss"]).mean(axis=0)
    comparison = comparisons.get(name)
    versus = (
      f"{comparison.difference} ({comparison.holm_p:.3f})"
      if comparison
      else "—"
    )
    edge = {axis: "" for axis in ("--lr", "coef")}
    for axis in entry["at_edge"]:
      bounds = (0.0, selection.coef_upper(name))
      at_bound = axis == "coef" and entry["coef"] in bounds
      edge[axis] = " (bound)" if at_bound else " (edge)"
    norm = np.asarray(entry["weight_norms"])[:, -1].mean()
    lines.append(
      f"| {name} | {entry['lr']:g}{edge['--lr']} | {entry['coef']:g}{edge['coef']} | "
      f"{stats.mean_std_text(final[name])} | {versus} | "
      f"{steps_to_reach(curve, steps, target)} | "
      f"{entry['step_time_s'] * 1e3:.0f} ({entry['runs_per_step']}) | {norm:.1f} |"
    )
  return lines


def layer_lines(results: dict[str, Any]) -> list[str]:
  """Free, constrained and pinned layers under each trace; norm growth removed."""
  lines = ["| trace | free | constrained | pinned (ConstrainedLayersWarning) |"]
  lines.append("|---|---|---|---|")
  for trace, classes in results["swr_layers"].items():
    count = collections.Counter(classes.values())
    pinned = [n for n, c in classes.items() if c == "pinned"] or ["none"]
    lines.append(
      f"| {trace} | {count['free']} | {count['constrained']} | "
      f"{count['pinned']}: {', '.join(pinned)} |"
    )
  lines += ["", "| method | median ‖W‖/‖W₀‖ | largest | Σ log(‖W‖/‖W₀‖)² |"]
  lines.append("|---|---|---|---|")
  for name, entry in results["methods"].items():
    ratios = np.asarray(
      [np.mean(v) for v in entry["layer_norm_ratios"].values()]
    )
    distance = float(np.sum(np.log(ratios) ** 2))
    lines.append(
      f"| {name} | {np.median(ratios):.3f} | {ratios.max():.3f} | {distance:.3f} |"
    )
  return lines


def permuted_lines(
  results: dict[str, Any], reference: str = "adam"
) -> list[str]:
  """The continual table: task 1, the last tasks, gaps and differences."""
  methods = results["methods"]
  last = min(5, results["config"]["tasks"] - 1)
  late = {
    m: np.asarray(e["task_test_loss"])[:, -last:].mean(axis=1)
    for m, e in methods.items()
  }
  others = [m for m in methods if m != reference]
  comparisons = (
    stats.holm({m: (late[reference], late[m]) for m in others})
    if reference in methods and others and len(late[reference]) > 1
    else {}
  )
  lines = [
    f"| method | lr | coef | task 1 | last {last} tasks | last {last} − task 1 | "
    f"last task − fresh model | {reference} − method, last {last} (Holm p) |",
    "|---|---|---|---|---|---|---|---|",
  ]
  for name, entry in methods.items():
    losses = np.asarray(entry["task_test_loss"])
    fresh = np.asarray(entry["fresh_test_loss"])
    comparison = comparisons.get(name)
    versus = (
      f"{comparison.difference} ({comparison.holm_p:.3f})"
      if comparison
      else "—"
    )
    lines.append(
      f"| {name} | {entry['lr']:g} | {entry['coef']:g} | "
      f"{stats.mean_std_text(losses[:, 0])} | {stats.mean_std_text(late[name])} | "
      f"{stats.paired(late[name], losses[:, 0])} | "
      f"{stats.paired(losses[:, -1], fresh)} | {versus} |"
    )
  return lines


def plot_char_gpt(results: dict[str, Any], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (loss_ax, norm_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
  steps = results["eval_steps"]
  for name, entry in results["methods"].items():
    for ax, key in ((loss_ax, "test_loss"), (norm_ax, "weight_norms")):
      values = np.asarray(entry[key])
      mean = values.mean(axis=0)
      (line,) = ax.plot(steps, mean, label=f"{name} (lr {entry['lr']:g})")
      ax.fill_between(
        steps,
        values.min(axis=0),
        values.max(axis=0),
        alpha=0.15,
        color=line.get_color(),
      )
  loss_ax.set(
    xlabel="step", ylabel="test loss (nats/char)", title="char GPT, test split"
  )
  norm_ax.set(xlabel="step", ylabel="summed matrix norm", title="weight norms")
  loss_ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_permuted(results: dict[str, Any], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(6, 3.8))
  for name, entry in results["methods"].items():
    losses = np.asarray(entry["task_test_loss"])
    tasks = np.arange(1, losses.shape[1] + 1)
    (line,) = ax.plot(tasks, losses.mean(axis=0), marker=".", label=name)
    ax.axhline(
      np.mean(entry["fresh_test_loss"]), color=line.get_color(), ls=":", lw=0.8
    )
  ax.set(
    xlabel="task",
    ylabel="test loss at the task's end",
    title="permuted vocabulary (dotted: a fresh model on the last task)",
  )
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def settings_line(results: dict[str, Any]) -> str:
  """What was run: model, text, budget, seeds, wall time."""
  config, corpus = results["config"], results["corpus"]
  budget = (
    f"{config['tasks']} tasks × {config['steps_per_task']} steps"
    if "tasks" in config
    else f"{config['steps']} steps"
  )
  model = results.get("model", {}).get("params")
  return (
    f"Settings: text {config['text']!r} ({corpus['train_chars']:,} training characters, "
    f"vocabulary {corpus['vocab_size']}, unigram entropy "
    f"{corpus['unigram_entropy']:.3f} nats); GPT dim {config['dim']}, depth "
    f"{config['depth']}, {config['heads']} heads, context {config['context']}"
    + (f" ({model:,} params)" if model else "")
    + f"; batch {config['batch_size']}; {budget}; learning rates "
    f"{', '.join(f'{lr:g}' for lr in learning_rates(results))}; "
    f"{config['seeds']} seeds; wall time {results['wall_time_s'] / 60:.1f} min. Each "
    "method's setting: the lowest mean final loss on the validation split; the numbers: "
    "the test split. ± is the sample standard deviation over seeds; a difference is "
    "paired by seed, with a Bonferroni interval over the table and Holm's p."
  )


def learning_rates(results: dict[str, Any]) -> list[float]:
  """Every learning rate a method of ``results`` ran at (over merged files)."""
  rates = {
    row[0]
    for entry in results["methods"].values()
    for row in entry.get("grid_val_loss", [])
  }
  return sorted(rates or results["config"]["lr"])


def grid_line(name: str, entry: dict[str, Any]) -> str:
  """A method's grid: each setting's mean validation loss, the chosen in bold."""
  grid = entry["grid_val_loss"]
  several_lrs = len({row[0] for row in grid}) > 1
  no_coef = {row[1] for row in grid} == {0.0}
  cells = []
  for lr, coef, score in sorted(grid, key=lambda row: (row[1], row[0])):
    if no_coef:
      setting = f"lr {lr:g}"
    else:
      setting = f"{coef:g} at lr {lr:g}" if several_lrs else f"{coef:g}"
    cell = f"{setting}: {score:.4f}"
    chosen = (lr, coef) == (entry["lr"], entry["coef"])
    cells.append(f"**{cell}**" if chosen else cell)
  return f"| {name} | {', '.join(cells)} |"


def grid_lines(results: dict[str, Any], score: str) -> list[str]:
  """Every method's grid (:func:`grid_line`) as a table."""
  return [
    f"| method | setting: {score} validation loss (mean over seeds) |",
    "|---|---|",
  ] + [grid_line(name, e) for name, e in results["methods"].items()]


def markdown(
  char_gpt: str | None,
  permuted: str | None,
  figures: str | None,
  permuted_report: str | None = None,
  permuted_quick: str | None = None,
  char_gpt_scale: str | None = None,
) -> str:
  """The tables (and figures) of the given JSON files.

  ``permuted`` are the selection runs (every grid, 3 seeds); ``permuted_report``
  the runs of each method at its chosen setting on more seeds, whose table
  and figure come first when given; ``permuted_quick`` the same on fewer
  seeds (``make results``' run), a table after them; ``char_gpt_scale`` a
  char GPT at the issue's scale (its own table and figure).
  """
  lines: list[str] = []
  if char_gpt:
    results = selection.load(char_gpt)
    lines += ["### Character GPT", "", settings_line(results), ""]
    lines += char_gpt_lines(results) + [""] + grid_lines(results, "final")
    lines += [""] + layer_lines(results) + [""]
    if figures:
      plot_char_gpt(results, os.path.join(figures, "char_gpt.png"))
      lines += ["![char GPT](figures/char_gpt.png)", ""]
  if char_gpt_scale:
    results = selection.load(char_gpt_scale)
    lines += [
      "### Character GPT at the issue's scale",
      "",
      settings_line(results),
      "",
    ]
    lines += char_gpt_lines(results) + [""] + layer_lines(results)[5:] + [""]
    if figures:
      plot_char_gpt(results, os.path.join(figures, "char_gpt_scale.png"))
      lines += ["![char GPT at scale](figures/char_gpt_scale.png)", ""]
  if permuted_report:
    results = selection.load(permuted_report)
    lines += ["### Permuted vocabulary: each method at its chosen setting", ""]
    lines += [settings_line(results), ""] + permuted_lines(results) + [""]
    if figures:
      plot_permuted(results, os.path.join(figures, "permuted_vocab.png"))
      lines += ["![permuted vocabulary](figures/permuted_vocab.png)", ""]
  if permuted_quick:
    results = selection.load(permuted_quick)
    lines += ["### Permuted vocabulary: the quick run of `make results`", ""]
    lines += [settings_line(results), ""] + permuted_lines(results) + [""]
  if permuted:
    results = selection.load(permuted)
    title = "selection runs" if permuted_report else "every grid"
    lines += [
      f"### Permuted vocabulary: {title}",
      "",
      settings_line(results),
      "",
    ]
    lines += grid_lines(results, "mean over tasks of the")
    lines += [""] + permuted_lines(results) + [""]
    if figures and not permuted_report:
      plot_permuted(results, os.path.join(figures, "permuted_vocab.png"))
      lines += ["![permuted vocabulary](figures/permuted_vocab.png)", ""]
  return "\n".join(lines).rstrip("\n")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--char-gpt", help="a char_gpt JSON")
  parser.add_argument(
    "--permuted", help="permuted_vocab JSON files, comma-separated (merged)"
  )
  parser.add_argument(
    "--permuted-report",
    help="permuted_vocab JSON files of the chosen settings on more seeds",
  )
  parser.add_argument(
    "--permuted-quick",
    help="a permuted_vocab JSON of the chosen settings on fewer seeds",
  )
  parser.add_argument(
    "--char-gpt-scale",
    help="char_gpt JSON files at the issue's scale, comma-separated (merged)",
  )
  parser.add_argument("--figures", help="write the figures into this folder")
  parser.add_argument(
    "--write", help="replace the tables between FILE's markers"
  )
  args = parser.parse_args(argv)
  if args.figures:
    os.makedirs(args.figures, exist_ok=True)
  text = markdown(
    args.char_gpt,
    args.permuted,
    args.figures,
    args.permuted_report,
    args.permuted_quick,
    args.char_gpt_scale,
  )
  if not args.write:
    print(text)
    return
  summarize_results.write_tables(args.write, text)


if __name__ == "__main__":
  main()
