"""The paper's published numbers (PAPER.md) next to ours: Tables 1 and 5
and SWR's best coefficients, with our generalization runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from examples.paper import protocols
from examples.paper.tables import common
from examples.paper.tables import fixed_epoch

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


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Tables 1 and 5 and the best coefficients, with our runs."""
  runs = common.protocol_runs(results)
  if not runs:
    return []
  own = [r for r in runs if not r["sweep"]]
  constant = [
    r for r in own if common.protocol_key(r["config"]) == "generalization"
  ]
  decay = [
    r
    for r in own
    if common.protocol_key(r["config"]) == "generalization_lr_decay"
  ]
  return [
    "### The paper's numbers next to ours",
    "",
    "The paper's columns are its published values (PAPER.md), kept as "
    "constants in `examples/paper/tables/published.py`; the columns marked "
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
      fixed_epoch.accuracy_cell(r["methods"][method])
      if method in r["methods"]
      else ""
      for r in ours
    ]
    rows.append([PAPER_ROWS[method], *cells])
  return common.markdown_table(header, rows)


def best_coefficients_table(own: Sequence[dict[str, Any]]) -> list[str]:
  """SWR's best (lambda_f, lambda_c) in the paper, and those we used."""
  rows = []
  for protocol, by_model in protocols.PAPER_SWR_COEFS.items():
    paper = [
      coefficient_text(by_model[m]) if m in by_model else ""
      for m in PAPER_MODELS
    ]
    used = {
      r["config"]["model"]: coefficient_text(r["config"]["coefs"]["swr"])
      for r in own
      if common.protocol_key(r["config"]) == protocol
    }
    ours = ", ".join(f"{m} {c}" for m, c in sorted(used.items()))
    rows.append([protocol.replace("_", " "), *paper, ours])
  header = ["protocol", *PAPER_MODELS.values(), "ours"]
  return common.markdown_table(header, rows)


def coefficient_text(coefs: Sequence[float]) -> str:
  """``(1e-3, 0.1)``."""
  return "(" + ", ".join(f"{c:g}" for c in coefs) + ")"
