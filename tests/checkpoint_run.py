"""Trains with SWR, checkpoints with orbax, resumes; writes what it ends with.

Started by tests/test_checkpoint.py with
XLA_FLAGS=--xla_force_host_platform_device_count=8, the resume in a fresh
process of its own:

  python tests/checkpoint_run.py full DIR    # STEPS steps without a break
  python tests/checkpoint_run.py save DIR    # SAVE_AT steps, then a checkpoint
  python tests/checkpoint_run.py resume DIR  # restore, the remaining steps
  python tests/checkpoint_run.py full,save DIR  # modes in turn, one process

Every mode runs every entry of RUNS. ``full`` and ``resume`` write the final
params and optimizer state of each run to DIR/<mode>/<run>.npz (one array per
leaf, keyed by its tree path) and a JSON summary to DIR/<mode>.json.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import json
import os
import pathlib
import sys
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.sharding import SingleDeviceSharding
import numpy as np
import optax

import optax_swr

try:
  import orbax.checkpoint as ocp
except ImportError:  # No [checkpoint] extra: pytest's doctest pass imports us.
  ocp = None

STEPS = 8
SAVE_AT = 4
FEATURES, WIDTH, CLASSES, BATCH = 16, 32, 8, 32


# --- The snippet for the README: checkpointing an optax_swr state. ----------


def save_checkpoint(path, params, opt_state, step):
  """Writes the params, the whole optimizer state and the step to `path`."""
  with ocp.StandardCheckpointer() as checkpointer:  # Waits for the write.
    checkpointer.save(
      os.path.abspath(path),
      {"params": params, "opt_state": opt_state, "step": step},
    )


def restore_checkpoint(path, tx, abstract_params):
  """Reads `path` back with the shapes, dtypes and shardings of the params.

  `abstract_params`: a tree of jax.ShapeDtypeStruct, e.g.
  jax.tree.map(ocp.utils.to_shape_dtype_struct, params); give them new
  shardings to restore onto another mesh.
  """
  # The target's structure comes from tx.init, so the optax NamedTuples
  # (SWRState, ScaleByAdamState, ...) come back as those classes.
  target = {
    "params": abstract_params,
    "opt_state": with_shardings(tx, abstract_params),
    "step": 0,
  }
  with ocp.StandardCheckpointer() as checkpointer:
    restored = checkpointer.restore(os.path.abspath(path), target)
  return restored["params"], restored["opt_state"], restored["step"]


def with_shardings(tx, abstract_params):
  """The optimizer state's abstract leaves, with the shardings to restore.

  Sub-trees shaped like the params (Adam's moments, MultiSteps' gradient sums)
  get the params' shardings; the rest (counts, SWRState's per-layer norms) is
  replicated.
  """
  sharding = jax.tree.leaves(abstract_params)[0].sharding
  if isinstance(sharding, jax.sharding.NamedSharding):
    sharding = jax.sharding.NamedSharding(
      sharding.mesh, jax.sharding.PartitionSpec()
    )
  return optax.tree_map_params(
    tx,
    lambda s, p: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=p.sharding),
    jax.eval_shape(tx.init, abstract_params),
    abstract_params,
    transform_non_params=lambda s: jax.ShapeDtypeStruct(
      s.shape, s.dtype, sharding=sharding
    ),
  )


# --- End of the snippet. ----------------------------------------------------


class Block(nn.Module):
  """Dense, ReLU, LayerNorm.

  A nested norm layer ("Block_0/LayerNorm_0"), whose input scale the
  checkpoint must carry in SWRState.input_scales.
  """

  width: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.LayerNorm()(nn.relu(nn.Dense(self.width)(x)))


class Net(nn.Module):
  """Block_0 (Dense_0, LayerNorm_0), Dense_0, Dense_1 (the classifier)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(nn.Dense(WIDTH)(Block(WIDTH)(x)))
    return nn.Dense(CLASSES)(x)


MODEL = Net()


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
  """STEPS fixed batches of a random classification problem."""
  rng = np.random.default_rng(0)
  return [
    (
      rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
      rng.integers(0, CLASSES, size=BATCH).astype(np.int32),
    )
    for _ in range(STEPS)
  ]


def init() -> tuple[Any, tuple[tuple[str, ...], ...]]:
  """Fresh params and their layers in forward order."""
  x = np.zeros((1, FEATURES), np.float32)
  variables = MODEL.init(jax.random.key(0), x)
  return variables["params"], optax_swr.layers_from_linen(MODEL, variables, x)


