"""The release artifacts: sdist and wheel build, pass `twine check`, and install.

`python -m build` makes both archives (the wheel from the sdist, so a file
missing from the sdist fails here) in an isolated build environment, which
fetches setuptools from the package index and has no jax: the version is read
from the literal in optax_swr/__init__.py without importing the package.

The last test installs the wheel in a fresh virtual environment, with the core
dependencies only, and runs the README's usage line there. It is marked slow
(deselect with `-m "not slow"`); `make test` runs it.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import os
import pathlib
import subprocess
import sys
import tarfile
import textwrap
import zipfile

import pytest

import optax_swr

ROOT = pathlib.Path(__file__).resolve().parents[1]
VERSION = optax_swr.__version__

# Extras' modules (and tools') that `import optax_swr` must not pull in.
EXTRAS_MODULES = (
  "sklearn",
  "tqdm",
  "matplotlib",
  "orbax",
  "hypothesis",
  "pytest",
  "sphinx",
  "nbclient",
)
# Distributions of the extras that a core install must not need. orbax-checkpoint
# is absent from this list: flax, a core dependency, requires it.
EXTRAS_DISTRIBUTIONS = ("scikit-learn", "tqdm", "matplotlib", "hypothesis")


def run(*args: str | os.PathLike, **kwargs) -> subprocess.CompletedProcess:
  """Runs a command; on failure, the assertion shows its output."""
  result = subprocess.run(
    [str(a) for a in args],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kwargs,
  )
  assert result.returncode == 0, f"{args} failed:\n{result.stdout}"
  return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, pathlib.Path]:
  """Builds the sdist and the wheel once for this module."""
  pytest.importorskip("build", reason="needs the dev extra: pip install .[dev]")
  out = tmp_path_factory.mktemp("dist")
  run(sys.executable, "-m", "build", "--outdir", out, ROOT)
  sdists = list(out.glob("*.tar.gz"))
  wheels = list(out.glob("*.whl"))
  assert len(sdists) == 1 and len(wheels) == 1, list(out.iterdir())
  return {"sdist": sdists[0], "wheel": wheels[0]}


def metadata(text: str) -> email.message.Message:
  return email.parser.Parser().parsestr(text)


def test_twine_check_passes(dist):
  pytest.importorskip("twine", reason="needs the dev extra: pip install .[dev]")
  run(
    sys.executable,
    "-m",
    "twine",
    "check",
    "--strict",
    dist["sdist"],
    dist["wheel"],
  )


def test_archive_names_carry_the_package_version(dist):
  assert dist["wheel"].name == f"optax_swr-{VERSION}-py3-none-any.whl"
  assert dist["sdist"].name == f"optax_swr-{VERSION}.tar.gz"


def test_wheel_ships_the_package_py_typed_and_license(dist):
  with zipfile.ZipFile(dist["wheel"]) as wheel:
    names = set(wheel.namelist())
    info = f"optax_swr-{VERSION}.dist-info"
    meta = metadata(wheel.read(f"{info}/METADATA").decode())
    license_text = wheel.read(f"{info}/licenses/LICENSE").decode()
  assert "optax_swr/py.typed" in names
  assert "optax_swr/__init__.py" in names
  assert {n.split("/")[0] for n in names} == {"optax_swr", info}
  assert license_text == (ROOT / "LICENSE").read_text()
  assert "Apache License" in license_text and "Version 2.0" in license_text
  assert meta["Name"] == "optax-swr"
  assert meta["Version"] == VERSION
  assert meta["License-Expression"] == "Apache-2.0"
  assert "Typing :: Typed" in meta.get_all("Classifier")
  urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
  assert {"Homepage", "Documentation", "Changelog", "Issues"} <= set(urls)
  requires = meta.get_all("Requires-Dist")
  core = [r for r in requires if "extra ==" not in r]
  assert {r.split(">")[0].split("=")[0] for r in core} == {
    "jax",
    "jaxlib",
    "optax",
    "numpy",
    "flax",
  }


def test_sdist_ships_license_changelog_and_py_typed(dist):
  top = f"optax_swr-{VERSION}"
  with tarfile.open(dist["sdist"]) as sdist:
    names = set(sdist.getnames())
    pkg_info = sdist.extractfile(f"{top}/PKG-INFO").read().decode()
  for name in (
    "LICENSE",
    "CHANGELOG.md",
    "README.md",
    "pyproject.toml",
    "optax_swr/py.typed",
  ):
    assert f"{top}/{name}" in names, name
  assert metadata(pkg_info)["Version"] == VERSION


def test_changelog_has_an_entry_for_this_version():
  assert f"## [{VERSION}]" in (ROOT / "CHANGELOG.md").read_text()


USAGE = textwrap.dedent(
  """
    import sys
    from importlib import metadata

    import jax.numpy as jnp
    import optax, optax_swr
    tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=1e-3))

    params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.zeros(4)},
              "Dense_1": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)}}
    grads = {k: {n: jnp.full_like(v, 0.1) for n, v in layer.items()}
             for k, layer in params.items()}
    opt_state = tx.init(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    norms = optax.tree.get(opt_state, "weight_norms")
    assert norms.shape == (2,) and bool(jnp.all(jnp.isfinite(norms))), norms

    extras = [m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(",")]
    assert not extras, f"import optax_swr imported extras: {extras}"
    installed = []
    for name in sys.argv[2].split(","):
      try:
        installed.append(f"{name} {metadata.version(name)}")
      except metadata.PackageNotFoundError:
        pass
    assert not installed, f"a core install brought extras: {installed}"
    print(optax_swr.__version__, optax_swr.__file__)
    """
)


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs_the_usage_line(dist, tmp_path):
  venv = tmp_path / "venv"
  # No --system-site-packages. The venv gets no pip of its own (ensurepip: 5
  # s) where this pip can install into it (--python, pip >= 22.3), resolving
  # the wheel's dependencies against the venv alone; no .pyc files are
  # written (10 s; Python compiles what the usage line imports).
  python = venv / "bin" / "python"
  pip_version = tuple(
    map(int, importlib.metadata.version("pip").split(".")[:2])
  )
  if pip_version >= (22, 3):
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    pip = [sys.executable, "-m", "pip", "--python", python]
  else:
    run(sys.executable, "-m", "venv", venv)
    pip = [python, "-m", "pip"]
  env = {
    k: v
    for k, v in os.environ.items()
    if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
  }
  run(*pip, "install", "--quiet", "--no-compile", dist["wheel"], env=env)
  # -I: neither the working directory nor PYTHONPATH is on sys.path, so this
  # imports the installed wheel, not the checkout.
  result = run(
    python,
    "-I",
    "-c",
    USAGE,
    ",".join(EXTRAS_MODULES),
    ",".join(EXTRAS_DISTRIBUTIONS),
    cwd=tmp_path,
    env=env,
  )
  version, location = result.stdout.split()[-2:]
  assert version == VERSION
  assert pathlib.Path(location).is_relative_to(venv), location
