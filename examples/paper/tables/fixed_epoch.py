"""The fixed-epoch protocols' tables: per protocol, settings across and
methods down (accuracy, difference from vanilla, weight norms).

A phased protocol (``examples.paper.runner``) gets its tables from one entry
of :data:`TITLES`: the key its JSON's ``config.protocol`` names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from examples.paper.tables import common

TITLES = {
  "warm_start": "Warm start (half the data, then all of it)",
  "warm_start_online": "Online warm start (round k: the first k parts)",
  "continual_full": "Continual learning, full access (stage k: chunks 1..k)",
  "continual_limited": "Continual learning, limited access (stage k: chunk k)",
  "generalization": "Generalization (all the data, constant learning rate)",
  "generalization_lr_decay": "Generalization with lr / 10 at 50% and 75%",
}


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Per protocol of :data:`TITLES`, settings across and methods down."""
  runs = common.protocol_runs(results, until=False)
  lines = []
  for key, title in TITLES.items():
    group = [r for r in runs if common.protocol_key(r["config"]) == key]
    if group:
      lines += fixed_epoch_tables(title, common.group_settings(group))
  return lines


def fixed_epoch_tables(
  title: str, settings: Sequence[common.Setting]
) -> list[str]:
  differences = settings_table(settings, difference_from_vanilla)
  pulls = [common.pull_cell(s.methods.get("swr", {})) for s in settings]
  differences.append("| SWR λ_f × steps | " + " | ".join(pulls) + " |")
  descriptions = "; ".join(common.setting_description(s) for s in settings)
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
    common.STATS_NOTE + " " + common.PULL_NOTE,
    "",
    f"Settings: {descriptions}.",
    "",
  ]


def settings_table(
  settings: Sequence[common.Setting], cell: Callable[[common.Setting, str], str]
) -> list[str]:
  """Methods down, settings across; blank where a setting lacks a method."""
  methods: dict[str, dict[str, Any]] = {}
  for setting in settings:
    for name, entry in setting.methods.items():
      methods.setdefault(name, entry)
  rows = [
    [name, *(cell(s, name) if name in s.methods else "" for s in settings)]
    for name in common.ordered(methods)
  ]
  return common.markdown_table(["method", *(s.label for s in settings)], rows)


def accuracy_cell(entry: dict[str, Any]) -> str:
  """The final test accuracy, mean ± std."""
  return common.mean_std_cell(common.final_accuracy(entry))


def norm_cell(entry: dict[str, Any]) -> str:
  """The layers' summed weight norm at the end, mean over seeds."""
  norms = np.array([seed[-1] for seed in entry["weight_norms"]]).sum(axis=-1)
  return f"{norms.mean():.1f}"


def difference_from_vanilla(setting: common.Setting, name: str) -> str:
  """``name`` − vanilla, paired per seed; blank for vanilla itself."""
  vanilla = setting.methods.get("vanilla")
  if vanilla is None or name == "vanilla":
    return ""
  return common.difference_cell(
    common.final_accuracy(setting.methods[name]), common.final_accuracy(vanilla)
  )
