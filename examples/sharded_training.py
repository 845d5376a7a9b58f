"""Adam + SWR on a device mesh: data parallel x FSDP, on scikit-learn's digits.

The devices form a 2-D mesh ``("data", "fsdp")``. Every batch is split over
all devices; every parameter, and Adam's moments with it, is split over the
``fsdp`` axis (and copied over ``data``). SWR's state, a few float32 numbers
per layer, is copied to every device. ``jax.jit`` with ``NamedSharding``
places the arrays; XLA adds the communication.

Without an accelerator, ``--devices N`` simulates N CPU devices (through
``XLA_FLAGS``, set before JAX starts)::

  python -m examples.sharded_training                  # 8 devices: 4 x 2
  python -m examples.sharded_training --devices 4 --fsdp 4 --steps 100

The script prints the mesh, where each parameter lives, the loss and test
accuracy as it trains, and at the end checks that SWR's state is the same on
every device (exit status 1 if not).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys
from typing import Any

from examples import cli


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = cli.parser(__doc__)
  parser.add_argument("--steps", type=int, default=300, help="training steps")
  parser.add_argument(
    "--devices",
    type=int,
    default=8,
    help="devices in the mesh; simulated CPU devices when "
    "there are fewer accelerators",
  )
  parser.add_argument(
    "--fsdp",
    type=int,
    default=2,
    help="size of the mesh's fsdp axis (divides --devices)",
  )
  parser.add_argument(
    "--batch-size",
    type=int,
    default=128,
    help="global batch, split over all devices",
  )
  parser.add_argument(
    "--width",
    type=int,
    default=128,
    help="units of each of the MLP's two hidden layers",
  )
  parser.add_argument("--lr", type=float, default=1e-3)
  parser.add_argument("--swr-coef", type=float, default=1e-2)
  parser.add_argument(
    "--log-every",
    type=int,
    default=50,
    help="steps between two lines of loss and accuracy",
  )
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.devices < 1 or args.fsdp < 1 or args.devices % args.fsdp:
    parser.error(f"--fsdp {args.fsdp} must divide --devices {args.devices}")
  if args.batch_size % args.devices:
    parser.error(
      f"--batch-size {args.batch_size} must be a multiple of "
      f"--devices {args.devices}"
    )
  return args


def simulate_host_devices(count: int) -> None:
  """Makes the CPU backend show ``count`` devices; needs a JAX not yet started.

  The flag only concerns the CPU ("host") platform, so it is harmless where
  an accelerator is used instead.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
      f"{flags} --xla_force_host_platform_device_count={count}"
    ).strip()


if __name__ == "__main__":  # Run as a script: set the device count first.
  simulate_host_devices(parse_args(sys.argv[1:]).devices)

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax

from examples import data
from examples.models import linen as models_linen
import optax_swr

DATA, FSDP = "data", "fsdp"


