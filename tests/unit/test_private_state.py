"""Private state: directories made or repaired to 0700 and their files to 0600, whatever the umask.

The services' own state directories are tested started for real in
tests/integration/test_state_modes.py; here the helper itself, the batch job's checkpoint, parts
and output, and the files that must stay readable by others (the sync job's metrics).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import narrow_umask, private_directory
from osmanthus.core.types import Shape, SubjectKind
from sdk.batchjob import BatchJob
from sdk.results import BatchScore
from syncjob.metrics import SyncMetrics

MODEL = load_catalogue().model(SubjectKind.PERSON)
IDS = [f"id{i:03d}" for i in range(30)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The umask most systems give (0o022), so that only the code under test protects."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_new_directory_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    made = tmp_path / "a" / "state"
    assert private_directory(made, what="test state") == ()
    assert _mode(made) == 0o700


def test_an_open_directory_and_everything_in_it_is_repaired_with_a_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    (state / "sub").mkdir(parents=True, mode=0o755)
    os.chmod(state, 0o755)
    (state / "consents.duckdb.wal").write_bytes(b"110101199003077777")
    (state / "sub" / "ledger.sqlite").write_bytes(b"")
    os.chmod(state / "sub" / "ledger.sqlite", 0o640)
    (state / "private").write_bytes(b"")
    os.chmod(state / "private", 0o600)
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
        repaired = private_directory(state, what="the test's state")
    assert set(repaired) == {
        state,
        state / "sub",
        state / "consents.duckdb.wal",
        state / "sub" / "ledger.sqlite",
    }
    assert (_mode(state), _mode(state / "sub")) == (0o700, 0o700)
    assert _mode(state / "consents.duckdb.wal") == 0o600
    assert _mode(state / "sub" / "ledger.sqlite") == 0o600
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and all(r.levelno == logging.WARNING for r in caplog.records)
    assert any(
        line.startswith(f"{state} was open to other users (mode 755); made it owner-only (700)")
        for line in lines
    )
    assert any(
        line.startswith(f"{state / 'sub' / 'ledger.sqlite'} was open to other users (mode 640)")
        and "the test's state" in line
        for line in lines
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
        assert private_directory(state, what="the test's state") == ()
    assert caplog.text == ""


def test_links_inside_are_neither_followed_nor_changed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "shared.txt").write_text("for everyone\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "to-file").symlink_to(outside / "shared.txt")
    (state / "to-dir").symlink_to(outside)
    assert private_directory(state, what="test state") == ()
    assert (_mode(outside), _mode(outside / "shared.txt")) == (0o755, 0o644)


def test_a_state_directory_named_by_a_link_is_the_directory_it_names(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    (real / "store").write_bytes(b"")
    link = tmp_path / "state"
    link.symlink_to(real)
    private_directory(link, what="test state")
    assert (_mode(real), _mode(real / "store")) == (0o700, 0o600)


def test_a_directory_of_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, 65534, 65534)
    else:
        theirs = Path("/")  # root's, and this test is not root
    before = _mode(theirs)
    with pytest.raises(ConfigError) as refused:
        private_directory(theirs, what="the coordinator's state", field="state_dir")
    assert refused.value.field == "state_dir"
    assert f"{theirs} belongs to " in refused.value.message
    assert "the coordinator's state needs a directory of its own user's" in refused.value.message
    assert _mode(theirs) == before


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    with pytest.raises(ConfigError, match="is not a directory") as refused:
        private_directory(tmp_path / "state", what="test state", field="state_dir")
    assert refused.value.field == "state_dir"


@pytest.mark.parametrize(
    ("before", "after"), [(0o022, 0o077), (0o027, 0o077), (0o002, 0o077), (0o177, 0o177)]
)
def test_the_umask_is_narrowed_never_widened(before: int, after: int) -> None:
    os.umask(before)
    assert narrow_umask() == before
    assert os.umask(0o022) == after


# --- the batch job's checkpoint, parts and output --------------------------------------------


class Interrupt(BaseException):
    """Stands for Ctrl-C."""


def _score(subject: str) -> BatchScore:
    number = int(subject[2:])
    return BatchScore(
        subject_id=subject, score=number, grade=None, deductions=0, bonuses={}, refused=None,
        query_id="q_test",
    )  # fmt: skip


def _job(tmp_path: Path) -> BatchJob:
    source = tmp_path / "ids.csv"
    if not source.exists():
        source.write_text("subject_id\n" + "".join(f"{i}\n" for i in IDS))
    return BatchJob(
        source=source, output=tmp_path / "out.parquet", model=MODEL, shape=Shape.TOTAL,
        purpose="credit_rescoring", chunk_size=5, rows_per_part=10,
    )  # fmt: skip


def test_the_batch_jobs_checkpoint_parts_and_output_are_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def interrupted(ids: Iterator[str]) -> Iterator[BatchScore]:
        for n, subject in enumerate(ids):
            if n == 25:
                raise Interrupt
            yield _score(subject)

    with pytest.raises(Interrupt):
        _job(tmp_path).run(interrupted)
    parts = tmp_path / "out.parquet.parts"
    assert _mode(parts) == 0o700
    saved = sorted(p.name for p in parts.iterdir())
    assert saved[0] == "checkpoint.json" and saved[1].startswith("part-"), saved
    assert {_mode(parts / name) for name in saved} == {0o600}
    # as an earlier version left them: repaired when the job resumes, each with a line
    os.chmod(parts, 0o755)
    os.chmod(parts / "checkpoint.json", 0o644)
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
        report = _job(tmp_path).run(lambda ids: (_score(s) for s in ids))
    assert report.resumed_from > 0 and report.rows == len(IDS)
    assert f"{parts} was open to other users (mode 755)" in caplog.text
    assert f"{parts / 'checkpoint.json'} was open to other users (mode 644)" in caplog.text
    # every subject's score: the output is its user's only, like a report
    assert _mode(tmp_path / "out.parquet") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.csv", "out.parquet"]


# --- what others must read stays readable --------------------------------------------------------


def test_the_sync_jobs_metrics_file_is_readable_by_the_node_exporter(tmp_path: Path) -> None:
    os.umask(0o077)  # as the sync job runs
    out = tmp_path / "sync.prom"
    SyncMetrics().write_textfile(out)
    assert _mode(out) == 0o644
    assert "osmanthus_sync_" in out.read_text()
