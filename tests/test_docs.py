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
  return dict(
    jax=jax,
    train_state=train_state,
    model=model,
    x=x,
    loss_fn=lambda p: jnp.mean(model.apply({"params": p}, x) ** 2),
  )


def nnx_setup() -> dict:
  from flax import nnx
  import jax.numpy as jnp

  from examples.models import nnx as models_nnx

  model = models_nnx.MLP(8, hidden=(16, 16), num_classes=3, rngs=nnx.Rngs(0))
  x = jnp.ones((4, 8))
  return dict(nnx=nnx, model=model, x=x, loss_fn=lambda m: jnp.mean(m(x) ** 2))


def equinox_setup() -> dict:
  eqx = pytest.importorskip("equinox", reason="the [equinox] extra")
  import jax
  import jax.numpy as jnp

  model = eqx.nn.MLP(8, 3, 16, 2, key=jax.random.key(0))
  x = jnp.ones(8)

  def loss_fn(params, static):
    return jnp.mean(eqx.combine(params, static)(x) ** 2)

  return dict(eqx=eqx, jax=jax, model=model, x=x, loss_fn=loss_fn)


def plain_setup() -> dict:
  import jax.numpy as jnp

  return dict(jnp=jnp)


def setup_for(block: str) -> dict:
  namespace = {"optax": optax, "optax_swr": optax_swr}
  if "layers_from_nnx" in block:
    namespace.update(nnx_setup())
  elif "layers_from_equinox" in block:
    namespace.update(equinox_setup())
  elif "jnp." in block:
    namespace.update(plain_setup())
  else:
    namespace.update(linen_setup())
  return namespace


def test_readme_is_short():
  assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_readme_install_lists_every_extra_and_the_two_ways_in():
  tomllib = pytest.importorskip("tomllib", reason="Python 3.11 or later")
  with open(ROOT / "pyproject.toml", "rb") as file:
    extras = tomllib.load(file)["project"]["optional-dependencies"]
  text = (ROOT / "README.md").read_text()
  install = text.split("## Install and try\n")[1].split("\n## ")[0]
  listed = re.search(r"\(extras: ([^)]*)\)", install)
  assert listed, "the Install block names no extras"
  named = listed.group(1).replace("#", " ").replace(",", " ").split()
  assert sorted(named) == sorted(extras)
  # make demo and make test are the fresh clone's commands; pip is the other way.
  commands = [line.split("#")[0].strip() for line in install.splitlines()]
  assert commands[2:4] == ["make demo", "make test"]
  assert 'pip install -e ".[examples]" && python -m examples.digits_demo' in (
    commands
  )
  assert (
    install.index("make test")
    < install.index("Or,")
    < install.index("pip install")
  )


def test_readme_code_blocks_run(capsys):
  blocks = readme_python_blocks()
  assert len(blocks) >= 6
  namespace: dict = {}
  for block in blocks:
    fresh = setup_for(block)
    if "check_proportional" in block:  # after the Linen block, as it reads
      fresh = {**namespace, **fresh, "layers": namespace["linen_layers"]}
    exec(compile(block, "README.md", "exec"), fresh)  # pylint: disable=exec-used
    if "layers_from_linen" in block:
      namespace.update(fresh, linen_layers=fresh["layers"])
    if "nnx.Optimizer" in block:
      scales = optax.tree.get(fresh["optimizer"].opt_state, "layer_scales")
      assert scales[...].shape == (3,)
    if "eqx.apply_updates" in block:
      swr_state = fresh["opt_state"][1]
      assert int(swr_state.step_count) == 1
      assert swr_state.reference_norms.shape == (3,)
  printed = capsys.readouterr().out.strip().split("\n")
  # The plain pytree's named reference norms, then check_proportional's error.
  named = printed[0]
  assert "'w1'" in named and "'w2'" in named
  assert float(printed[-1]) < 1e-5


def test_docs_checkpoint_code_is_what_the_checkpoint_test_runs():
  """The checkpoint functions in docs/scaling_out.md are the tested ones."""
  page = (ROOT / "docs" / "scaling_out.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
  (block,) = [b for b in blocks if "def save_checkpoint" in b]
  functions = block[block.index("def save_checkpoint") : block.index("\ntx = ")]
  worker = (ROOT / "tests" / "checkpoint_run.py").read_text()
  assert functions.strip() in worker
  assert "def with_shardings" in functions


def test_demo_quick_run_prints_both_methods(capsys):
  pytest.importorskip("sklearn", reason="the demo needs the [examples] extra")
  from examples import digits_demo

  digits_demo.main(["--quick"])
  printed = capsys.readouterr().out
  rows = re.findall(
    # --quick runs one seed: no standard deviation.
    r"^(vanilla|SWR)\s+(warm start|from scratch)\s+([01]\.\d{4}) "
    r"\(1 seed, no std\)",
    printed,
    flags=re.MULTILINE,
  )
  assert {(m, p) for m, p, _ in rows} == {
    (m, p) for m in ("vanilla", "SWR") for p in ("warm start", "from scratch")
  }
  # Two epochs already beat chance (0.1) by far on digits.
  assert all(float(acc) > 0.5 for _, _, acc in rows)
