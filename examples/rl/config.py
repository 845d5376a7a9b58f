"""What a PPO run is configured with, and the flags that set it.

:class:`Config` holds everything a run needs besides the environment and the
method; every field is a flag of the scripts (``num_envs`` is
``--num-envs``), added by :func:`add_config_flags` and read back by
:func:`config_from_flags`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
from typing import Any

from examples import methods

# The methods of examples.methods.REGISTRY that the agent runs, each with the
# Config fields (flags) of its coefficients, in the registry's order.
COEF_FIELDS: dict[str, tuple[str, ...]] = {
  "vanilla": (),
  "swr": ("swr_coef", "swr_head_coef"),
  "l2": ("l2_coef",),
  "l2_init": ("l2_init_coef",),
  "snp": ("snp_coef",),
  "redo": ("redo_tau",),
  "adamw": ("adamw_coef",),
  "cbp": ("cbp_rate",),
  "swr_redo": ("swr_redo_coef", "swr_redo_tau", "swr_head_coef"),
}
METHODS = tuple(COEF_FIELDS)
NETWORKS = ("auto", "mlp", "cnn")


def _flag(default: Any, help_text: str) -> Any:
  return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run needs besides the environment and the method.

  Every field is a flag of the script (``num_envs`` is ``--num-envs``).
  """

  total_steps: int = _flag(200_000, "environment steps per seed")
  num_envs: int = _flag(8, "environments run in parallel per seed")
  num_steps: int = _flag(32, "rollout length per environment and update")
  update_epochs: int = _flag(4, "passes over each rollout")
  num_minibatches: int = _flag(4, "minibatches per pass")
  lr: float = _flag(1e-3, "Adam's learning rate (constant)")
  gamma: float = _flag(0.99, "discount")
  gae_lambda: float = _flag(0.95, "GAE's lambda")
  clip_eps: float = _flag(0.2, "PPO's clipping of the ratio and the value")
  ent_coef: float = _flag(0.01, "weight of the entropy bonus")
  vf_coef: float = _flag(0.5, "weight of the value loss")
  max_grad_norm: float = _flag(0.5, "clip of the gradient's global norm")
  network: str = _flag(
    "auto", "mlp, cnn, or auto: cnn for [height, width, channels] inputs"
  )
  width: int = _flag(64, "units of each of the MLP's two hidden layers")
  swr_coef: float = _flag(1e-4, "swr: lambda")
  swr_head_coef: float = _flag(
    0.0,
    "swr and swr_redo: lambda of the output layer. 0: the output layer "
    "absorbs the torso's factors, so that the logits and the value are kept "
    "exactly (SWR would scale both every step: a flatter or sharper policy, "
    "a rescaled value); > 0: the paper's rule, which scales the outputs by "
    "the product of every layer's factor (--swr-coef's value: the default "
    "before issue 28)",
  )
  l2_coef: float = _flag(1e-4, "l2: coef / 2 ||theta||^2 in the loss")
  l2_init_coef: float = _flag(1e-4, "l2_init: coef ||theta - theta_0||^2")
  snp_coef: float = _flag(0.2, "snp: weight of theta_0 in the interpolation")
  snp_every: int = _flag(50, "snp: act after every this many updates")
  redo_tau: float = _flag(0.1, "redo: dormancy threshold")
  redo_every: int = _flag(
    50, "redo and swr_redo: act after every this many updates"
  )
  adamw_coef: float = _flag(1e-4, "adamw: decoupled weight decay")
  cbp_rate: float = _flag(
    1e-4, "cbp: replacement rate (of the mature units, per minibatch step)"
  )
  swr_redo_coef: float = _flag(1e-4, "swr_redo: SWR's lambda")
  swr_redo_tau: float = _flag(0.1, "swr_redo: ReDo's dormancy threshold")
  dormant_tau: float = _flag(0.1, "threshold of the dormant-fraction metric")

  def __post_init__(self):
    if self.network not in NETWORKS:
      raise ValueError(
        f"Config: network={self.network!r}; choose one of {NETWORKS}."
      )
    if self.batch_size % self.num_minibatches:
      raise ValueError(
        f"Config: num_envs * num_steps = {self.batch_size} transitions per "
        f"update do not split into num_minibatches={self.num_minibatches} "
        "equal minibatches; change one of them."
      )
    for name in ("snp_every", "redo_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"Config: {name} must be >= 1.")

  def coefs(self, method: str) -> tuple[float, ...]:
    """``method``'s coefficients from the flags, as the registry takes them.

    Raises:
      ValueError: naming the flag of a coefficient outside the range the
        registry accepts (``[0, 1]`` or ``[0, inf)``).
    """
    check_method(method)
    upper = methods.REGISTRY[method].max_coef
    upper = float("inf") if upper is None else upper
    for name in COEF_FIELDS[method]:
      value = getattr(self, name)
      if not 0 <= value <= upper:
        raise ValueError(
          f"--{name.replace('_', '-')}: {method} takes a value in "
          f"[0, {upper:g}]; got {value}."
        )
    return tuple(getattr(self, name) for name in COEF_FIELDS[method])

  def keeps_outputs(self, method: str) -> bool:
    """Whether ``method`` rescales with the outputs kept exactly.

    SWR's methods with ``swr_head_coef`` 0 (see ``agent.keep_outputs``).
    """
    return "swr_head_coef" in COEF_FIELDS[method] and self.swr_head_coef == 0

  def intervene_every(self, method: str) -> int:
    """The updates between two of ``method``'s interventions (snp, redo)."""
    return {"snp": self.snp_every, "redo": self.redo_every}[method]

  @property
  def batch_size(self) -> int:
    """Transitions per update, over all environments."""
    return self.num_envs * self.num_steps

  @property
  def minibatch_size(self) -> int:
    return self.batch_size // self.num_minibatches

  @property
  def steps_per_update(self) -> int:
    """Optimizer steps per update: one per minibatch of every epoch."""
    return self.update_epochs * self.num_minibatches

  @property
  def num_updates(self) -> int:
    """Updates that ``total_steps`` environment steps make (at least 1)."""
    return max(1, self.total_steps // self.batch_size)


def check_method(method: str) -> None:
  """A ValueError naming ``--methods`` for a method the agent cannot run."""
  methods.check_names([method], allowed=METHODS)


def parse_methods(flag: str) -> list[str]:
  """``"vanilla,swr"`` as a list of names from :data:`METHODS`."""
  names = [name.strip() for name in flag.split(",") if name.strip()]
  methods.check_names(names, allowed=METHODS)
  return names


def add_config_flags(
  parser: argparse.ArgumentParser, exclude: Sequence[str] = ()
) -> None:
  """A flag per :class:`Config` field (``num_envs``: ``--num-envs``)."""
  for field in dataclasses.fields(Config):
    if field.name in exclude:
      continue
    parser.add_argument(
      "--" + field.name.replace("_", "-"),
      type=float if field.default is None else type(field.default),
      default=field.default,
      help=field.metadata["help"],
    )


def config_from_flags(args: argparse.Namespace, **fixed: Any) -> Config:
  """The :class:`Config` of parsed flags; ``fixed`` fields have no flag."""
  return Config(
    **{
      field.name: getattr(args, field.name)
      for field in dataclasses.fields(Config)
      if field.name not in fixed
    },
    **fixed,
  )
