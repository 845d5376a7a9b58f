"""The README's code and the demo run as written."""

from __future__ import annotations

import pathlib
import re

import optax
import pytest

import optax_swr

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_python_blocks() -> list[str]:
  text = (ROOT / "README.md").read_text()
  return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def linen_setup() -> dict:
  """What the README's Linen snippets assume the reader already has."""
  from flax.training import train_state
  import jax
  import jax.numpy as jnp

  from examples.models import linen as models_linen

  model = models_linen.MLP(hidden=(16, 16), num_classes=3)
  x = jnp.ones((4, 8))
  variables = model.init(jax.random.key(0), x)
  return dict(
    jax=jax,
    train_state=train_state,
    model=model,
    x=x,
    params=variables["params"],
    layers=optax_swr.layers_from_linen(model, variables, x),
    loss_fn=lambda p: jnp.mean(model.apply({"params": p}, x) ** 2),
  )


def nnx_setup() -> dict:
  from flax import nnx
  import jax.numpy as jnp

  from examples.models import nnx as models_nnx

  model = models_nnx.MLP(8, hidden=(16, 16), num_classes=3, rngs=nnx.Rngs(0))
  x = jnp.ones((4, 8))
  return dict(nnx=nnx, model=model, x=x, loss_fn=lambda m: jnp.mean(m(x) ** 2))


def setup_for(block: str) -> dict:
  namespace = {"optax": optax, "optax_swr": optax_swr}
  if "layers_from_nnx" in block:
    namespace.update(nnx_setup())
  elif "layers_from_linen" in block or "check_proportional" in block:
    namespace.update(linen_setup())
  return namespace


def test_readme_code_blocks_run(capsys):
  blocks = readme_python_blocks()
  assert len(blocks) >= 6
  for block in blocks:
    namespace = setup_for(block)
    exec(compile(block, "README.md", "exec"), namespace)  # pylint: disable=exec-used
    if "nnx.Optimizer" in block:
      scales = optax.tree.get(namespace["optimizer"].opt_state, "layer_scales")
      assert scales.shape == (3,)
  printed = capsys.readouterr().out.split("\n")
  # check_proportional's relative error, then the Linen loop's 3 norms.
  assert float(printed[0]) < 1e-5
  assert len(re.findall(r"\d+\.\d+", printed[1])) == 3


def test_readme_checkpoint_code_is_what_the_checkpoint_test_runs():
  (block,) = [b for b in readme_python_blocks() if "def save_checkpoint" in b]
  functions = block[
    block.index("def save_checkpoint") : block.index("\n\n\n# ")
  ]
  worker = (ROOT / "tests" / "checkpoint_run.py").read_text()
  assert functions in worker


def test_demo_quick_run_prints_both_methods(capsys):
  pytest.importorskip("sklearn", reason="the demo needs the [examples] extra")
  from examples import digits_demo

  digits_demo.main(["--quick"])
  printed = capsys.readouterr().out
  rows = re.findall(
    r"^(vanilla|SWR)\s+(warm start|from scratch)\s+([01]\.\d{4}) \+-",
    printed,
    flags=re.MULTILINE,
  )
  assert {(m, p) for m, p, _ in rows} == {
    (m, p) for m in ("vanilla", "SWR") for p in ("warm start", "from scratch")
  }
  # Two epochs already beat chance (0.1) by far on digits.
  assert all(float(acc) > 0.5 for _, _, acc in rows)