def chain_tx(layers) -> optax.GradientTransformation:
  """Adam + SWR with schedules and a norm reset on both sides of SAVE_AT.

  The norm reset (3) comes before the checkpoint, the coef boundary (5) after
  it, and the classifier coef changes at every step.
  """
  return optax.chain(
    optax.adam(1e-2),
    optax_swr.swr(
      coef=optax.piecewise_constant_schedule(0.3, {5: 0.5}),
      layers=layers,
      reset_norms_at=(3,),
      classifier=1,
      classifier_coef=optax.linear_schedule(1.0, 0.2, STEPS),
    ),
  )


def make_inner(
  learning_rate, coef, layers, classifier, classifier_coef, reset_norms_at
) -> optax.GradientTransformation:
  """The factory that inject_hyperparams wraps."""
  return optax.chain(
    optax.adam(learning_rate),
    optax_swr.swr(
      coef=coef,
      layers=layers,
      classifier=classifier,
      classifier_coef=classifier_coef,
      reset_norms_at=reset_norms_at,
    ),
  )


def inject_tx(layers) -> optax.GradientTransformation:
  """learning_rate, coef and classifier_coef as hyperparams in the state.

  The int `classifier` would be one too unless static; the tuples `layers`
  and `reset_norms_at` are passed through as they are.
  """
  return optax.inject_hyperparams(make_inner, static_args=("classifier",))(
    learning_rate=optax.piecewise_constant_schedule(1e-2, {6: 0.1}),
    coef=optax.piecewise_constant_schedule(0.3, {5: 0.5}),
    layers=layers,
    classifier=1,
    classifier_coef=0.8,
    reset_norms_at=(3,),
  )


def multisteps_tx(layers) -> optax.GradientTransformation:
  """Adam + SWR under MultiSteps, with inner updates at steps 3 and 6.

  The checkpoint at 4 falls in the middle of an accumulation; the norm reset
  (inner step 1) comes after it.
  """
  inner = optax.chain(
    optax.adam(1e-2),
    optax_swr.swr(
      coef=0.3,
      layers=layers,
      reset_norms_at=(1,),
      classifier=1,
      classifier_coef=optax.linear_schedule(1.0, 0.5, 2),
    ),
  )
  return optax.MultiSteps(inner, every_k_schedule=3)


def fsdp(params) -> Any:
  """Every leaf split over 8 devices along its first axis."""
  mesh = Mesh(np.array(jax.devices()), ("fsdp",))
  return jax.tree.map(
    lambda p: NamedSharding(mesh, P("fsdp", *[None] * (p.ndim - 1))), params
  )


def mesh_2x4(params) -> Any:
  """Kernels split over both axes of a 2x4 mesh, vectors over the second."""
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
  return jax.tree.map(
    lambda p: NamedSharding(mesh, P(*("data", "model")[-p.ndim :])), params
  )


def one_device(params) -> Any:
  return jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), params)


@dataclasses.dataclass(frozen=True)
class Run:
  """A transformation, and the params' layouts before and after SAVE_AT.

  A layout maps the params to their shardings; None leaves the params where
  model.init put them.
  """

  make_tx: Callable[[Any], Any]
  before: Callable[[Any], Any] | None = None
  after: Callable[[Any], Any] | None = None


RUNS = {
  "chain": Run(chain_tx),
  "inject_hyperparams": Run(inject_tx),
  "multisteps": Run(multisteps_tx),
  "fsdp_to_2x4": Run(chain_tx, fsdp, mesh_2x4),
  "fsdp_to_one_device": Run(chain_tx, fsdp, one_device),
}


def make_step(tx) -> Callable[..., Any]:
  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits = MODEL.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return step


