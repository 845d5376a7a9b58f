"""Data for the examples: built-in sets, users' .npz files, and minibatches.

:func:`load` takes a built-in name or a path:

* ``digits``: scikit-learn's 1,797 8x8 digits (ships with scikit-learn).
* ``fashion_mnist``: the 70,000 28x28 images of the Debian package
  ``dataset-fashion-mnist`` (IDX files under /usr/share/datasets/).
* ``cifar10``, ``cifar100``: through tensorflow-datasets, an optional path
  for Colab; never needed offline.
* ``FILE.npz`` with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``;
  images as ``[N, H, W, C]`` (or ``[N, H, W]``) or flat vectors ``[N, D]``.

Images come as float32 NHWC arrays in [0, 1] (integer pixels are divided by
their maximum, 255 or 16), the layout the image models of
``examples/models/linen.py`` and ``examples/models/nnx.py`` take; models on
flat inputs reshape them.

Example::

  from examples import data
  dataset = data.load_digits()
  rng = np.random.default_rng(0)
  for images, labels in data.batches(
      dataset.x_train, dataset.y_train, 64, rng):
    ...
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import gzip
import os

import numpy as np
from sklearn import datasets
from sklearn import model_selection

Batch = tuple[np.ndarray, np.ndarray]  # Inputs [B, ...] and int32 labels [B].

DIGITS_MAX_PIXEL = 16.0  # scikit-learn's digits have pixel values 0..16.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
BUILT_IN = ("digits", "fashion_mnist", "cifar10", "cifar100")
# Built-in sets without a train/test split of their own: experiments draw
# one per seed (``stratified_split``).
NO_FIXED_SPLIT = ("digits",)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification data set split into training and test examples.

  Attributes:
    x_train: training inputs, float32 ``[num_train, ...]``.
    y_train: training labels, int32 ``[num_train]`` in ``0..num_classes-1``.
    x_test: test inputs, float32 ``[num_test, ...]``.
    y_test: test labels, int32 ``[num_test]``.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray

  @property
  def num_classes(self) -> int:
    """The number of classes: one more than the largest label."""
    return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> Dataset:
  """Loads the digits and makes a stratified train/test split.

  Args:
    test_fraction: the share of the 1,797 images held out for testing.
    seed: seed of the split; the same seed always gives the same split.

  Returns:
    Images as float32 ``[N, 8, 8, 1]`` scaled to [0, 1], int32 labels 0..9;
    every class keeps its share of the images on both sides of the split.
  """
  digits = datasets.load_digits()
  x = (digits.images[..., np.newaxis] / DIGITS_MAX_PIXEL).astype(np.float32)
  y = digits.target.astype(np.int32)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
    x, y, test_size=test_fraction, stratify=y, random_state=seed
  )
  return Dataset(x_train, y_train, x_test, y_test)


def stratified_split(
  y: np.ndarray, num_train: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Training and test indices of ``y``, each class in its share on both.

  Args:
    y: the labels of every example.
    num_train: how many examples go to training; the rest to testing.
    seed: seed of the split.

  Returns:
    Sorted int arrays ``(train, test)`` that partition ``range(len(y))``.
  """
  train, test = model_selection.train_test_split(
    np.arange(len(y)), train_size=num_train, stratify=y, random_state=seed
  )
  return np.sort(train), np.sort(test)


def batches(
  x: np.ndarray,
  y: np.ndarray,
  batch_size: int,
  rng: np.random.Generator,
  drop_last: bool = True,
) -> Iterator[Batch]:
  """Yields one epoch of (x, y) minibatches in an order drawn from ``rng``.

  Args:
    x: inputs, ``[N, ...]``.
    y: labels, ``[N]``.
    batch_size: examples per batch.
    rng: the source of the shuffle; each call draws a new order.
    drop_last: whether to drop the last batch when it has fewer than
      ``batch_size`` examples (every batch then has one shape, so a jitted
      step compiles once).
  """
  if len(x) != len(y):
    raise ValueError(
      f"batches: x has {len(x)} examples but y has {len(y)}; pass inputs "
      "and labels of the same examples."
    )
  order = rng.permutation(len(x))
  stop = len(x) - batch_size + 1 if drop_last else len(x)
  for start in range(0, stop, batch_size):
    index = order[start : start + batch_size]
    yield x[index], y[index]


def load(name_or_path: str) -> Dataset:
  """Loads a built-in data set by name, or a user's ``.npz`` file.

  Args:
    name_or_path: one of ``BUILT_IN`` or a path to an ``.npz`` file.

  Returns:
    The data set, images as float32 in [0, 1], labels int32.

  Raises:
    ValueError: for an unknown name or a malformed file, saying what to do.
  """
  if name_or_path == "digits":
    return load_digits()
  if name_or_path == "fashion_mnist":
    return load_fashion_mnist()
  if name_or_path in ("cifar10", "cifar100"):
    return load_tfds(name_or_path)
  if name_or_path.endswith(".npz"):
    return load_npz(name_or_path)
  raise ValueError(
    f"--data: unknown data set {name_or_path!r}; use one of {BUILT_IN} or "
    "a path to an .npz file with x_train, y_train, x_test, y_test."
  )


