"""Smoke tests of the example training loops (examples/train/) on digits."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the examples need the [examples] extra")
pytest.importorskip("tqdm", reason="the examples need the [examples] extra")

# pylint: disable=g-import-not-at-top,wrong-import-position
from examples import data
from examples.train import common
from examples.train import linen as train_linen
from examples.train import nnx as train_nnx

# Width 8 and lr 1e-2 learn digits within a few epochs. Over 4 seeds, both
# loops, with and without SWR, the lowest test accuracy measured was 0.82
# after 2 epochs and 0.92 after 4; chance is 0.1.
QUICK = common.Config(width=8, lr=1e-2, progress=False)
# With 4 epochs the learning-rate drops (50% and 75% of the steps) fall at
# the ends of epochs 2 and 3, where the history records the weight norms.
RESET_EPOCHS = 4
LOOPS = {"linen": train_linen, "nnx": train_nnx}


def test_digits_are_nhwc_in_unit_range_and_stratified():
  dataset = data.load_digits()
  assert dataset.x_train.shape[1:] == (8, 8, 1)
  assert dataset.x_train.dtype == np.float32
  assert dataset.y_train.dtype == np.int32
  assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0
  assert len(dataset.x_test) == 540 and dataset.num_classes == 10
  train_share = np.bincount(dataset.y_train) / len(dataset.y_train)
  test_share = np.bincount(dataset.y_test) / len(dataset.y_test)
  np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_batches_cover_each_example_once_per_epoch():
  x, y = np.arange(10.0), np.arange(10)
  rng = np.random.default_rng(0)
  full = list(data.batches(x, y, 4, rng))
  assert [len(bx) for bx, _ in full] == [4, 4]
  every = list(data.batches(x, y, 4, rng, drop_last=False))
  assert [len(bx) for bx, _ in every] == [4, 4, 2]
  seen = np.concatenate([by for _, by in every])
  assert sorted(seen) == list(range(10))
  assert all((bx == by).all() for bx, by in every)  # Pairs stay together.


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_swr_loop_learns_and_resets_norms_at_lr_drops(loop):
  config = dataclasses.replace(QUICK, epochs=RESET_EPOCHS)
  history = LOOPS[loop].train_and_evaluate(config)

  assert {len(values) for values in history.values()} == {RESET_EPOCHS}
  assert history["test_accuracy"][-1] > 0.7
  assert history["train_loss"][-1] < history["train_loss"][0]
  weight_norms, reference = history["weight_norms"], history["reference_norms"]
  assert weight_norms[0].shape == (6,)  # conv1, bn1, conv2, bn2, fc1, head.
  # No reset in epochs 1-2: still the norms at initialisation.
  np.testing.assert_array_equal(reference[0], reference[1])
  # Reset at the first step of epoch 3 and of epoch 4: the norms then.
  np.testing.assert_allclose(reference[2], weight_norms[1], rtol=1e-5)
  np.testing.assert_allclose(reference[3], weight_norms[2], rtol=1e-5)
  assert not np.allclose(reference[3], reference[0], rtol=1e-3)


def test_linen_baseline_learns_without_swr():
  history = train_linen.train_and_evaluate(
    dataclasses.replace(QUICK, epochs=2, swr=False)
  )
  assert {len(values) for values in history.values()} == {2}
  assert history["test_accuracy"][-1] > 0.6
  assert history["reference_norms"] == [None, None]
  assert all(np.all(norms > 0) for norms in history["weight_norms"])


def test_lr_drops_at_half_and_three_quarters_of_the_steps():
  dataset = data.load_digits()  # 1,257 training images: 19 batches of 64.
  assert common.decay_steps(QUICK, dataset) == (95, 142)


def test_flags_map_to_the_config():
  assert common.parse_config([], "") == common.Config()
  config = common.parse_config(
    [
      "--model",
      "mlp",
      "--batch-size",
      "32",
      "--classifier-coef",
      "1",
      "--width",
      "16",
      "--no-swr",
      "--no-progress",
    ],
    "",
  )
  assert (config.model, config.batch_size, config.width) == ("mlp", 32, 16)
  assert config.classifier_coef == 1.0
  assert not config.swr and not config.progress


def test_nnx_main_prints_one_row_per_epoch(capsys):
  train_nnx.main(
    ["--epochs", "2", "--width", "4", "--classifier-coef", "1", "--no-progress"]
  )
  printed = capsys.readouterr().out
  rows = re.findall(r"^\s+\d+\s+\d\.\d{4}\s+", printed, flags=re.MULTILINE)
  assert len(rows) == 2
  assert "SWR coef 0.001" in printed