def place(params, layout) -> Any:
  """The params as abstract arrays in `layout` (None: where they are)."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
  if layout is None:
    return abstract
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    abstract,
    layout(params),
  )


def reshard(tx, params, opt_state, layout) -> tuple[Any, Any]:
  """Moves params and state to `layout` as restore_checkpoint lays them out."""
  abstract_params = place(params, layout)
  abstract_state = with_shardings(tx, abstract_params)
  sharding_of = lambda a: a.sharding
  return (
    jax.device_put(params, jax.tree.map(sharding_of, abstract_params)),
    jax.device_put(opt_state, jax.tree.map(sharding_of, abstract_state)),
  )


@functools.cache
def transformation(make_tx: Callable[[Any], Any]) -> tuple[Any, Any]:
  """One tx and one jitted step per factory, shared by the runs using it.

  So every layout compiles once per process.
  """
  tx = make_tx(init()[1])
  return tx, make_step(tx)


def first_steps(run: Run) -> tuple[Any, Any]:
  """Init in the `before` layout, then SAVE_AT steps."""
  tx, step = transformation(run.make_tx)
  params = init()[0]
  params, opt_state = reshard(tx, params, jax.jit(tx.init)(params), run.before)
  for x, y in batches()[:SAVE_AT]:
    params, opt_state = step(params, opt_state, x, y)
  return params, opt_state


def last_steps(run: Run, params, opt_state) -> tuple[Any, Any]:
  _, step = transformation(run.make_tx)
  for x, y in batches()[SAVE_AT:]:
    params, opt_state = step(params, opt_state, x, y)
  return params, opt_state


def write(path: pathlib.Path, params, opt_state) -> dict[str, Any]:
  """Every leaf to an .npz; returns a summary for the JSON report."""
  path.parent.mkdir(parents=True, exist_ok=True)
  leaves = jax.tree_util.tree_flatten_with_path(
    {"params": params, "opt_state": opt_state}
  )[0]
  np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
  return {"treedef": str(jax.tree.structure(opt_state))}


def check_restored(tx, abstract_params, params, opt_state) -> dict[str, Any]:
  """What the restored state is made of, for the JSON report."""
  abstract_state = jax.eval_shape(tx.init, abstract_params)
  target = (abstract_params, with_shardings(tx, abstract_params))
  is_swr = lambda node: isinstance(node, optax_swr.SWRState)
  return {
    "treedef_is_init": (
      jax.tree.structure(opt_state) == jax.tree.structure(abstract_state)
    ),
    "swr_states": sum(map(is_swr, jax.tree.leaves(opt_state, is_swr))),
    "as_target": all(
      a.shape == t.shape
      and a.dtype == t.dtype
      and a.sharding.is_equivalent_to(t.sharding, a.ndim)
      for a, t in zip(
        jax.tree.leaves((params, opt_state)), jax.tree.leaves(target)
      )
    ),
  }


def full(directory: pathlib.Path) -> dict[str, Any]:
  report = {}
  for name, run in RUNS.items():
    params, opt_state = first_steps(run)
    tx, _ = transformation(run.make_tx)
    params, opt_state = reshard(tx, params, opt_state, run.after)
    params, opt_state = last_steps(run, params, opt_state)
    report[name] = write(directory / "full" / f"{name}.npz", params, opt_state)
  return report


def save(directory: pathlib.Path) -> dict[str, Any]:
  report = {}
  for name, run in RUNS.items():
    params, opt_state = first_steps(run)
    # Relative, as a user may write it (orbax itself wants absolute paths).
    path = os.path.relpath(directory / "ckpt" / name)
    save_checkpoint(path, params, opt_state, SAVE_AT)
    report[name] = {
      "swr_step_count": int(optax.tree.get(opt_state, "step_count")),
      "mini_step": int(getattr(opt_state, "mini_step", -1)),
    }
  return report


def resume(directory: pathlib.Path) -> dict[str, Any]:
  report = {}
  for name, run in RUNS.items():
    tx, _ = transformation(run.make_tx)
    fresh = init()[0]
    abstract_params = place(fresh, run.after)
    params, opt_state, step = restore_checkpoint(
      directory / "ckpt" / name, tx, abstract_params
    )
    restored = check_restored(tx, abstract_params, params, opt_state)
    restored["step"] = step
    params, opt_state = last_steps(run, params, opt_state)
    report[name] = {
      **write(directory / "resume" / f"{name}.npz", params, opt_state),
      **restored,
    }
  return report


def main(argv: list[str]) -> None:
  modes, directory = argv[0].split(","), pathlib.Path(argv[1]).absolute()
  assert len(jax.devices()) == 8, jax.devices()
  for mode in modes:
    report = {"full": full, "save": save, "resume": resume}[mode](directory)
    (directory / f"{mode}.json").write_text(json.dumps(report))


if __name__ == "__main__":
  main(sys.argv[1:])