def make_mesh(count: int, fsdp: int) -> Mesh:
  """A ``(count // fsdp) x fsdp`` mesh; CPU devices if accelerators are few."""
  devices = jax.devices()
  if len(devices) < count:
    devices = jax.devices("cpu")
  if len(devices) < count:
    raise SystemExit(
      f"--devices {count}: only {len(devices)} devices. Run it as python -m "
      "examples.sharded_training, so that it can set XLA_FLAGS before JAX "
      "starts."
    )
  return Mesh(
    np.array(devices[:count]).reshape(count // fsdp, fsdp), (DATA, FSDP)
  )


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """Splits the first axis that the fsdp axis divides; else a full copy.

  The first axis: SWR ravels each kernel to take its norm, which keeps a
  split of the first axis in place but gathers a split of a later one.
  """
  for axis, size in enumerate(shape):
    if size % fsdp == 0:
      return P(*[None] * axis, FSDP)
  return P()


def print_placement(mesh: Mesh, params: Any) -> None:
  """One line per parameter, then the slice of one kernel on each device."""
  print(
    f"mesh: {dict(mesh.shape)} over {mesh.devices.size} "
    f"{mesh.devices.flat[0].platform} devices"
  )
  print(f"{'parameter':<18} {'shape':<11} {'spec':<22} shard on each device")
  leaves = jax.tree_util.tree_leaves_with_path(params)
  for path, leaf in leaves:
    print(
      f"{jax.tree_util.keystr(path, simple=True, separator='/'):<18} "
      f"{str(leaf.shape):<11} {str(leaf.sharding.spec):<22} "
      f"{leaf.addressable_shards[0].data.shape}"
    )
  path, kernel = leaves[-1]
  print(
    f"{jax.tree_util.keystr(path, simple=True, separator='/')}, "
    "device by device:"
  )
  for shard in kernel.addressable_shards:
    rows, columns = (
      f"{s.start or 0}:{s.stop or n}" for s, n in zip(shard.index, kernel.shape)
    )
    print(f"  {shard.device}: [{rows}, {columns}]")


def check_swr_state_replicated(swr_state: optax_swr.SWRState) -> bool:
  """Whether every SWR array is one full copy per device, all of them equal."""
  leaves = jax.tree.leaves(swr_state)
  same = all(
    leaf.sharding.is_fully_replicated
    and all(
      np.array_equal(shard.data, leaf.addressable_shards[0].data)
      for shard in leaf.addressable_shards
    )
    for leaf in leaves
  )
  copies = len(leaves[0].addressable_shards)
  size = sum(leaf.nbytes for leaf in leaves)
  verdict = "replicated, equal on" if same else "NOT THE SAME on"
  print(
    f"SWR state: {len(leaves)} arrays, {size} bytes, {verdict} {copies} devices"
  )
  return same


def make_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  shardings: tuple[Any, Any, NamedSharding],
):
  """The jitted training step; outputs keep the inputs' shardings."""

  def loss_fn(params, x, y):
    logits = model.apply({"params": params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, out_shardings=shardings, donate_argnums=(0, 1))


def make_accuracy(model: nn.Module):
  @jax.jit
  def accuracy(params, x, y):
    logits = model.apply({"params": params}, x)
    return jnp.mean(jnp.argmax(logits, -1) == y)

  return accuracy


def batches_forever(dataset: data.Dataset, batch_size: int, seed: int):
  rng = np.random.default_rng(seed)
  while True:
    yield from data.batches(dataset.x_train, dataset.y_train, batch_size, rng)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  dataset = data.load_digits()
  mesh = make_mesh(args.devices, args.fsdp)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P((DATA, FSDP)))

  model = models_linen.MLP(
    hidden=(args.width,) * 2, num_classes=dataset.num_classes
  )
  x0 = jnp.zeros((1, *dataset.x_train.shape[1:]), jnp.float32)
  variables = model.init(jax.random.key(args.seed), x0)
  layers = optax_swr.layers_from_linen(model, variables, x0)
  tx = optax.chain(
    optax.adam(args.lr), optax_swr.swr(args.swr_coef, layers=layers)
  )

  param_shardings = jax.tree.map(
    lambda a: NamedSharding(mesh, fsdp_spec(a.shape, args.fsdp)),
    variables["params"],
  )
  params = jax.device_put(variables["params"], param_shardings)
  # Adam's moments split as the params; SWR's per-layer arrays replicated.
  state_shardings = optax.tree_map_params(
    tx,
    lambda _, sharding: sharding,
    jax.eval_shape(tx.init, params),
    param_shardings,
    transform_non_params=lambda _: replicated,
  )
  opt_state = jax.jit(tx.init, out_shardings=state_shardings)(params)
  print_placement(mesh, params)
  print(f"SWR layers, in forward order: {[l.name for l in layers]}")

  step = make_step(model, tx, (param_shardings, state_shardings, replicated))
  accuracy = make_accuracy(model)
  x_test, y_test = jax.device_put((dataset.x_test, dataset.y_test), replicated)
  losses = []
  batches = batches_forever(dataset, args.batch_size, args.seed)
  for index in range(1, args.steps + 1):
    x, y = jax.device_put(next(batches), batch_sharding)
    params, opt_state, loss = step(params, opt_state, x, y)
    losses.append(loss)
    if index % args.log_every == 0 or index == args.steps:
      mean_loss = float(jnp.mean(jnp.stack(losses)))
      losses = []
      print(
        f"step {index:5d}  train loss {mean_loss:.4f}  test accuracy "
        f"{float(accuracy(params, x_test, y_test)):.4f}"
      )

  for name in ("weight_norms", "reference_norms"):
    values = np.asarray(optax.tree.get(opt_state, name))
    print(f"{name:<16}" + " ".join(f"{v:8.3f}" for v in values))
  mu = opt_state[0][0].mu
  print(
    "Adam's moments split as the params:",
    all(
      m.sharding.is_equivalent_to(p.sharding, p.ndim)
      for m, p in zip(jax.tree.leaves(mu), jax.tree.leaves(params))
    ),
  )
  if not check_swr_state_replicated(opt_state[1]):
    sys.exit(1)


if __name__ == "__main__":
  main()
