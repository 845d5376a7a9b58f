"""The documentation site: every page's code runs, and Sphinx builds it cleanly.

Each ``docs/*.md`` page's ```python blocks run in order in one namespace, as a
reader would paste them one after another; every other fenced block must be a
MyST directive (```{...}), so that no code on the pages goes unexecuted. The
build runs ``sphinx-build -W`` (warnings are errors), as CI does.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```$", flags=re.DOTALL | re.MULTILINE)


def fenced_blocks(page: pathlib.Path) -> list[tuple[str, str]]:
  """(info string, code) of every fenced block on the page, in order."""
  return FENCE.findall(page.read_text())


PAGES_WITH_CODE = [
  page
  for page in PAGES
  if any(info == "python" for info, _ in fenced_blocks(page))
]


def test_pages_exist():
  names = {page.stem for page in PAGES}
  assert {
    "index",
    "getting_started",
    "how_it_works",
    "choosing_coef",
    "scaling_out",
    "benchmarks",
    "results",
    "faq",
    "api",
  } <= names


def test_api_page_documents_every_public_name():
  import optax_swr  # pylint: disable=g-import-not-at-top

  api = (DOCS / "api.md").read_text()
  documented = set(
    re.findall(r"^\.\. auto\w+:: optax_swr\.(\w+)", api, flags=re.MULTILINE)
  )
  assert set(optax_swr.__all__) <= documented, (
    set(optax_swr.__all__) - documented
  )


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_every_code_block_is_python_or_a_directive(page):
  for info, _ in fenced_blocks(page):
    assert info == "python" or info.startswith("{"), (
      f"{page.name}: a ```{info} block would not be executed; write it as "
      "```python (it runs in this test) or as prose."
    )


@pytest.mark.parametrize(
  "page", PAGES_WITH_CODE, ids=[p.stem for p in PAGES_WITH_CODE]
)
def test_page_code_runs(page, tmp_path, monkeypatch, capsys):
  """Smoke test that the page's blocks run, in order, as a reader pastes them.

  The page's own ``assert`` lines check its claims; this test checks that
  nothing the page prints is NaN or inf (a norm or a factor gone bad).
  """
  blocks = [code for info, code in fenced_blocks(page) if info == "python"]
  if "orbax" in page.read_text():
    pytest.importorskip("orbax.checkpoint", reason="the [checkpoint] extra")
  monkeypatch.chdir(tmp_path)  # whatever a page writes lands here
  # A registered module, as a script would be: dataclasses (Flax's TrainState)
  # look their class's module up in sys.modules.
  module = types.ModuleType(f"docs_page_{page.stem}")
  monkeypatch.setitem(sys.modules, module.__name__, module)
  for index, code in enumerate(blocks):
    exec(
      compile(code, f"{page.name}[python block {index}]", "exec"),  # pylint: disable=exec-used
      module.__dict__,
    )
  printed = capsys.readouterr().out
  assert not re.search(r"\b(nan|inf)\b", printed, re.IGNORECASE), printed
  # A comment that shows what a print gives must match what it prints.
  for code in blocks:
    for shown in re.findall(
      r"^print\(\w+\)  # (Layers\(\[[^\]]*\]\))", code, re.M
    ):
      assert shown in printed, (shown, printed)


def test_multihost_snippet_is_the_tested_worker():
  page = (DOCS / "scaling_out.md").read_text()
  (block,) = [
    code
    for info, code in FENCE.findall(page)
    if info == "python" and "def start(" in code
  ]
  function = block[block.index("def start(") :].rstrip()
  assert function in (ROOT / "tests" / "multihost_run.py").read_text()


def test_weight_norms_figure_is_drawn_from_the_results(tmp_path):
  pytest.importorskip("matplotlib", reason="the [plots] extra")
  spec = importlib.util.spec_from_file_location(
    "docs_make_figures", DOCS / "make_figures.py"
  )
  make_figures = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_figures)
  out = make_figures.draw(
    str(ROOT / "examples" / "paper" / "results"),
    str(tmp_path / "weight_norms.png"),
  )
  assert pathlib.Path(out).stat().st_size > 10_000
  assert (DOCS / "_static" / "weight_norms.png").exists()


def test_sphinx_builds_without_warnings(tmp_path):
  missing = [
    name
    for name in ("sphinx", "sphinx_book_theme", "myst_parser")
    if importlib.util.find_spec(name) is None
  ]
  if missing:
    pytest.skip(f"the [docs] extra is not installed (missing: {missing})")
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "sphinx",
      "-W",
      "--keep-going",
      "-q",
      "-b",
      "html",
      str(DOCS),
      str(tmp_path / "html"),
    ],
    capture_output=True,
    text=True,
    check=False,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-5000:]
  assert "WARNING" not in result.stderr, result.stderr[-5000:]
  for page in PAGES:
    assert (tmp_path / "html" / f"{page.stem}.html").exists()
