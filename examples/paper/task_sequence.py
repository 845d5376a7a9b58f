"""What the task-sequence protocols share: one network through many tasks.

``random_labels.py`` (one image subset, fresh random labels per task) and
``permuted_inputs.py`` (a fresh pixel permutation per task) train one MLP
through a sequence of tasks with its optimizer state never reset. They share:

* their flags (:func:`make_parser`, :func:`settings_from_args`): the
  methods they run and their coefficients (:data:`COEF_FLAGS`), and the
  entries those flags make (:func:`entries`: one per combination of a
  method's values);
* :class:`Lanes`: one method over every seed, side by side as lanes of the
  engine, with its intervention at each task switch for the methods that
  act there (``Method.at_task_switch``) and its step hook inside the loop;
* :func:`run_entries`, which trains every entry (in worker processes),
  :func:`method_result`, the JSON entry of a method, and
  :func:`print_comparison`, the printed table of paired differences;
* ``--from-selection`` (``examples.paper.task_runs.apply_selection``): each
  method at the setting chosen on the seeds of earlier runs, run on other
  seeds.

Example::

  lanes = Lanes(settings, x[:1], num_classes, "swr", (1e-3,))
  for task in range(settings.tasks):
    lanes.switch_task(task)  # task >= 1: the method's task-switch signal
    online = lanes.train(x, labels, order)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import itertools
import time
from typing import Any, ClassVar, TypeVar

import jax
import numpy as np
import tqdm

from examples import cli
from examples import methods as methods_lib
from examples.models import linen as models_linen
from examples.paper import engine as engine_lib
from examples.paper import runner
from examples.paper import stats
import optax_swr
from optax_swr import metrics

# The methods the task sequences run, each with the flags of its
# coefficients in the registry's order (a trailing optional one, SWR's
# lambda_c, keeps its default). Each flag takes a comma-separated list; a
# method gets one entry per combination of its flags' values.
COEF_FLAGS: dict[str, tuple[str, ...]] = {
  "vanilla": (),
  "l2": ("l2",),
  "l2_init": ("l2_init",),
  "adamw": ("adamw",),
  "snp": ("snp",),
  "snp_noise": ("snp_noise_shrink", "snp_noise_scale"),
  "head_reset": (),
  "full_reset": (),
  "swr": ("swr",),
  "redo": ("redo",),
  "cbp": ("cbp",),
  "swr_redo": ("swr_redo", "swr_redo_tau"),
  "ln": (),
  "swr_ln": ("swr_ln",),
}
METHODS = tuple(COEF_FLAGS)
# Seeds are below this; a fresh draw at task t uses the key MAX_SEED * t + seed.
MAX_SEED = 1000
# Defaults of the coefficient flags; a protocol overrides some.
DEFAULT_COEFS = {
  "l2": "1e-4",
  "l2_init": "1e-2",
  "adamw": "1e-1",
  "snp": "0.2",
  "snp_noise_shrink": "0.8",
  "snp_noise_scale": "0.2",
  "swr": "1e-4,1e-3,1e-2,1",
  "redo": "0.1",
  "cbp": "1e-4",
  "swr_redo": "1e-2",
  "swr_redo_tau": "0.1",
  "swr_ln": "1",
}


@dataclasses.dataclass(frozen=True)
class Settings:
  """The flags both protocols take; each protocol adds its own.

  ``coefs`` maps each coefficient flag's key (``"snp_noise_scale"``) to its
  values. ``selection``: with ``--from-selection``, the files, the
  selection seeds and each method's choice
  (``examples.paper.task_runs.apply_selection``).
  ``PROTOCOL`` names the script (``examples.paper.task_runs.protocol_of``
  of its JSON), ``SAME_AS_SELECTION`` the settings a run of
  ``--from-selection`` must share with its selection runs.
  """

  PROTOCOL: ClassVar[str] = ""
  SAME_AS_SELECTION: ClassVar[tuple[str, ...]] = (
    "data",
    "tasks",
    "batch_size",
    "lr",
    "width",
    "redo_every",
  )

  data: str = "fashion_mnist"
  methods: tuple[str, ...] = ("vanilla",)
  coefs: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
  tasks: int = 20
  seeds: int = 5
  first_seed: int = 0
  batch_size: int = 32
  lr: float = 1e-3
  width: int = 100
  redo_every: int = 1000
  workers: int | None = None
  progress: bool = True
  out: str | None = None
  selection: dict[str, Any] | None = None

  @property
  def seed_ids(self) -> range:
    """The seeds run, one per lane: ``first_seed`` and the next ones."""
    return range(self.first_seed, self.first_seed + self.seeds)


SettingsT = TypeVar("SettingsT", bound=Settings)


def make_parser(
  doc: str | None, defaults: Settings, coef_defaults: Mapping[str, str]
) -> argparse.ArgumentParser:
  """A protocol's parser with the flags of :class:`Settings`.

  The common flags (``examples.cli``), every method's coefficient flags,
  ``--width``, ``--redo-every`` and ``--tasks``; the protocol adds its own.

  Args:
    doc: the protocol's module docstring.
    defaults: the protocol's settings with their defaults.
    coef_defaults: overrides of :data:`DEFAULT_COEFS`, by flag key.
  """
  parser = cli.parser(doc)
  cli.add_common_flags(
    parser,
    default_data=defaults.data,
    methods=",".join(defaults.methods),
    allowed_methods=METHODS,
    seeds=defaults.seeds,
    batch_size=defaults.batch_size,
    lr=defaults.lr,
  )
  add_method_flags(parser, coef_defaults)
  parser.add_argument("--tasks", type=int, default=defaults.tasks)
  parser.add_argument(
    "--from-selection",
    default=None,
    metavar="FILE[,FILE...]",
    help=(
      "the JSON of selection runs (other seeds): run each of their methods "
      "at the setting with the best mean score on their seeds"
    ),
  )
  parser.add_argument(
    "--first-seed",
    type=int,
    default=defaults.first_seed,
    help=(
      "run the seeds first-seed .. first-seed + seeds - 1 (selection seeds "
      "apart from the reporting ones)"
    ),
  )
  return parser


def settings_from_args(
  settings_class: type[SettingsT],
  args: argparse.Namespace,
  parser: argparse.ArgumentParser,
  **extra: Any,
) -> SettingsT:
  """The settings of :func:`make_parser`'s flags, checked, plus ``extra``.

  With ``--from-selection``, the methods and coefficients are the
  selection's (``examples.paper.task_runs.apply_selection``).

  Args:
    settings_class: the protocol's :class:`Settings`.
    args: the parsed flags.
    parser: their parser (its defaults tell which flags were given).
    **extra: the protocol's own settings.

  Raises:
    ValueError: naming the flag, for a value out of its range.
  """
  methods = cli.parse_methods(args.methods, METHODS)
  cli.check_common_flags(args)
  cli.check_positive("--tasks", args.tasks)
  if not 0 <= args.first_seed <= MAX_SEED - args.seeds:
    raise ValueError(
      f"--first-seed {args.first_seed}: the seeds run must lie in "
      f"[0, {MAX_SEED}) (the keys of fresh draws start at {MAX_SEED}); "
      f"ask for at most {MAX_SEED - args.seeds} with --seeds {args.seeds}."
    )
  settings = settings_class(
    data=args.data,
    methods=methods,
    coefs=parse_coef_flags(args),
    tasks=args.tasks,
    seeds=args.seeds,
    first_seed=args.first_seed,
    batch_size=args.batch_size,
    lr=args.lr,
    width=args.width,
    redo_every=args.redo_every,
    workers=args.workers,
    progress=args.progress,
    out=args.out,
    **extra,
  )
  if args.from_selection is None:
    return settings
  if getattr(args, "calibrate", False):
    raise ValueError(
      "--calibrate trains vanilla alone; leave out --from-selection."
    )
  from examples.paper import task_runs  # It imports this module.

  dests = ("methods", *(key for keys in COEF_FLAGS.values() for key in keys))
  given = [d for d in dests if getattr(args, d) != parser.get_default(d)]
  return task_runs.apply_selection(settings, args.from_selection, given)


def add_method_flags(
  parser: argparse.ArgumentParser, defaults: Mapping[str, str]
) -> None:
  """The coefficient flags of every method, and ``--width``, ``--redo-every``.

  Args:
    parser: the protocol's parser.
    defaults: overrides of :data:`DEFAULT_COEFS`, by flag key.
  """
  for method, keys in COEF_FLAGS.items():
    coef_names = methods_lib.REGISTRY[method].coefs
    for key, coef in zip(keys, coef_names):
      parser.add_argument(
        flag_name(key),
        default={**DEFAULT_COEFS, **defaults}[key],
        help=f"{method}'s {coef}, comma-separated",
      )
  parser.add_argument(
    "--width", type=int, default=Settings.width, help="hidden units"
  )
  parser.add_argument(
    "--redo-every",
    type=int,
    default=Settings.redo_every,
    help="steps between two recyclings of redo and swr_redo",
  )


def parse_coef_flags(args: argparse.Namespace) -> dict[str, tuple[float, ...]]:
  """Every coefficient flag's values, checked against its method's bounds.

  Also checks ``--width`` and ``--redo-every``.

  Raises:
    ValueError: naming the flag.
  """
  for flag in ("width", "redo_every"):
    cli.check_positive(flag_name(flag), getattr(args, flag))
  return {
    key: cli.parse_coefs(
      flag_name(key), getattr(args, key), methods_lib.REGISTRY[method].max_coef
    )
    for method, keys in COEF_FLAGS.items()
    for key in keys
  }


def flag_name(key: str) -> str:
  """The command-line flag of a settings key: ``snp_noise_scale`` ->
  ``--snp-noise-scale``."""
  return "--" + key.replace("_", "-")


def entries(settings: Settings) -> list[tuple[str, str, tuple[float, ...]]]:
  """``(entry name, method, coefficients)``: one per combination of values.

  A method with one combination keeps its name; otherwise each entry is
  named by its values (``swr_0.001``, ``snp_noise_0.8_0.2``).
  """
  result = []
  for method in settings.methods:
    values = [settings.coefs[key] for key in COEF_FLAGS[method]]
    combinations = list(itertools.product(*values))
    if len(combinations) == 1:
      result.append((method, method, combinations[0]))
    else:
      result += [
        (method + "".join(f"_{v:g}" for v in coefs), method, coefs)
        for coefs in combinations
      ]
  return result


def selection_text(config: Mapping[str, Any]) -> str | None:
  """One line on how a run of ``--from-selection`` got its settings."""
  record = config.get("selection")
  if not record:
    return None
  seeds = record["seeds"]
  chosen = "; ".join(
    f"{method} {choice['flag']} {choice['setting']:g}"
    for method, choice in record["choices"].items()
    if choice["flag"] is not None
  )
  return (
    f"settings chosen on seeds {seeds[0]} to {seeds[-1]} of "
    f"{', '.join(record['files'])}: {chosen or 'nothing to tune'}"
  )


class Lanes:
  """One method over every seed (lanes): its model, engine and state.

  Seed ``s`` starts from ``module.init(jax.random.key(s))``; the fresh
  params of the intervention at task ``t`` come from the key ``1000 (t + 1)
  + s``, and a step hook draws from the seed's own key (the engine's
  ``hook_seeds``).

  Args:
    settings: the run's settings.
    x_example: one input (its shape builds the model).
    num_classes: the logits' size.
    method_name: a method of :data:`METHODS`.
    coefs: its coefficients.
  """

  def __init__(
    self,
    settings: Settings,
    x_example: np.ndarray,
    num_classes: int,
    method_name: str,
    coefs: Sequence[float],
  ):
    self.settings = settings
    self.method_name = method_name
    self.x_example = x_example
    self.module = models_linen.MLP(
      hidden=(settings.width,) * 2,
      num_classes=num_classes,
      layer_norm=methods_lib.REGISTRY[method_name].layer_norm,
    )
    variables = [
      self.module.init(jax.random.key(seed), x_example)
      for seed in settings.seed_ids
    ]
    self.layers = optax_swr.layers_from_linen(
      self.module, variables[0], x_example
    )
    self.method = methods_lib.build(
      method_name,
      coefs,
      methods_lib.TrainingSetup(
        self.layers,
        head=self.layers[-1:],
        lr=settings.lr,
        redo_every=settings.redo_every,
      ),
    )
    self.engine = engine_lib.Engine(
      self.module, self.method.tx, hook=self.method.step_hook
    )
    self.state = self.engine.init(variables, hook_seeds=settings.seed_ids)
    self.initial = engine_lib.stack([v["params"] for v in variables])
    self._norms = runner.lane_metrics(self.layers)[0]
    # [seeds, layers]: each layer's weight norm at initialisation.
    self.initial_norms = np.asarray(self._norms(self.initial))

  @property
  def task_switch(self) -> bool:
    """Whether the method acts at a task switch."""
    return self.method.at_task_switch is not None

  def switch_task(self, task: int) -> None:
    """The method's intervention at the start of ``task`` (none at task 0)."""
    intervention = self.method.at_task_switch
    if not task or intervention is None:
      return
    fresh = engine_lib.stack(
      [
        self.module.init(
          jax.random.key(MAX_SEED * (task + 1) + seed), self.x_example
        )["params"]
        for seed in self.settings.seed_ids
      ]
    )
    self.state = engine_lib.intervene(
      intervention, self.state, self.initial, fresh
    )

  def train(
    self, x: jax.Array, labels: jax.Array, order: np.ndarray
  ) -> np.ndarray:
    """Trains every seed on its batches; returns the online accuracy."""
    self.state, online = self.engine.train(self.state, x, labels, order)
    return online

  def accuracy(
    self, x: jax.Array, labels: jax.Array, index: np.ndarray
  ) -> np.ndarray:
    """Each seed's accuracy on its examples ``index`` ``[seeds, n]``."""
    return self.engine.accuracy(self.state, x, labels, index)

  def weight_norms(self) -> np.ndarray:
    """``[seeds, layers]``: each layer's weight norm."""
    return np.asarray(self._norms(self.state.params))

  def hidden_metrics(
    self, x: jax.Array, index: np.ndarray, tau: float
  ) -> dict[str, np.ndarray]:
    """Dormant fraction (``tau``) and srank of the penultimate features."""
    hidden = self.engine.features(self.state, x, index)
    dormant = jax.vmap(lambda *h: metrics.dormant_fraction(list(h), tau))(
      *hidden
    )
    rank = jax.vmap(metrics.effective_rank)(hidden[-1])
    return {
      "dormant_fraction": np.asarray(dormant),
      "effective_rank": np.asarray(rank),
    }


