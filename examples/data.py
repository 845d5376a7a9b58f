"""Offline data for the examples: scikit-learn's 8x8 digits, and minibatches.

The 1,797 digits ship with scikit-learn, so nothing is downloaded. Images come
as float32 NHWC arrays ``[N, 8, 8, 1]`` in [0, 1], the layout the image models
of ``examples/models_linen.py`` and ``examples/models_nnx.py`` take; models on
flat inputs reshape them to ``[N, 64]``.

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

import numpy as np
from sklearn import datasets
from sklearn import model_selection

Batch = tuple[np.ndarray, np.ndarray]  # Inputs [B, ...] and int32 labels [B].

DIGITS_MAX_PIXEL = 16.0  # scikit-learn's digits have pixel values 0..16.


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
