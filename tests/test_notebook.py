"""examples/colab_quickstart.ipynb: current, the paper's CNN, runs offline.

The notebook is executed end to end with nbclient the way CI has it: no
tensorflow-datasets (``OPTAX_SWR_OFFLINE=1`` makes the notebook skip CIFAR-10
even where it is installed), so it trains on scikit-learn's digits, with
``OPTAX_SWR_NOTEBOOK_QUICK=1`` (2 epochs instead of 40: every cell runs, and
after 2 epochs both runs are near 0.9 test accuracy). Measured on 2 CPU cores
with one of them busy: about 22 s for this test's run (33 s at 6 epochs); the
default offline run (40 epochs) took 112 to 121 s.
"""

from __future__ import annotations

import copy
import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip(
  "nbformat", reason="executing the notebook needs the [notebook] extra"
)
nbclient = pytest.importorskip(
  "nbclient", reason="executing the notebook needs the [notebook] extra"
)
pytest.importorskip(
  "ipykernel", reason="executing the notebook needs the [notebook] extra"
)
pytest.importorskip("sklearn", reason="the notebook needs the [examples] extra")
pytest.importorskip("matplotlib", reason="the notebook needs the [plots] extra")

# pylint: disable=g-import-not-at-top,wrong-import-position
from examples import colab_quickstart
from examples import make_colab_notebook

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "colab_quickstart.ipynb"
CELL_TIMEOUT_S = 300
RESULTS_MARKER = "NOTEBOOK_RESULTS "
# Appended to the notebook before it runs: what the test checks, as JSON.
REPORT_CELL = f"""
import json
print({RESULTS_MARKER!r} + json.dumps({{
    "data": DATA,
    "backend": BACKEND,
    "epochs": EPOCHS,
    "final_acc": {{n: h["test_acc"][-1] for n, h in results.items()}},
    "final_norm": {{n: float(h["norms"][-1].sum()) for n, h in results.items()}},
    "initial_norm": initial_norm,
}}))
"""


def test_notebook_is_generated_from_make_colab_notebook():
  assert NOTEBOOK.read_text(encoding="utf-8") == make_colab_notebook.render(), (
    "examples/colab_quickstart.ipynb is stale: run "
    "python -m examples.make_colab_notebook"
  )


def test_notebook_has_no_outputs_and_opens_on_colab():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  code = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert colab_quickstart.COLAB_URL in notebook.cells[0].source
  install = "\n".join(c.source for c in code)
  assert '"google.colab" in sys.modules' in install
  assert colab_quickstart.PIP_SPEC in install


def test_notebook_cnn_is_the_papers():
  """The inline CNN has the params of examples/models/linen.py's CNN."""
  import jax
  import jax.numpy as jnp

  from examples.models import linen as models_linen

  (source,) = [
    s for _, cell_id, s in colab_quickstart.CELLS if cell_id == "model"
  ]
  class_source = source[: source.index("\n\n\nmodel = ")]
  namespace = {"nn": models_linen.nn}
  exec(class_source, namespace)  # pylint: disable=exec-used
  x = jnp.zeros((1, 32, 32, 3))
  # The params' shapes and dtypes, from an abstract init: nothing compiles.
  init = lambda module: jax.eval_shape(module.init, jax.random.key(0), x)
  ours, theirs = init(namespace["CNN"]()), init(models_linen.CNN())
  shapes = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)
  assert shapes(ours) == shapes(theirs)


def test_notebook_runs_offline_on_digits(tmp_path, monkeypatch):
  # The kernel is this interpreter, whatever kernel specs are installed:
  # JUPYTER_PATH comes first in the kernel search path.
  spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(
    json.dumps(
      {
        "argv": [
          sys.executable,
          "-m",
          "ipykernel_launcher",
          "-f",
          "{connection_file}",
        ],
        "display_name": "Python 3 (tests)",
        "language": "python",
      }
    )
  )
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("OPTAX_SWR_OFFLINE", "1")
  monkeypatch.setenv("OPTAX_SWR_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

  notebook = copy.deepcopy(nbformat.read(NOTEBOOK, as_version=4))
  notebook.cells.append(nbformat.v4.new_code_cell(REPORT_CELL.strip()))
  client = nbclient.NotebookClient(
    notebook,
    timeout=CELL_TIMEOUT_S,
    kernel_name="python3",
    resources={"metadata": {"path": str(NOTEBOOK.parent)}},
  )
  client.execute()  # Raises CellExecutionError if any cell fails.

  outputs = [
    o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
  ]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs), (
    "the plot cell displayed no figure"
  )
  text = "".join(
    o.get("text", "")
    for o in outputs
    if o.output_type == "stream" and o.name == "stdout"
  )
  (line,) = [l for l in text.splitlines() if l.startswith(RESULTS_MARKER)]
  report = json.loads(line[len(RESULTS_MARKER) :])
  assert report["data"] == "digits"
  assert report["epochs"] == 2
  assert set(report["final_acc"]) == {"Adam", "Adam + SWR"}
  for name, accuracy in report["final_acc"].items():
    assert accuracy > 0.8, f"{name}: test accuracy {accuracy} on digits"
  # Both runs start from the same weights; SWR pulls them back toward it.
  norms = report["final_norm"]
  assert report["initial_norm"] < norms["Adam + SWR"] < norms["Adam"]
