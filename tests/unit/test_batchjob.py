"""The batch job's checkpoints: interrupted anywhere, resumed, the output is every line once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import ConfigError, InvalidArgument, Unavailable
from osmanthus.core.types import Shape, SubjectKind
from sdk.batchjob import BatchJob
from sdk.results import BatchScore

IDS = [f"id{i:03d}" for i in range(40)]
MODEL = load_catalogue().model(SubjectKind.PERSON)


class Interrupt(BaseException):
    """Stands for Ctrl-C at a chosen moment."""


def _score(subject: str) -> BatchScore:
    number = int(subject[2:])
    return BatchScore(
        subject_id=subject,
        score=number,
        grade=None,
        deductions=number % 7,
        bonuses={c.name: number % 3 for c in MODEL.categories},
        refused="invalid" if number % 13 == 0 else None,
        query_id="q_test",
    )


def scorer(ids: Iterator[str]) -> Iterator[BatchScore]:
    for subject in ids:
        yield _score(subject)


def _job(tmp_path: Path, shape: Shape = Shape.TOTAL) -> BatchJob:
    source = tmp_path / "ids.csv"
    if not source.exists():
        source.write_text("subject_id,other\n" + "".join(f"{i},x\n" for i in IDS))
    return BatchJob(
        source=source,
        output=tmp_path / "out.parquet",
        model=MODEL,
        shape=shape,
        purpose="credit_rescoring",
        chunk_size=5,
        rows_per_part=10,
    )


def _output(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT line, subject_id, score, refused FROM read_parquet(?) ORDER BY line",
            [str(path)],
        ).fetchall()


def _expected() -> list[tuple[object, ...]]:
    return [(i + 1, s, _score(s).score, _score(s).refused) for i, s in enumerate(IDS)]


def test_an_uninterrupted_job_writes_every_line_in_order(tmp_path: Path) -> None:
    report = _job(tmp_path).run(scorer)
    assert (report.rows, report.scored, report.refused) == (40, 36, 4)
    assert _output(tmp_path / "out.parquet") == _expected()
    assert not (tmp_path / "out.parquet.parts").exists()


@pytest.mark.parametrize("after", [0, 3, 5, 9, 10, 11, 23, 39])
def test_interrupted_while_rows_stream_in_then_resumed(tmp_path: Path, after: int) -> None:
    def interrupted(ids: Iterator[str]) -> Iterator[BatchScore]:
        for n, row in enumerate(scorer(ids)):
            if n == after:
                raise Interrupt
            yield row

    with pytest.raises(Interrupt):
        _job(tmp_path).run(interrupted)
    report = _job(tmp_path).run(scorer)
    # whole chunks received before the interruption were kept, and only those
    assert report.resumed_from == after // 5 * 5
    assert _output(tmp_path / "out.parquet") == _expected()


@pytest.mark.parametrize("call", [1, 2, 3])
def test_interrupted_while_a_part_is_being_saved_then_resumed(tmp_path: Path, call: int) -> None:
    calls: list[int] = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == call:
            raise Interrupt  # after the part and the checkpoint are written

    with pytest.raises(Interrupt):
        _job(tmp_path).run(scorer, progress=progress)
    _job(tmp_path).run(scorer)
    rows = _output(tmp_path / "out.parquet")
    assert rows == _expected()
    assert len({r[1] for r in rows}) == 40


def test_a_failed_batch_keeps_its_whole_chunks_and_says_how_to_resume(tmp_path: Path) -> None:
    def failing(ids: Iterator[str]) -> Iterator[BatchScore]:
        for n, row in enumerate(scorer(ids)):
            if n == 17:
                raise Unavailable("chunk 3: tax: unavailable")
            yield row

    with pytest.raises(Unavailable, match="15 of the input's rows are saved") as caught:
        _job(tmp_path).run(failing)
    assert "run the same command again" in caught.value.message
    assert _job(tmp_path).run(scorer).resumed_from == 15
    assert _output(tmp_path / "out.parquet") == _expected()


def test_a_breakdown_has_a_column_per_bonus_category(tmp_path: Path) -> None:
    _job(tmp_path, Shape.BREAKDOWN).run(scorer)
    with duckdb.connect() as con:
        names = [r[0] for r in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?)", [str(tmp_path / "out.parquet")]
        ).fetchall()]  # fmt: skip
    assert names == [
        "line", "subject_id", "score", "grade", "deductions",
        *(f"bonus_{c.name}" for c in MODEL.categories), "refused",
    ]  # fmt: skip


def test_a_changed_input_is_not_resumed(tmp_path: Path) -> None:
    def interrupted(ids: Iterator[str]) -> Iterator[BatchScore]:
        for n, row in enumerate(scorer(ids)):
            if n == 12:
                raise Interrupt
            yield row

    with pytest.raises(Interrupt):
        _job(tmp_path).run(interrupted)
    with (tmp_path / "ids.csv").open("a") as f:
        f.write("id999,x\n")
    with pytest.raises(ConfigError, match="belongs to another job") as caught:
        _job(tmp_path).run(scorer)
    assert caught.value.field == "input_sha256"


class Clock:
    """The job's clock, moved on by the scorer: one second per row scored."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _saved_rows(tmp_path: Path) -> int:
    """The rows a `kill -9` at this moment would leave saved (the checkpoint on disk)."""
    checkpoint = tmp_path / "out.parquet.parts" / "checkpoint.json"
    return int(json.loads(checkpoint.read_text())["rows"]) if checkpoint.exists() else 0