def run_entries(
  settings: Settings,
  run_method: Callable[..., dict[str, Any]],
  data_args: tuple[Any, ...],
  description: str,
) -> dict[str, dict[str, Any]]:
  """Every entry's JSON, each from ``run_method(settings, *data_args,
  method, coefs)``, in worker processes (``settings.workers``).

  ``run_method`` is pickled to the workers: a module-level function.
  """
  todo = entries(settings)
  bar = tqdm.tqdm(
    total=len(todo) * settings.tasks,
    disable=not settings.progress,
    desc=description,
    unit="task",
  )
  jobs = [(settings, *data_args, method, coefs) for _, method, coefs in todo]
  done = engine_lib.run_jobs(
    run_method, jobs, settings.workers, lambda: bar.update(settings.tasks)
  )
  bar.close()
  return {name: entry for (name, _, _), entry in zip(todo, done)}


def method_result(
  record: Mapping[str, Sequence[np.ndarray]],
  lanes: Lanes,
  coefs: Sequence[float],
  total_steps: int,
  start: float,
) -> dict[str, Any]:
  """A method's JSON entry from its per-task record.

  Args:
    record: each key's values per task, each ``[seeds, ...]``.
    lanes: the method's run.
    coefs: its coefficients.
    total_steps: the updates of one seed.
    start: ``time.perf_counter()`` at the method's start.

  Returns:
    ``{key: [seed][task, ...]}`` for each key of ``record``, plus
    ``initial_weight_norms`` (``[seed][layer]``, at initialisation),
    ``hparams`` and ``seconds``.
  """
  result: dict[str, Any] = {
    key: np.swapaxes(np.array(values), 0, 1).tolist()
    for key, values in record.items()
  }
  result["initial_weight_norms"] = lanes.initial_norms.tolist()
  result["hparams"] = {
    "method": lanes.method_name,
    "coefs": list(coefs),
    "lr": lanes.settings.lr,
    "total_steps": total_steps,
    "task_switch": lanes.task_switch,
  }
  if lanes.method.step_hook is not None:
    result["hparams"]["hook_every"] = lanes.method.step_hook.every
  result["seconds"] = time.perf_counter() - start
  return result


