"""Tests of the table file: creation, header checks and unsafe paths.

Opening a damaged file must raise TableError naming the path, never crash
the interpreter, so the cases that could crash run in a subprocess.
"""

import multiprocessing
import os
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

from fastlimit import Limiter, TableError, table_stats
from fastlimit_ext._table import FORMAT_VERSION

HEADER_SIZE = 8192
LINE_SIZE = 32
SLOTS = 30
LINES = SLOTS // 3
FILE_SIZE = HEADER_SIZE + LINES * LINE_SIZE
BASE = 86400 * 19675.0

# Byte offsets of the header fields, in the order of fl_header.
MAGIC = 0
VERSION = 8
HEADER_SIZE_FIELD = 12
FILE_SIZE_FIELD = 16
LINE_COUNT = 24
SLOTS_PER_LINE = 32
LINE_SIZE_FIELD = 36
SEED = 40

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def table_path(tmp_path):
    """Return the path of a fresh 30-slot table, created and closed."""
    path = str(tmp_path / "table")
    Limiter("1/minute", path=path, slots=SLOTS).close()
    return path


def patch(path, offset, fmt, value):
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(struct.pack("=" + fmt, value))


def run_python(code, timeout=30):
    """Run code in a fresh interpreter with the repository importable."""
    env = dict(os.environ, PYTHONPATH=ROOT_DIR)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def open_table(path):
    return Limiter("1/minute", path=path, slots=SLOTS)


def test_new_file_mode(table_path):
    assert stat.S_IMODE(os.stat(table_path).st_mode) == 0o600


def test_new_file_mode_ignores_umask(tmp_path):
    path = str(tmp_path / "table")
    result = run_python(
        f"""
        import os
        os.umask(0)
        from fastlimit import Limiter
        Limiter("1/minute", path={path!r}, slots=30)
        print(oct(os.stat({path!r}).st_mode & 0o777))
        """
    )
    assert result.stdout.strip() == "0o600"


def test_new_file_size(table_path):
    assert os.path.getsize(table_path) == FILE_SIZE


def test_new_file_header(table_path):
    with open(table_path, "rb") as file:
        raw = file.read(SEED)
    assert raw[:8] == b"FASTLTB1"
    assert struct.unpack_from("=I", raw, VERSION) == (FORMAT_VERSION,)
    assert struct.unpack_from("=I", raw, HEADER_SIZE_FIELD) == (HEADER_SIZE,)
    assert struct.unpack_from("=Q", raw, FILE_SIZE_FIELD) == (FILE_SIZE,)
    assert struct.unpack_from("=Q", raw, LINE_COUNT) == (LINES,)
    assert struct.unpack_from("=I", raw, SLOTS_PER_LINE) == (3,)
    assert struct.unpack_from("=I", raw, LINE_SIZE_FIELD) == (LINE_SIZE,)


def test_new_file_no_leftovers(table_path, tmp_path):
    assert os.listdir(tmp_path) == ["table"]


def test_reopen_same_seed(table_path):
    first = open_table(table_path)
    second = open_table(table_path)
    assert first.table.seed() == second.table.seed()


def test_new_tables_differ_in_seed(tmp_path):
    first = open_table(str(tmp_path / "one"))
    second = open_table(str(tmp_path / "two"))
    assert first.table.seed() != second.table.seed()


def test_reopen_keeps_counts(table_path):
    first = open_table(table_path)
    first.hit("a", now=BASE)
    first.close()
    assert open_table(table_path).hit("a", now=BASE).allowed is False


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (MAGIC, "Q", 0, "bad magic"),
        (MAGIC, "Q", 0x3142544C54534147, "bad magic"),
        (VERSION, "I", FORMAT_VERSION + 1, f"format version {FORMAT_VERSION + 1}"),
        (VERSION, "I", 0, "format version 0"),
        (HEADER_SIZE_FIELD, "I", 4096, "inconsistent header"),
        (FILE_SIZE_FIELD, "Q", FILE_SIZE + 32, "inconsistent header"),
        (LINE_COUNT, "Q", LINES + 1, "inconsistent header"),
        (LINE_COUNT, "Q", 0, "inconsistent header"),
        (LINE_COUNT, "Q", (1 << 59) + LINES, "inconsistent header"),
        (SLOTS_PER_LINE, "I", 4, "inconsistent header"),
        (LINE_SIZE_FIELD, "I", 64, "inconsistent header"),
    ],
)
def test_bad_header_rejected(table_path, offset, fmt, value, message):
    patch(table_path, offset, fmt, value)
    with pytest.raises(TableError, match=message) as caught:
        open_table(table_path)
    assert table_path in str(caught.value)


def test_bad_header_stats_rejected(table_path):
    patch(table_path, MAGIC, "Q", 0)
    with pytest.raises(TableError, match="bad magic"):
        table_stats(table_path)


def test_bad_header_file_kept(table_path):
    patch(table_path, MAGIC, "Q", 0)
    with pytest.raises(TableError):
        open_table(table_path)
    assert os.path.getsize(table_path) == FILE_SIZE


@pytest.mark.parametrize(
    "size", [0, 1, 100, HEADER_SIZE - 1, HEADER_SIZE, FILE_SIZE - 1, FILE_SIZE + 32]
)
def test_wrong_size_rejected(table_path, size):
    os.truncate(table_path, size)
    with pytest.raises(TableError, match="truncated") as caught:
        open_table(table_path)
    assert table_path in str(caught.value)