@pytest.mark.parametrize(
    ("checkpoint_s", "killed_at", "saved"),
    [
        (10.0, 23, 20),  # saved at 10 s (row 10, a chunk's end) and 20 s; not 25 yet
        (12.0, 23, 15),  # 12 s have passed mid-chunk: saved at that chunk's end, row 15
        (0.0, 23, 20),  # after every chunk
        (10.0, 9, 0),  # too early for any save
        (1e9, 39, 0),  # the control: by rows only (every 1,000 here), nothing before the end
    ],
)
def test_rows_are_saved_by_time_as_well_as_by_count(
    tmp_path: Path, checkpoint_s: float, killed_at: int, saved: int
) -> None:
    clock = Clock()
    seen: list[int] = []

    def killed(ids: Iterator[str]) -> Iterator[BatchScore]:
        for n, row in enumerate(scorer(ids)):
            if n == killed_at:
                seen.append(_saved_rows(tmp_path))  # what a kill -9 now would leave
                raise Interrupt
            clock.now += 1.0
            yield row

    job = _job(tmp_path)
    job = BatchJob(
        source=job.source,
        output=job.output,
        model=MODEL,
        shape=Shape.TOTAL,
        purpose="credit_rescoring",
        chunk_size=5,
        rows_per_part=1000,
        checkpoint_s=checkpoint_s,
        clock=clock,
    )
    with pytest.raises(Interrupt):
        job.run(killed)
    assert seen == [saved]
    # and the job resumes from there to the same output as an uninterrupted run
    assert _job(tmp_path).run(scorer).resumed_from >= saved
    assert _output(tmp_path / "out.parquet") == _expected()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), True, "30"])
def test_a_bad_checkpoint_interval_is_refused(tmp_path: Path, bad: object) -> None:
    job = _job(tmp_path)
    with pytest.raises(InvalidArgument, match="checkpoint seconds must be a finite number") as e:
        BatchJob(
            source=job.source,
            output=job.output,
            model=MODEL,
            shape=Shape.TOTAL,
            purpose="credit_rescoring",
            chunk_size=5,
            checkpoint_s=bad,  # type: ignore[arg-type]
        )
    assert e.value.field == "checkpoint_seconds"


def test_the_command_saves_by_time_by_default_as_the_job_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from osmanthus.cli.app import build_parser
    from osmanthus.cli.batch import DEFAULT_CHECKPOINT_SECONDS
    from sdk.batchjob import DEFAULT_CHECKPOINT_S

    assert DEFAULT_CHECKPOINT_SECONDS == DEFAULT_CHECKPOINT_S
    argv = ["batch", "score", "--in", "i.csv", "--out", "o.parquet", "--keys", "k"]
    argv += ["--coordinator", "c:1", "--requester", "sync-1"]
    assert build_parser().parse_args(argv).checkpoint_seconds == DEFAULT_CHECKPOINT_S
    assert (
        build_parser().parse_args([*argv, "--checkpoint-seconds", "0.5"]).checkpoint_seconds == 0.5
    )
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*argv, "--checkpoint-seconds", bad])
        assert exited.value.code == 2
        assert f"argument --checkpoint-seconds: '{bad}'" in capsys.readouterr().err
