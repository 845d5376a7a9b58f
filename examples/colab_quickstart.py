"""The cells of examples/colab_quickstart.ipynb, as Python strings.

``python -m examples.make_colab_notebook`` writes the notebook from
:data:`CELLS`; edit the cells here, then rerun it.
"""

from __future__ import annotations

COLAB_URL = (
  "https://colab.research.google.com/github/optax-swr/optax-swr/"
  "blob/main/examples/colab_quickstart.ipynb"
)
PIP_SPEC = (
  "optax-swr[examples,plots] @ git+https://github.com/optax-swr/optax-swr"
)

# (kind, id, source); the ids are fixed so that the file is deterministic.
CELLS: list[tuple[str, str, str]] = []


def markdown(cell_id: str, source: str) -> None:
  CELLS.append(("markdown", cell_id, source.strip("\n")))


def code(cell_id: str, source: str) -> None:
  CELLS.append(("code", cell_id, source.strip("\n")))


markdown(
  "title",
  f"""
# Soft Weight Rescaling in five minutes

[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB_URL})

[`optax_swr`](https://github.com/optax-swr/optax-swr) implements *Soft Weight
Rescaling* (SWR; Oh, Park, Han, Kim,
[arXiv:2507.04683](https://arxiv.org/abs/2507.04683)) as an
`optax.GradientTransformation`. Chained after any optimizer, it shrinks every
layer's weight toward its initial norm after each step, and scales the biases
so that a ReLU network's predictions do not change. The weights stay bounded,
with no extra gradients and no term in the loss.

This notebook trains the paper's CNN twice from the same initialisation, with
Adam alone and with Adam + SWR, and plots the test accuracy and the weight
norms of both runs:

* with `tensorflow-datasets` and internet access (Colab), on **CIFAR-10**;
* otherwise on scikit-learn's bundled **digits**, fully offline, in a few
  minutes on a laptop CPU.

On Colab, pick *Runtime > Change runtime type > GPU* (or TPU) first.
""",
)

markdown(
  "install-md",
  """
## Install

On Colab the package is installed from GitHub. Anywhere else the notebook uses
the `optax_swr` already installed (`pip install -e ".[examples,plots]"` in a
clone), or the clone it is run from.
""",
)

code(
  "install",
  f"""
import os
import subprocess
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
  subprocess.run(
      [sys.executable, "-m", "pip", "install", "--quiet",
       "{PIP_SPEC}"],
      check=True,
  )
else:
  import importlib.util
  if importlib.util.find_spec("optax_swr") is None:
    # Not installed: use the clone this notebook sits in (examples/..).
    for root in (os.pardir, os.curdir):
      if os.path.isdir(os.path.join(root, "optax_swr")):
        sys.path.insert(0, os.path.abspath(root))
        break
""",
)

markdown(
  "device-md",
  """
## Device

JAX picks the accelerator by itself: `tpu`, `gpu` or `cpu`.
""",
)

code(
  "device",
  """
import shutil
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import optax_swr
from optax_swr import metrics

BACKEND = jax.default_backend()
print(f"JAX {jax.__version__}, optax_swr {optax_swr.__version__}")
print(f"backend: {BACKEND}")
for device in jax.devices():
  print(f"  {device.platform}:{device.id}  {device.device_kind}")
if IN_COLAB and BACKEND == "cpu" and shutil.which("nvidia-smi"):
  print('A GPU is attached but JAX runs on the CPU: its CUDA plugin may not '
        'match the installed jax. Run `pip install -U "jax[cuda12]"`, then '
        'Runtime > Restart session.')
""",
)

markdown(
  "data-md",
  """
## Data

CIFAR-10 through `tensorflow-datasets` when it is installed and the download
works; otherwise scikit-learn's 1,797 8x8 digits (70% train, 30% test, split
by class), upsampled to 32x32 so that the CNN sees the same geometry as on
CIFAR. Set `OPTAX_SWR_OFFLINE=1` to skip CIFAR.
""",
)

