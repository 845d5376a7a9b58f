"""The paper's Figure 1 as a table: test accuracy after scaling the weights
with and without the biases, at a handful of factors
(``examples.paper.figure1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from examples.paper.tables import common

ROWS = 7


def section(results: Sequence[dict[str, Any]]) -> list[str]:
  """Test accuracy after scaling, at a handful of factors."""
  runs = common.of_kind(results, "figure1")
  if not runs:
    return []
  lines = ["### Figure 1: scaling the weights with and without the biases", ""]
  for result in runs:
    lines += figure1_table(result)
  return lines


def figure1_table(result: dict[str, Any]) -> list[str]:
  """The table of one run of ``examples.paper.figure1``."""
  config, factors = result["config"], result["factors"]
  count = min(ROWS, len(factors))
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
    *common.markdown_table(header, rows),
    "",
    "Test accuracy after multiplying every kernel by c: proportional also "
    "multiplies layer l's bias by c^l (Theorem 1), weights only leaves the "
    "biases; max rel. error: max |f_c(x) − C_L f(x)| / max |C_L f(x)| of "
    f"proportional scaling. Settings: {common.data_name(config)} "
    f"{config['model']}, {config['epochs']} "
    f"{'epoch' if config['epochs'] == 1 else 'epochs'}, seed {config['seed']}; "
    f"unscaled test accuracy {result['base_test_acc']:.4f}; "
    f"{common.minutes(result):.1f} min.",
    "",
  ]
