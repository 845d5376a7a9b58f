"""The warm start trained to a training accuracy (``--until-train-acc``):
one table per setting, sweep rows joining theirs, against ``from_scratch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from examples.paper.tables import common


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """One table per setting, sweep rows joining theirs."""
  runs = common.protocol_runs(results, until=True)
  if not runs:
    return []
  lines = ["### Warm start trained to convergence", ""]
  for setting in common.group_settings(runs):
    lines += until_table(setting)
  return lines


def until_table(setting: common.Setting) -> list[str]:
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
    for name in common.ordered(setting.methods)
  ]
  return [
    f"#### {setting.label}: {kind}",
    "",
    *common.markdown_table(header, rows),
    "",
    "Each phase trains until its training accuracy reaches "
    f"{config['until_train_acc']:g} (at most {config['epochs']} epochs); "
    "epochs per phase: the mean over seeds. The gap > 0 means the warm "
    "start generalizes worse than training from scratch. "
    + common.STATS_NOTE
    + " "
    + common.PULL_NOTE,
    "",
    f"Settings: {common.setting_description(setting)}.",
    "",
  ]


def until_row(
  name: str, entry: dict[str, Any], scratch: dict[str, Any] | None
) -> list[str]:
  compare = scratch is not None and name != "from_scratch"
  epochs = np.mean(np.asarray(entry["epochs_per_phase"], float), axis=0)
  return [
    name,
    common.mean_std_cell(common.final_accuracy(entry)),
    common.difference_cell(
      common.final_accuracy(scratch), common.final_accuracy(entry)
    )
    if compare
    else "",
    " / ".join(common.number(e) for e in epochs),
    common.pull_cell(entry),
  ]