code(
  "data",
  """
from sklearn import datasets as sk_datasets
from sklearn import model_selection

OFFLINE = os.environ.get("OPTAX_SWR_OFFLINE", "") not in ("", "0")


def load_cifar10():
  \"\"\"CIFAR-10 as float32 NHWC in [0, 1], or None if it can't be had.\"\"\"
  if OFFLINE:
    print("OPTAX_SWR_OFFLINE is set: skipping CIFAR-10.")
    return None
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    print("tensorflow-datasets is not installed: skipping CIFAR-10.")
    return None
  try:  # Keep TensorFlow off the GPU: JAX has already claimed it.
    import tensorflow as tf
    tf.config.set_visible_devices([], "GPU")
  except Exception:
    pass
  try:
    train, test = tfds.as_numpy(tfds.load(
        "cifar10", split=["train", "test"], batch_size=-1,
        as_supervised=True))
  except Exception as error:  # Offline, blocked, out of disk, ...
    print(f"CIFAR-10 download failed ({type(error).__name__}: {error}).")
    return None
  return ((train[0] / 255.0).astype(np.float32), train[1].astype(np.int32),
          (test[0] / 255.0).astype(np.float32), test[1].astype(np.int32))


def load_digits(size=32):
  \"\"\"scikit-learn's digits, upsampled (nearest) from 8x8 to size x size.\"\"\"
  digits = sk_datasets.load_digits()
  x = digits.images / 16.0  # Pixels are 0..16.
  x = np.kron(x, np.ones((size // 8, size // 8)))[..., None]
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
      x.astype(np.float32), digits.target.astype(np.int32),
      test_size=0.3, stratify=digits.target, random_state=0)
  return x_train, y_train, x_test, y_test


cifar = load_cifar10()
DATA = "cifar10" if cifar is not None else "digits"
x_train, y_train, x_test, y_test = cifar if cifar is not None else load_digits()
print(f"{DATA}: {len(x_train)} train / {len(x_test)} test images of "
      f"shape {x_train.shape[1:]}")
""",
)

markdown(
  "settings-md",
  """
## Budget

Sized by data and backend. On CIFAR-10 with a GPU or TPU: 15 epochs of the
full training set, batch 256 (the paper's). On CIFAR-10 with only a CPU, a
10,000-image subset for 5 epochs. On digits: 40 epochs of batch 64, about two
minutes for both runs on two CPU cores. `OPTAX_SWR_NOTEBOOK_QUICK=1` (the CI
test) caps every budget at 2 epochs and 5,000 images. Edit the numbers to
taste; SWR's coefficient is the paper's for this CNN.
""",
)

code(
  "settings",
  """
QUICK = os.environ.get("OPTAX_SWR_NOTEBOOK_QUICK", "") not in ("", "0")
LR = 1e-3          # Adam, as in the paper.
SWR_COEF = 1e-3    # The paper's lambda for its CNN.
SEED = 0

if DATA == "cifar10" and BACKEND != "cpu":
  EPOCHS, BATCH_SIZE, MAX_TRAIN = 15, 256, None
elif DATA == "cifar10":
  EPOCHS, BATCH_SIZE, MAX_TRAIN = 5, 256, 10_000
else:
  EPOCHS, BATCH_SIZE, MAX_TRAIN = 40, 64, None
if QUICK:  # A smoke test of the whole notebook.
  EPOCHS, MAX_TRAIN = min(EPOCHS, 2), min(MAX_TRAIN or len(x_train), 5_000)
if MAX_TRAIN is not None and MAX_TRAIN < len(x_train):
  pick = np.random.default_rng(SEED).permutation(len(x_train))[:MAX_TRAIN]
  x_train, y_train = x_train[pick], y_train[pick]
print(f"{EPOCHS} epochs of {len(x_train) // BATCH_SIZE} steps "
      f"(batch {BATCH_SIZE}), lr {LR}, SWR coef {SWR_COEF}")
""",
)

markdown(
  "model-md",
  """
## The paper's CNN

Two 5x5 convolutions (16 channels, padding 1), each followed by ReLU and a
2x2 max-pool, then a 100-unit ReLU layer and the classifier: the same network
as `examples/models/linen.py`'s `CNN`, defined here so that the notebook needs
nothing but the package. It is a *chain* of layers joined by ReLU and
max-pooling, so SWR does not change its predictions (Theorem 1 of the paper).

SWR needs the layers in forward order; `optax_swr.layers_from_linen` traces
them from one abstract forward pass.
""",
)

code(
  "model",
  """
class CNN(nn.Module):
  \"\"\"The paper's CIFAR CNN: 2 x (conv 5x5 -> ReLU -> max-pool 2), FC, FC.\"\"\"

  num_classes: int = 10
  channels: int = 16
  hidden: int = 100

  @nn.compact
  def __call__(self, x):
    for index in (1, 2):
      x = nn.Conv(self.channels, (5, 5), padding=1, name=f"conv{index}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden, name="fc1")(x))
    return nn.Dense(self.num_classes, name="head")(x)


model = CNN(num_classes=int(y_train.max()) + 1)
variables = model.init(jax.random.key(SEED), jnp.zeros((1, *x_train.shape[1:])))
layers = optax_swr.layers_from_linen(model, variables, x_train[:1])
print("layers in forward order:", [layer.name for layer in layers])
print("parameters:", sum(p.size for p in jax.tree.leaves(variables["params"])))
""",
)

markdown(
  "train-md",
  """
## Training

One jitted step per optimizer. Both runs start from the same parameters and
see the same batches; after each epoch we record the test accuracy and the
Frobenius norm of every layer's weight (`optax_swr.metrics.layer_norms`, the
norms SWR itself uses).
""",
)

