"""The slot protocol of table.h under threads, compiled and run in C.

The C program (tests/c/stress_table.c) makes 480,000 hits from four
threads in well under a second, on tables of one to four lines, far more
interleavings than Python processes reach.  It checks that every
(window, key) gets exactly min(limit, attempts) hits allowed while lines
overflow and expired entries are evicted across two policy layouts.
"""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "c" / "stress_table.c"
INCLUDES = ROOT / "fastlimit_ext" / "includes"


@pytest.fixture(scope="module")
def compiler():
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        pytest.skip("no C compiler")
    return found


@pytest.mark.parametrize(
    "lines, keys",
    [(1, 6), (2, 9), (2, 12), (3, 12), (4, 10)],
)
def test_counts_exact_under_eviction(compiler, tmp_path, lines, keys):
    program = tmp_path / "stress"
    build = subprocess.run(
        [compiler, "-O2", "-std=c11", "-pthread", f"-I{INCLUDES}",
         f"-DLINE_COUNT={lines}", f"-DKEY_COUNT={keys}", str(SOURCE),
         "-o", str(program)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(program)], capture_output=True, text=True, timeout=120)
    fields = dict(zip(run.stdout.split()[::2], map(int, run.stdout.split()[1::2])))
    assert run.returncode == 0, run.stdout + run.stderr
    assert fields["wrong"] == 0
    assert fields["over"] == 0
    assert fields["exact"] > 0
    if keys > 3 * lines:
        assert fields["evictions"] > 0, "the table never had to evict"