def finish(
  results: dict[str, Any],
  settings: Settings,
  start: float,
  print_summary: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
  """Adds the versions and the wall time since ``start``, writes the JSON
  (``--out``) and prints the summary (and where the settings were chosen,
  with ``--from-selection``); returns ``results``."""
  results["versions"] = cli.versions()
  results["wall_time_s"] = time.perf_counter() - start
  if settings.out:
    cli.write_json(settings.out, results)
  print_summary(results)
  chosen = selection_text(results["config"])
  if chosen:
    print(chosen)
  return results


def print_comparison(
  methods: Mapping[str, Mapping[str, Any]],
  scores: Callable[[Mapping[str, Any]], tuple[np.ndarray, np.ndarray]],
  titles: tuple[str, str],
) -> None:
  """One row per entry: two per-seed scores and the second's paired
  difference from vanilla's (a 95% t interval).

  Args:
    methods: the results' entries.
    scores: ``scores(entry) -> (first, last)``, each a per-seed array.
    titles: the two scores' column titles.
  """
  first_title, last_title = titles
  print(
    f"{'method':18s} {first_title:>18s} {last_title:>18s} "
    f"{last_title + ' - vanilla':>28s}"
  )
  baseline = scores(methods["vanilla"])[1] if "vanilla" in methods else None
  for name, entry in methods.items():
    first, last = scores(entry)
    difference = (
      str(stats.paired(last, baseline))
      if baseline is not None and name != "vanilla"
      else ""
    )
    print(
      f"{name:18s} {stats.mean_std_text(first, '+-'):>18s} "
      f"{stats.mean_std_text(last, '+-'):>18s} {difference:>28s}"
    )