def load_npz(path: str) -> Dataset:
  """Loads ``x_train``, ``y_train``, ``x_test``, ``y_test`` from an .npz file."""
  if not os.path.exists(path):
    raise ValueError(f"--data: the file {path!r} does not exist.")
  with np.load(path) as arrays:
    missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
    if missing:
      raise ValueError(
        f"--data: {path!r} lacks the arrays {sorted(missing)}; it needs "
        "x_train, y_train, x_test, y_test."
      )
    dataset = Dataset(
      _as_images(arrays["x_train"]),
      _as_labels(arrays["y_train"]),
      _as_images(arrays["x_test"]),
      _as_labels(arrays["y_test"]),
    )
  _check_consistent(path, dataset)
  return dataset


def _check_consistent(path: str, dataset: Dataset) -> None:
  """Inputs and labels pair up, and test labels are classes of training."""
  for split in ("train", "test"):
    x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
    if len(x) != len(y):
      raise ValueError(
        f"--data: {path!r} has {len(x)} x_{split} but {len(y)} y_{split}; "
        "every input needs one label."
      )
  if dataset.x_train.shape[1:] != dataset.x_test.shape[1:]:
    raise ValueError(
      f"--data: {path!r}: x_train examples have shape "
      f"{dataset.x_train.shape[1:]} but x_test examples "
      f"{dataset.x_test.shape[1:]}; both need one shape."
    )
  unseen = np.setdiff1d(dataset.y_test, dataset.y_train)
  if unseen.size:
    raise ValueError(
      f"--data: {path!r}: y_test has labels {unseen.tolist()} out of the "
      f"range of y_train (0..{dataset.y_train.max()}); labels must be "
      "classes 0..C-1 that the training set has."
    )


def load_fashion_mnist(directory: str = FASHION_MNIST_DIR) -> Dataset:
  """Loads Fashion-MNIST from the IDX files of ``dataset-fashion-mnist``."""
  if not os.path.isdir(directory):
    raise ValueError(
      f"--data fashion_mnist: {directory} is missing; install it with "
      "`apt-get install dataset-fashion-mnist`."
    )
  read = lambda name: read_idx(os.path.join(directory, name))
  return Dataset(
    _as_images(read("train-images-idx3-ubyte.gz")),
    _as_labels(read("train-labels-idx1-ubyte.gz")),
    _as_images(read("t10k-images-idx3-ubyte.gz")),
    _as_labels(read("t10k-labels-idx1-ubyte.gz")),
  )


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzipped or not, as a uint8 array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as file:
    content = file.read()
  zero, dtype_code, ndim = content[0] * 256 + content[1], content[2], content[3]
  if zero != 0 or dtype_code != 0x08:
    raise ValueError(f"{path}: not an IDX file of unsigned bytes.")
  shape = np.frombuffer(content, ">u4", count=ndim, offset=4)
  return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_tfds(name: str) -> Dataset:  # pragma: no cover - needs tfds and data
  """CIFAR-10/100 through tensorflow-datasets (optional, e.g. on Colab)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ValueError(
      f"--data {name} needs tensorflow-datasets and internet access "
      "(`pip install tensorflow-datasets`); offline, use digits, "
      "fashion_mnist or your own .npz."
    ) from error
  train, test = tfds.as_numpy(
    tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True)
  )
  return Dataset(
    _as_images(train[0]),
    _as_labels(train[1]),
    _as_images(test[0]),
    _as_labels(test[1]),
  )


def subset(
  dataset: Dataset, max_train: int | None, max_test: int | None, seed: int = 0
) -> Dataset:
  """A random subset of at most ``max_train`` / ``max_test`` examples."""
  rng = np.random.default_rng(seed)
  pick = lambda n, limit: (
    np.sort(rng.permutation(n)[:limit]) if limit and limit < n else slice(None)
  )
  train, test = (
    pick(len(dataset.x_train), max_train),
    pick(len(dataset.x_test), max_test),
  )
  return Dataset(
    dataset.x_train[train],
    dataset.y_train[train],
    dataset.x_test[test],
    dataset.y_test[test],
  )


def _as_images(x: np.ndarray) -> np.ndarray:
  """float32 in [0, 1]; [N, H, W] gains a channel axis; flat [N, D] stays."""
  x = np.asarray(x)
  if np.issubdtype(x.dtype, np.integer):
    x = x / (255.0 if x.max() > DIGITS_MAX_PIXEL else DIGITS_MAX_PIXEL)
  if x.ndim == 3:
    x = x[..., np.newaxis]
  if x.ndim not in (2, 4):
    raise ValueError(
      f"--data: inputs of shape {x.shape} are neither flat vectors [N, D] "
      "nor images [N, H, W, C]."
    )
  return x.astype(np.float32)


def _as_labels(y: np.ndarray) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
    raise ValueError(
      f"--data: labels must be non-negative integers of shape [N]; got "
      f"{y.dtype} of shape {y.shape}."
    )
  return y.astype(np.int32)
