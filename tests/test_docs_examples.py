"""Every ```python block of README.md and docs/*.md runs as pasted and prints what the docs say.

Each block is one test case, named by file and line (``README.md:45``). It is written to
``example.py`` in a fresh temporary directory and run there by a new Python process, so it sees
nothing but its own code (the files it writes stay in that directory), with one thread per
process (``OMP_NUM_THREADS=1``, as torchrun sets it) and without the suite's ``conftest.py``
settings. A new block is picked up with no change here; a doc states what its block needs with
these conventions:

* **What it prints.** When the block writes to stdout, the docs show that output after it
  (before the next python block; a ```bash block with the command may come between): a
  paragraph ending in ``prints:`` followed by a ```text block. Each line of that block must
  appear in the output, in order (lines a framework logs on its own may come between); its text
  must match exactly and its numbers to a relative 1e-3 (the last printed digit may differ
  between machines). A block that prints something without such a block fails.
* **A launcher or a long run.** An HTML comment on the lines just above the fence (invisible on
  the site), ``<!-- docs-test: torchrun 2, slow -->``: ``torchrun N`` runs the block under
  ``torchrun --standalone --nproc-per-node N`` (on CPU the block picks gloo); ``slow`` marks the
  case ``pytest.mark.slow`` (still in the default run: keep every block under ~20 s).
* **Optional dependencies.** When a module the block imports (other than the standard library
  and ``hypergrad``) cannot be imported here, the case is skipped and says which one (timm
  imports torchvision, whose CPU-only installs often fail).
"""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_EXIT = 77  # the runner's exit status when an optional dependency cannot be imported
TIMEOUT_S = 300

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

# Runs the block after importing what it imports, so that a missing optional dependency is a
# skip (exit SKIP_EXIT, the reason on stderr) and not an error inside the example.
RUNNER = f"""\
import importlib, runpy, sys
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        print(f"{{name}} cannot be imported here ({{type(error).__name__}}: {{error}})", file=sys.stderr)
        sys.exit({SKIP_EXIT})
path = sys.argv[1]
sys.argv = [path]
runpy.run_path(path, run_name="__main__")
"""


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    expected: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def _fences(lines: list[str]) -> list[tuple[int, int, str]]:
    """(opening line index, closing line index, language) of every fenced block."""
    fences, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening:
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            fences.append((index, end, opening.group(2)))
            index = end
        index += 1
    return fences


def _options(lines: list[str], start: int) -> dict[str, str]:
    """The ``docs-test`` comment on the lines above ``start`` (blank lines allowed between)."""
    index = start - 1
    while index >= 0 and not lines[index].strip():
        index -= 1
    marker = MARKER.match(lines[index]) if index >= 0 else None
    if not marker:
        return {}
    words = [item.split() for item in marker.group(1).split(",") if item.strip()]
    return {item[0]: " ".join(item[1:]) for item in words}


def collect(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    fences = _fences(lines)
    blocks = []
    for position, (start, end, language) in enumerate(fences):
        if language != "python":
            continue
        block = Block(path, start + 1, "\n".join(lines[start + 1:end]) + "\n", options=_options(lines, start))
        previous_end = end
        for next_start, next_end, next_language in fences[position + 1:]:
            if next_language == "python":
                break
            prose = " ".join(line.strip() for line in lines[previous_end + 1:next_start] if line.strip())
            if next_language == "text" and prose.endswith("prints:"):
                block.expected = "\n".join(lines[next_start + 1:next_end])
                break
            previous_end = next_end
        blocks.append(block)
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in collect(document)]


def imported_modules(code: str) -> list[str]:
    """The top-level modules the block imports, leaving out the standard library and hypergrad."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(names - set(sys.stdlib_module_names) - {"hypergrad"})


def _tokens(line: str) -> tuple[list[str], list[str]]:
    """The line's text between numbers, and its numbers."""
    return NUMBER.split(line.strip()), NUMBER.findall(line)


def same_line(expected: str, actual: str) -> bool:
    (text, numbers), (actual_text, actual_numbers) = _tokens(expected), _tokens(actual)
    if text != actual_text or len(numbers) != len(actual_numbers):
        return False
    for want, got in zip(numbers, actual_numbers):
        if re.fullmatch(r"[-+]?\d+", want):
            if int(want) != int(got):
                return False
        elif not math.isclose(float(want), float(got), rel_tol=1e-3, abs_tol=1e-12):
            return False
    return True


def unmatched_line(expected: str, output: str) -> str | None:
    """The first expected line that does not appear, in order, in the output; None when all do."""
    remaining = iter(output.splitlines())
    for line in expected.strip("\n").splitlines():
        if not any(same_line(line, candidate) for candidate in remaining):
            return line
    return None


def run_block(block: Block, directory: Path) -> subprocess.CompletedProcess:
    (directory / "example.py").write_text(block.code, encoding="utf-8")
    (directory / "_runner.py").write_text(RUNNER, encoding="utf-8")
    launcher = [sys.executable]
    if "torchrun" in block.options:
        processes = block.options["torchrun"] or "2"
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    environment.pop("HYPERGRAD_COMPILED_STATISTICS", None)  # as a user runs it (conftest.py sets it)
    environment["OMP_NUM_THREADS"] = "1"  # as torchrun sets it: threads fighting over shared cores cost 3x
    return subprocess.run(
        [*launcher, "_runner.py", "example.py", *imported_modules(block.code)],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=TIMEOUT_S,
    )


def _case(block: Block):
    marks = [pytest.mark.slow] if "slow" in block.options else []
    return pytest.param(block, id=block.name, marks=marks)


@pytest.mark.parametrize("block", [_case(block) for block in BLOCKS])
def test_block_runs_and_prints_what_the_docs_say(block: Block, tmp_path: Path):
    result = run_block(block, tmp_path)
    if result.returncode == SKIP_EXIT:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr[-4000:]}"
    if block.expected is None:
        assert not result.stdout.strip(), (
            f"{block.name} prints output the docs do not show; add a paragraph ending in 'prints:' and a "
            f"```text block with it after the block:\n{result.stdout}"
        )
        return
    missing = unmatched_line(block.expected, result.stdout)
    assert missing is None, f"{block.name}: the docs say it prints {missing!r}; it printed:\n{result.stdout}"


def test_the_docs_have_python_blocks():
    """The collector sees the blocks (a broken pattern would pass every case by finding none)."""
    assert len(BLOCKS) >= 10
    assert {block.path.name for block in BLOCKS} >= {"README.md", "distributed.md", "integrations.md"}


@pytest.mark.parametrize(
    ("expected", "output", "matches"),
    [
        ("lr 0.0020013 after 20 steps", "lr 0.00200127 after 20 steps", True),
        ("lr 0.0010306 after 20 steps", "lr 0.00200127 after 20 steps", False),
        ("step 20", "step 21", False),
        ("a 1\nb 2", "noise\na 1\nmore noise\nb 2\n", True),
        ("b 2\na 1", "a 1\nb 2\n", False),
        ("rate: 0.5", "rates: 0.5", False),
    ],
)
def test_output_comparison(expected, output, matches):
    assert (unmatched_line(expected, output) is None) is matches