code(
  "train",
  """
def loss_fn(params, images, labels):
  logits = model.apply({"params": params}, images)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(tx):
  @jax.jit
  def train_step(params, opt_state, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    # SWR reads the params: pass them to update.
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return train_step


@jax.jit
def correct(params, images, labels):
  logits = model.apply({"params": params}, images)
  return jnp.sum(jnp.argmax(logits, -1) == labels)


layer_norms = jax.jit(lambda params: metrics.layer_norms(params, layers))


def test_accuracy(params, chunk=2000):
  hits = sum(int(correct(params, x_test[i:i + chunk], y_test[i:i + chunk]))
             for i in range(0, len(x_test), chunk))
  return hits / len(x_test)


PRINT_EVERY = max(1, EPOCHS // 8)


def train(name, tx):
  params = variables["params"]
  opt_state = tx.init(params)
  train_step = make_train_step(tx)
  rng = np.random.default_rng(SEED)  # The same batches for every run.
  history = {"test_acc": [], "norms": [], "loss": []}
  start = time.perf_counter()
  for epoch in range(EPOCHS):
    order = rng.permutation(len(x_train))
    losses = []
    for step in range(len(x_train) // BATCH_SIZE):  # Drops a partial batch.
      index = order[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]
      params, opt_state, loss = train_step(
          params, opt_state, x_train[index], y_train[index])
      losses.append(loss)
    history["loss"].append(float(np.mean(jax.device_get(losses))))
    history["test_acc"].append(test_accuracy(params))
    history["norms"].append(np.asarray(layer_norms(params)))
    if (epoch + 1) % PRINT_EVERY == 0 or epoch + 1 == EPOCHS:
      print(f"{name:>10}  epoch {epoch + 1:3d}  "
            f"loss {history['loss'][-1]:.4f}  "
            f"test acc {history['test_acc'][-1]:.4f}  "
            f"sum ||W_l|| {history['norms'][-1].sum():6.2f}")
  history["seconds"] = time.perf_counter() - start
  return history


optimizers = {
    "Adam": optax.adam(LR),
    "Adam + SWR": optax.chain(
        optax.adam(LR), optax_swr.swr(SWR_COEF, layers=layers)),
}
results = {name: train(name, tx) for name, tx in optimizers.items()}
""",
)

markdown(
  "plot-md",
  """
## Accuracy and weight norms

Left, the test accuracy after each epoch. Right, the sum over layers of the
weight norms: with Adam alone they grow throughout training, while SWR holds
them near their initial values (dashed).
""",
)

code(
  "plot",
  """
epochs = np.arange(1, EPOCHS + 1)
initial_norm = float(np.sum(layer_norms(variables["params"])))
fig, (ax_acc, ax_norm) = plt.subplots(1, 2, figsize=(11, 4))
for name, history in results.items():
  ax_acc.plot(epochs, history["test_acc"], marker=".", label=name)
  ax_norm.plot(epochs, [n.sum() for n in history["norms"]], marker=".",
               label=name)
ax_norm.axhline(initial_norm, color="gray", linestyle="--", label="at init")
ax_acc.set(xlabel="epoch", ylabel="test accuracy", title=f"CNN on {DATA}")
ax_norm.set(xlabel="epoch", ylabel=r"$\\sum_l \\|W_l\\|_F$",
            title="weight norms")
for ax in (ax_acc, ax_norm):
  ax.grid(alpha=0.3)
  ax.legend()
fig.tight_layout()
plt.show()
""",
)

code(
  "table",
  """
layer_names = [layer.name for layer in layers]
print(f"CNN on {DATA}, {EPOCHS} epochs, backend {BACKEND}\\n")
print(f"{'':>12}  {'final acc':>9}  {'best acc':>8}  {'sum ||W||':>9}  "
      + "  ".join(f"{n:>7}" for n in layer_names) + f"  {'seconds':>7}")
rows = {"at init": None, **results}
for name, history in rows.items():
  if history is None:
    norms = np.asarray(layer_norms(variables["params"]))
    print(f"{name:>12}  {'':>9}  {'':>8}  {norms.sum():9.2f}  "
          + "  ".join(f"{n:7.2f}" for n in norms))
    continue
  norms = history["norms"][-1]
  print(f"{name:>12}  {history['test_acc'][-1]:9.4f}  "
        f"{max(history['test_acc']):8.4f}  {norms.sum():9.2f}  "
        + "  ".join(f"{n:7.2f}" for n in norms)
        + f"  {history['seconds']:7.1f}")
""",
)

markdown(
  "next-md",
  """
## Next

* Use it in your own loop: `optax.chain(your_optimizer, optax_swr.swr(coef,
  layers=optax_swr.layers_from_linen(model, variables, x)))`; Flax NNX has
  `optax_swr.layers_from_nnx`.
* BatchNorm: call `optax_swr.sync_batch_stats` after each update.
* The paper's protocols (warm start, continual learning, generalization) and
  the full model zoo are in
  [`examples/`](https://github.com/optax-swr/optax-swr/tree/main/examples).
""",
)