@pytest.mark.parametrize("size", [0, 100, HEADER_SIZE + 16, FILE_SIZE - 1])
def test_truncated_no_crash(table_path, size):
    os.truncate(table_path, size)
    result = run_python(
        f"""
        from fastlimit import Limiter, TableError, table_stats
        for attempt in (lambda: Limiter("1/minute", path={table_path!r}),
                        lambda: table_stats({table_path!r})):
            try:
                attempt()
            except TableError:
                print("TableError")
        """
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["TableError", "TableError"]


def test_random_bytes_rejected(tmp_path):
    path = str(tmp_path / "noise")
    with open(path, "wb") as file:
        file.write(os.urandom(FILE_SIZE))
    os.chmod(path, 0o600)
    with pytest.raises(TableError, match="bad magic"):
        open_table(path)


def test_garbage_lines_no_crash(table_path):
    # Every line filled with random words: hits must finish, not crash.
    with open(table_path, "r+b") as file:
        file.seek(HEADER_SIZE)
        file.write(os.urandom(LINES * LINE_SIZE))
    result = run_python(
        f"""
        from fastlimit import Limiter
        limiter = Limiter("3/minute; 100/hour", path={table_path!r})
        for i in range(20000):
            limiter.hit(str(i % 500), now={BASE} + i // 1000)
        print("done")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["done"]


def test_symlink_rejected(table_path, tmp_path):
    link = str(tmp_path / "link")
    os.symlink(table_path, link)
    with pytest.raises(TableError, match="symbolic link") as caught:
        open_table(link)
    assert link in str(caught.value)


def test_symlink_stats_rejected(table_path, tmp_path):
    link = str(tmp_path / "link")
    os.symlink(table_path, link)
    with pytest.raises(TableError, match="symbolic link"):
        table_stats(link)


def test_dangling_symlink_rejected(tmp_path):
    target = str(tmp_path / "target")
    link = str(tmp_path / "link")
    os.symlink(target, link)
    with pytest.raises(TableError, match="symbolic link"):
        open_table(link)
    assert not os.path.lexists(target)


def test_directory_rejected(tmp_path):
    path = str(tmp_path / "directory")
    os.mkdir(path)
    with pytest.raises(TableError) as caught:
        open_table(path)
    assert path in str(caught.value)


def test_missing_directory_rejected(tmp_path):
    path = str(tmp_path / "absent" / "table")
    with pytest.raises(TableError, match="cannot be created") as caught:
        open_table(path)
    assert path in str(caught.value)


def test_missing_directory_nothing_created(tmp_path):
    with pytest.raises(TableError):
        open_table(str(tmp_path / "absent" / "table"))
    assert not os.path.exists(tmp_path / "absent")


def test_fifo_rejected(tmp_path):
    # Opening a FIFO read-only blocks until a writer opens it, so the check
    # runs in a subprocess with a timeout.
    path = str(tmp_path / "fifo")
    os.mkfifo(path, 0o600)
    code = f"""
        from fastlimit import Limiter, TableError, table_stats
        try:
            Limiter("1/minute", path={path!r})
        except TableError as exc:
            print("limiter", "regular file" in str(exc))
        try:
            table_stats({path!r})
        except TableError as exc:
            print("stats", "regular file" in str(exc))
        """
    try:
        result = run_python(code, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"opening the FIFO {path} did not return within 5 s")
    assert result.stdout.split() == ["limiter", "True", "stats", "True"]


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602, 0o660, 0o622])
def test_writable_by_others_rejected(table_path, mode):
    os.chmod(table_path, mode)
    with pytest.raises(TableError, match="writable by other users") as caught:
        open_table(table_path)
    assert table_path in str(caught.value)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_readable_by_others_accepted(table_path, mode):
    os.chmod(table_path, mode)
    assert open_table(table_path).hit("a", now=BASE).allowed is True


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_other_owner_rejected(table_path):
    os.chown(table_path, 65534, -1)
    with pytest.raises(TableError, match="belongs to uid 65534") as caught:
        open_table(table_path)
    assert table_path in str(caught.value)


def test_table_error_is_os_error(table_path):
    patch(table_path, MAGIC, "Q", 0)
    with pytest.raises(OSError) as caught:
        open_table(table_path)
    assert isinstance(caught.value, TableError)
    assert caught.value.filename == table_path
    assert caught.value.errno is not None


def test_stats_missing_creates_nothing(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(TableError):
        table_stats(path)
    assert not path.exists()


def test_text_file_rejected(tmp_path):
    # A text file where the table should be is reported, not overwritten.
    path = tmp_path / "notes.txt"
    path.write_text("not a table\n")
    os.chmod(path, 0o600)
    with pytest.raises(TableError, match="truncated or not a table"):
        open_table(str(path))
    assert path.read_text() == "not a table\n"


def _create_behind_barrier(path, barrier, results):
    barrier.wait(timeout=30)
    try:
        limiter = Limiter("1/minute", path=path, slots=3000)
        results.put(("seed", limiter.table.seed(), limiter.stats()["slots"]))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc), None))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_creation_one_seed(tmp_path, method):
    context = multiprocessing.get_context(method)
    processes_per_round = 6
    rounds = 5 if method == "fork" else 1
    for round_index in range(rounds):
        path = str(tmp_path / f"table{round_index}")
        barrier = context.Barrier(processes_per_round)
        results = context.Queue()
        workers = [
            context.Process(target=_create_behind_barrier, args=(path, barrier, results))
            for _ in range(processes_per_round)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)

        errors = [detail for kind, detail, _ in outcomes if kind == "error"]
        seeds = {detail for kind, detail, _ in outcomes if kind == "seed"}
        assert errors == []
        assert len(seeds) == 1
        assert {slots for _, _, slots in outcomes} == {3000}
        assert open_table(path).table.seed() in seeds
        assert os.listdir(tmp_path).count(f"table{round_index}") == 1
    assert all(not name.endswith(".tmp") for name in os.listdir(tmp_path))
