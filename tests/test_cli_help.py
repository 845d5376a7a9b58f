"""Every example's ``--help`` shows the flags' defaults (issue 24, item 10)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import re

import pytest

from examples import cli
from examples import digits_demo
from examples.paper import permuted_inputs
from examples.paper import random_labels
from examples.paper import warm_start
from examples.rl import continual as rl_continual


def help_text(parse: Callable[[list[str]], object], capsys) -> str:
  with pytest.raises(SystemExit) as exit_info:
    parse(["--help"])
  assert exit_info.value.code == 0
  # Joined on one line: argparse wraps long help texts at any space.
  return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
  "parse, shown",
  [
    # A flag with help text, and one without.
    (
      random_labels.parse_flags,
      ["class-balanced training subset (default: 1200)"],
    ),
    (random_labels.parse_flags, ["--batch-size BATCH_SIZE (default: 32)"]),
    (
      random_labels.parse_flags,
      ["comma-separated (default: 1e-4,1e-3,1e-2,1)"],
    ),
    (
      permuted_inputs.parse_flags,
      ["training examples per task, seen once (default: 10000)"],
    ),
    (permuted_inputs.parse_flags, ["--batch-size BATCH_SIZE (default: 16)"]),
    (permuted_inputs.parse_flags, ["--swr SWR", "(default: 1e-2)"]),
    (permuted_inputs.parse_flags, ["--from-selection FILE[,FILE...]"]),
    (digits_demo.parse_args, ["--epochs EPOCHS", "(default: 60)"]),
    (digits_demo.parse_args, ["--batch-size BATCH_SIZE (default: 64)"]),
    (warm_start.main, ["--online-rounds ONLINE_ROUNDS", "(default: 2)"]),
    (warm_start.main, ["--seeds SEEDS (default: 3)"]),
    (rl_continual.parse_flags, ["--cycles CYCLES (default: 2)"]),
    (rl_continual.parse_flags, ["--num-envs NUM_ENVS", "(default: 8)"]),
  ],
)
def test_help_shows_the_defaults(parse, shown, capsys):
  text = help_text(parse, capsys)
  for part in shown:
    assert part in text


@pytest.mark.parametrize(
  "parse",
  [
    random_labels.parse_flags,
    permuted_inputs.parse_flags,
    digits_demo.parse_args,
    rl_continual.parse_flags,
  ],
)
def test_each_default_is_shown_once(parse, capsys):
  # The help texts that wrote their default by hand no longer do.
  text = help_text(parse, capsys)
  assert not re.search(r"\(default[^)]*\) \(default", text)
  assert "(default 1e-4)" not in text and "(default 8)" not in text


def test_defaults_that_say_nothing_are_left_out():
  parser = cli.parser("A script.\n\nMore words.")
  parser.add_argument("--out", help="the JSON to write")
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--no-progress", dest="progress", action="store_false")
  parser.add_argument("--epochs", type=int, default=5, help="(%(default)d)")
  parser.add_argument("--lr", type=float, default=1e-3)
  text = " ".join(parser.format_help().split())
  assert "A script." in text and "More words." not in text
  assert "--lr LR (default: 0.001)" in text
  assert "--epochs EPOCHS (5)" in text  # kept as written
  assert text.count("default") == 1
  # The parser's own actions keep their help (the formatter copies them).
  lr = next(a for a in parser._actions if a.dest == "lr")  # noqa: SLF001
  assert lr.help is None
  assert parser.formatter_class is cli.DefaultsHelpFormatter
  assert issubclass(cli.DefaultsHelpFormatter, argparse.HelpFormatter)
