"""The examples' command lines: every ``--help`` shows the flags' defaults.

Example::

  from examples import cli

  parser = cli.parser(__doc__)
  parser.add_argument("--seeds", type=int, default=3)
  parser.print_help()  # --seeds SEEDS  (default: 3)
"""

from __future__ import annotations

import argparse
import copy
from typing import Any


class DefaultsHelpFormatter(argparse.HelpFormatter):
  """Ends each flag's help with ``(default: ...)``, help text or not.

  Unlike ``argparse.ArgumentDefaultsHelpFormatter``, it also shows the default
  of a flag without help text, and leaves out defaults that say nothing: None
  (the flag is off unless given) and the booleans of ``store_true`` and
  ``store_false`` flags. A help text that already names ``%(default)`` is
  kept as written.
  """

  def add_argument(self, action: argparse.Action) -> None:
    help_text = action.help or ""
    if (
      action.help is not argparse.SUPPRESS
      and action.option_strings
      and action.default not in (None, argparse.SUPPRESS)
      and not isinstance(action.default, bool)
      and "%(default)" not in help_text
    ):
      action = copy.copy(action)  # The parser keeps its own unchanged.
      action.help = f"{help_text} (default: %(default)s)".lstrip()
    super().add_argument(action)


def parser(doc: str | None, **kwargs: Any) -> argparse.ArgumentParser:
  """An ``ArgumentParser`` described by ``doc``'s first line, with defaults.

  Args:
    doc: the script's module docstring; its first line describes the script.
    **kwargs: passed on to ``argparse.ArgumentParser`` (``prog``, ...).

  Returns:
    A parser whose ``--help`` shows every flag's default.
  """
  return argparse.ArgumentParser(
    description=(doc or "").split("\n")[0],
    formatter_class=DefaultsHelpFormatter,
    **kwargs,
  )
