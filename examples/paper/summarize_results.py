"""Writes the tables of examples/paper/RESULTS.md from the experiments' JSON.

Takes any mix of the JSON files the experiment scripts write and generates
these sections, each only when a file of its kind is given:

* random-label tasks (``examples.paper.random_labels``) and the
  calibration pilot (its ``--calibrate``);
* permuted inputs (``examples.paper.permuted_inputs``) and its calibration
  pilot;
* the settings of a task sequence chosen on selection seeds and reported on
  others (a run of ``--from-selection``, with its selection runs);
* the warm start trained to a training accuracy (``--until-train-acc``);
* the fixed-epoch protocols (warm start, continual, generalization);
* the paper's Tables 1 and 5 and best coefficients next to our closest runs;
* Figure 1 (``examples.paper.figure1``).

Each section is a module of ``examples/paper/tables/`` with a
``section(results) -> lines`` function, listed in :data:`SECTIONS`: a new
protocol with tables of its own adds its module there.

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

from collections.abc import Callable, Sequence
import os
import re
from typing import Any

from examples import cli
from examples.paper.tables import common
from examples.paper.tables import converged
from examples.paper.tables import figure1
from examples.paper.tables import fixed_epoch
from examples.paper.tables import permuted
from examples.paper.tables import published
from examples.paper.tables import random_labels
from examples.paper.tables import selected

BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
# The report's sections, in order; each returns no lines without its files.
SECTIONS: tuple[Callable[[Sequence[dict[str, Any]]], list[str]], ...] = (
  random_labels.section,
  permuted.section,
  selected.section,
  converged.section,
  fixed_epoch.section,
  published.section,
  figure1.section,
)
load = common.load


def markdown(results: Sequence[dict[str, Any]]) -> str:
  """Every section for which a file of its kind is given."""
  lines = [line for section in SECTIONS for line in section(results)]
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
  write_tables(args.write, text)


def write_tables(path: str, text: str) -> None:
  """Puts ``text`` between the markers of the file at ``path`` (:func:`replace_tables`)."""
  content = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
  content = replace_tables(content, text, path)
  with open(path, "w", encoding="utf-8") as file:
    file.write(content)


if __name__ == "__main__":
  main()
