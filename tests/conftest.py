"""What every test file shares: a compilation cache for the run, file order.

Most of the suite's time is XLA compiling: jitted programs and the eager ops
of un-jitted code, once per process. The two pytest-xdist workers of
``make test`` compile many of the same ones (the zoo's models, the examples'
steps). Each run gets a fresh persistent compilation cache (a temporary
directory, removed at the end), so a worker loads what the other compiled.
A cached executable is the one XLA built for the same program and flags, so
every result is bit for bit that of a compile: nothing a test checks
changes. Only the pytest processes use it, not the scripts that tests start
in subprocesses. ``JAX_COMPILATION_CACHE_DIR`` set by you (your own cache) or
``JAX_ENABLE_COMPILATION_CACHE=false`` leave jax's cache as you set it.

XLA compiles the tests' programs without LLVM's optimizations
(``--xla_backend_optimization_level=0`` in ``XLA_FLAGS``, inherited by the
scripts tests start) and without XLA:CPU's fusion emitters
(``--xla_cpu_use_fusion_emitters=false``): the suite's programs are small and
run once or a few times, so optimizing them costs more than it saves. Measured
on 2 cores, one busy: the zoo and beyond-chains files 131 s -> 84 s with the
first flag; with both, an eager op compiles in about half the time, test_zoo
83 s -> 57 s, test_protocols 63 s -> 48 s, test_rl 56 s -> 50 s (a
convolution's step runs about 1.6x slower, its compile 2x faster). The
arithmetic is the same IEEE float arithmetic, and every tolerance holds as
before. A flag of your own in ``XLA_FLAGS`` is left as you set it.

With ``--dist loadfile`` a file runs on one worker, so one slow file left for
the end holds up the whole run. xdist would start the files with the most
tests first; the slowest files (by ``--durations``) start first instead.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

# Each added unless XLA_FLAGS already names it.
_FAST_COMPILE = {
  "xla_backend_optimization_level": "0",
  "xla_cpu_use_fusion_emitters": "false",
}
for _flag, _value in _FAST_COMPILE.items():
  if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + f" --{_flag}={_value}"
    ).strip()

# Handed from the pytest process that made the directory to its workers.
_CACHE_DIR_VARIABLE = "_OPTAX_SWR_TESTS_JAX_CACHE_DIR"
_MADE_KEY = pytest.StashKey[str]()  # the directory, in the process that made it

# Test files of more than about 25 s on a 2-core machine, slowest first
# (`pytest -n 2 --dist loadfile --durations=0`, summed per file). The others
# follow in their usual order: the shortest fill in at the end.
SLOW_FILES = (
  "test_beyond_chains.py",
  "test_zoo.py",
  "test_rl.py",
  "test_benchmarks.py",
  "test_protocols.py",
  "test_docs_site.py",
  "test_optax_battery.py",
  "test_engine.py",
  "test_scanned_stacks.py",
  "test_equinox.py",
  "test_rescale.py",
  "test_fuzz.py",
  "test_reference.py",
  "test_notebook.py",
  "test_tracing.py",
  "test_patch_conv.py",
  "test_checkpoint.py",
  "test_metrics.py",
  "test_engine_benchmark.py",
  "test_examples.py",
  "test_packaging.py",
)


def _atomic_cache_writes() -> bool:
  """Makes jax's cache write each entry whole (a temporary file, renamed).

  jax writes an entry in place: a worker reading it while the other writes it
  would read it cut short (a warning, which some tests turn into errors).
  False where jax's cache is not the one this patches: then none is used.
  """
  try:
    from jax._src import lru_cache  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  cache = getattr(lru_cache, "LRUCache", None)
  suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
  put = getattr(cache, "put", None)
  if put is None or not isinstance(suffix, str):
    return False
  if getattr(put, "writes_whole_entries", False):
    return True

  def put_whole(self, key: str, value: bytes) -> None:
    if getattr(self, "eviction_enabled", True):  # jax locks these itself
      put(self, key, value)
      return
    path = pathlib.Path(self.path) / f"{key}{suffix}"
    if path.exists():
      return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(value)
    os.replace(partial, path)

  put_whole.writes_whole_entries = True  # type: ignore[attr-defined]
  cache.put = put_whole
  return True


def pytest_configure(config: pytest.Config) -> None:
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False  # the order of the items below
  disabled = os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "").lower() in (
    "0",
    "false",
  )
  if disabled or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  if not hasattr(config, "workerinput") and not os.environ.get(
    _CACHE_DIR_VARIABLE
  ):
    # The controller (or the one process without xdist) makes the directory
    # before the workers start; they inherit the variable.
    directory = tempfile.mkdtemp(prefix="optax_swr_tests_jax_cache_")
    os.environ[_CACHE_DIR_VARIABLE] = directory
    config.stash[_MADE_KEY] = directory
  if getattr(config.option, "numprocesses", None) and not hasattr(
    config, "workerinput"
  ):
    return  # the xdist controller compiles nothing
  directory = os.environ.get(_CACHE_DIR_VARIABLE)
  if directory and _atomic_cache_writes():
    import jax  # pylint: disable=g-import-not-at-top

    jax.config.update("jax_compilation_cache_dir", directory)
    # Every program, however small or fast to compile: eager ops are most.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config: pytest.Config) -> None:
  directory = config.stash.get(_MADE_KEY, None)
  if directory is not None:
    shutil.rmtree(directory, ignore_errors=True)
    os.environ.pop(_CACHE_DIR_VARIABLE, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  rank = {name: i for i, name in enumerate(SLOW_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))
