# Copyright 2026 The optax_swr Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Warnings shown at the line of the user's code that led to them."""

from __future__ import annotations

import sys
import types
import warnings

# Packages between the user's code and a warning: the user's call reaches
# swr's init through optax.chain, nnx.Optimizer or a jax.jit trace.
_LIBRARIES = frozenset(
  {
    "optax_swr",
    "optax",
    "flax",
    "jax",
    "jaxlib",
    "equinox",
    "chex",
    "contextlib",
    "functools",
  }
)


def warn(message: str, category: type[Warning]) -> None:
  """``warnings.warn`` with the stack level of the first frame outside the
  libraries, so that Python shows the user's line, not ours or optax's."""
  frame: types.FrameType | None = sys._getframe(1)  # pylint: disable=protected-access
  level = 2  # warnings.warn's level of the caller of this function
  while frame is not None and _is_library(frame):
    frame = frame.f_back
    level += 1
  if frame is None:  # Only library frames: show our caller.
    level = 2
  warnings.warn(message, category, stacklevel=level)


def _is_library(frame: types.FrameType) -> bool:
  module = frame.f_globals.get("__name__", "")
  return module.partition(".")[0] in _LIBRARIES


def deprecated(name: str, now: str, fix: str) -> None:
  """A ``DeprecationWarning`` for ``name``, which now computes ``now``."""
  warn(
    f"{name} is deprecated and will be removed in optax_swr 0.3: it now "
    f"computes {now}. For the fast step, build "
    f"optax_swr.swr(..., deferred=True) and {fix}.",
    DeprecationWarning,
  )
