"""Writes examples/colab_quickstart.ipynb from the cell sources below.

The notebook is generated, so that its diff is reviewable here and it stays
reproducible: edit the cells in ``examples/colab_quickstart.py``, then run
from the repository root::

  python -m examples.make_colab_notebook          # rewrite the notebook
  python -m examples.make_colab_notebook --check  # fail if it is stale

Cells are written without outputs and with fixed ids, so regenerating an
unchanged notebook gives the same bytes. ``tests/test_notebook.py`` executes
the notebook offline (scikit-learn's digits) and checks that it is current.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import sys

import nbformat
from nbformat import v4

from examples import cli
from examples import colab_quickstart

NOTEBOOK = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "colab_quickstart.ipynb"
)


def build() -> nbformat.NotebookNode:
  """The notebook, without outputs."""
  cells = []
  for kind, cell_id, source in colab_quickstart.CELLS:
    if kind == "markdown":
      cell = v4.new_markdown_cell(source)
    else:
      cell = v4.new_code_cell(source)
    cell["id"] = cell_id
    cells.append(cell)
  notebook = v4.new_notebook(cells=cells)
  notebook.metadata = {
    "accelerator": "GPU",
    "colab": {"provenance": [], "gpuType": "T4"},
    "kernelspec": {
      "display_name": "Python 3",
      "language": "python",
      "name": "python3",
    },
    "language_info": {"name": "python"},
  }
  nbformat.validate(notebook)
  return notebook


def render() -> str:
  return nbformat.writes(build()) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli.parser(__doc__)
  parser.add_argument(
    "--check",
    action="store_true",
    help="exit 1 if the notebook differs from the cells",
  )
  parser.add_argument("--out", default=NOTEBOOK)
  args = parser.parse_args(argv)
  text = render()
  if args.check:
    with open(args.out, encoding="utf-8") as file:
      if file.read() != text:
        print(
          f"{args.out} is stale: run python -m examples.make_colab_notebook"
        )
        return 1
    return 0
  with open(args.out, "w", encoding="utf-8") as file:
    file.write(text)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
