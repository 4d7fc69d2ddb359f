"""`osmanthus batch score`: ids CSV in, Parquet out, and a resume after an interruption.

The interruption is a real one for the job: Ctrl-C (KeyboardInterrupt) arrives while rows are
streaming in, or `kill -9` hits the command's process after its first timed checkpoint. The
resumed run must produce exactly the rows of an uninterrupted run, in input order, with no
duplicate and no missing line; after the kill, none of the command's processes may remain.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from osmanthus.cli import main
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.crypto import PARALLEL_MIN_PER_WORKER
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.ids import make_resident_id
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.demo.launcher import osmanthus_command
from sdk import Client, load_or_create_keys
from sdk.batchjob import BatchJob
from sdk.results import BatchScore
from tests.integration.conftest import Federation, restricted_catalogue_toml
from tests.integration.test_scores_match_plaintext import subjects
from tests.processes import (
    HAVE_PROC,
    ProcessId,
    command_line,
    descendants,
    kill_running,
    running,
)
from tests.waiting import wait_until

SYNC = "sync-1"
PURPOSE = "credit_rescoring"
CHUNK = 23


@pytest.fixture(scope="module")
def job_files(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("batch-cli")
    keys = load_or_create_keys(work / "sync.key")
    token = federation.token(SYNC, role=Role.SYNC_JOB, purposes=[PURPOSE], keys=keys)
    (work / "token").write_text(token + "\n")
    ids = work / "ids.csv"
    with ids.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject_id", "note"])
        for subject in subjects(federation, "person")[:150]:
            writer.writerow([subject, "x"])
        writer.writerow(["not-an-id", "refused in place"])
    catalogue = work / "catalogue.toml"
    catalogue.write_text(
        restricted_catalogue_toml([d.id for d in federation.catalogue.departments])
    )
    return {
        "work": work,
        "keys": work / "sync.key",
        "token": work / "token",
        "ids": ids,
        "catalogue": catalogue,
    }


def test_the_restricted_catalogue_file_is_the_federations(
    federation: Federation, job_files: dict[str, Path]
) -> None:
    assert load_catalogue(job_files["catalogue"]) == federation.catalogue


def _argv(federation: Federation, files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "batch", "score",
        "--in", str(files["ids"]),
        "--out", str(out),
        "--coordinator", federation.target,
        "--requester", SYNC,
        "--certs-dir", str(federation.certs),
        "--token-file", str(files["token"]),
        "--keys", str(files["keys"]),
        "--chunk-size", str(CHUNK),
        "--catalogue", str(files["catalogue"]),
        "--quiet",
        *extra,
    ]  # fmt: skip


def _rows(path: Path) -> list[tuple[object, ...]]:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT line, subject_id, score, grade, refused FROM read_parquet(?) ORDER BY line",
            [str(path)],
        ).fetchall()


def test_batch_score_writes_one_row_per_input_line(
    federation: Federation, job_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = job_files["work"] / "whole.parquet"
    assert main(_argv(federation, job_files, out)) == 0
    assert "151 rows, 150 scored, 1 refused" in capsys.readouterr().out
    rows = _rows(out)
    assert [r[0] for r in rows] == list(range(1, 152))
    assert rows[-1][1] == "not-an-id" and rows[-1][2] is None and rows[-1][4]
    assert all(r[2] is not None and r[4] is None for r in rows[:-1])
    assert not out.with_name(out.name + ".parts").exists()


def test_an_interrupted_job_resumes_without_duplicates_or_gaps(
    federation: Federation, job_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    whole = job_files["work"] / "reference.parquet"
    assert main(_argv(federation, job_files, whole)) == 0
    out = job_files["work"] / "resumed.parquet"
    keys = load_or_create_keys(job_files["keys"])
    token = job_files["token"].read_text().strip()
    with Client(
        federation.target,
        tls=federation.tls(SYNC),
        token=token,
        keys=keys,
        catalogue=federation.catalogue,
    ) as client:

        def interrupted(ids: Iterator[str]) -> Iterator[BatchScore]:
            for n, row in enumerate(client.batch_scores(ids, purpose=PURPOSE, chunk_size=CHUNK)):
                if n == 3 * CHUNK + 5:  # mid-chunk, after three whole chunks
                    raise KeyboardInterrupt
                yield row

        job = BatchJob(
            source=job_files["ids"],
            output=out,
            model=federation.catalogue.model(SubjectKind.PERSON),
            shape=Shape.TOTAL,
            purpose=PURPOSE,
            chunk_size=CHUNK,
            rows_per_part=CHUNK,
        )
        with pytest.raises(KeyboardInterrupt):
            job.run(interrupted)
    parts = out.with_name(out.name + ".parts")
    checkpoint = json.loads((parts / "checkpoint.json").read_text())
    # the three whole chunks are saved; the five rows of the fourth are not
    assert checkpoint["rows"] == 3 * CHUNK
    assert not out.exists()

    # the same command again picks up from the checkpoint
    capsys.readouterr()
    assert main(_argv(federation, job_files, out)) == 0
    assert f"(resumed after {3 * CHUNK})" in capsys.readouterr().out
    assert _rows(out) == _rows(whole)
    assert not parts.exists()


def test_a_checkpoint_of_another_job_is_not_resumed(
    federation: Federation, job_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = job_files["work"] / "other.parquet"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / "checkpoint.json").write_text(
        json.dumps({"version": 1, "input_sha256": "0" * 64, "rows": 5, "parts": 1})
    )
    assert main(_argv(federation, job_files, out)) == 3
    err = capsys.readouterr().err
    assert "belongs to another job" in err and "input_sha256" in err
    assert not out.exists()


def test_an_input_without_a_subject_id_column_is_refused(
    federation: Federation, job_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = job_files["work"] / "bad.csv"
    bad.write_text("resident\n110105194912310021\n")
    argv = _argv(federation, job_files, job_files["work"] / "bad.parquet")
    argv[argv.index("--in") + 1] = str(bad)
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "'subject_id'" in err and "line 1" in err


def test_a_bad_line_anywhere_is_named_before_anything_is_sent(
    federation: Federation, job_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    persons = subjects(federation, "person")
    broken = job_files["work"] / "broken.csv"
    broken.write_text(
        "subject_id,note\n" + "".join(f"{p},x\n" for p in persons[:50]) + "\n"
        + "".join(f"{p},x\n" for p in persons[50:55])
    )  # fmt: skip
    out = job_files["work"] / "broken.parquet"
    argv = _argv(federation, job_files, out)
    argv[argv.index("--in") + 1] = str(broken)
    assert main(argv) == 3  # invalid input
    err = capsys.readouterr().err
    assert "line 52" in err and "subject_id" in err
    # the whole input is read once before the batch starts: nothing is sent, nothing written
    assert not out.with_name(out.name + ".parts").exists()
    assert not out.exists()


#: the killed job's chunks: many more than the few before its first timed checkpoint
KILLED_JOB_CHUNKS = 12
DECRYPT_WORKERS = 2
#: small: the first save comes at the end of the first chunk this long after the start, long
#: before the last chunk; the 50,000 rows of a part by count are never reached
CHECKPOINT_SECONDS = "0.2"


def _many_ids(federation: Federation, path: Path, count: int) -> list[str]:
    """The federation's persons, then valid resident ids no department has records on."""
    synthetic = (
        make_resident_id(
            region="320505",
            birth=datetime.date(1980, 1, 1) + datetime.timedelta(days=i // 1000),
            sequence=i % 1000,
        )
        for i in range(count)
    )
    ids = [*subjects(federation, "person"), *synthetic][:count]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["subject_id"])
        writer.writerows([i] for i in ids)
    return ids


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PROC, reason="reads the process tree from /proc")
def test_a_job_killed_after_a_timed_checkpoint_resumes_there_and_leaves_no_key_holder(
    federation: Federation, job_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # chunks of as many ciphertexts as the two decryption processes take in parallel
    keys = load_or_create_keys(job_files["keys"])
    layout = SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.TOTAL)
    chunk = PARALLEL_MIN_PER_WORKER * DECRYPT_WORKERS * layout.capacity(keys.public.bits)
    source = job_files["work"] / "many.csv"
    ids = _many_ids(federation, source, KILLED_JOB_CHUNKS * chunk)
    out = job_files["work"] / "killed.parquet"
    checkpoint = out.with_name(out.name + ".parts") / "checkpoint.json"
    argv = _argv(federation, {**job_files, "ids": source}, out)
    argv[argv.index("--chunk-size") + 1] = str(chunk)
    argv += ["--decrypt-workers", str(DECRYPT_WORKERS), "--checkpoint-seconds", CHECKPOINT_SECONDS]
    job = subprocess.Popen(
        osmanthus_command(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    family: set[ProcessId] = set()
    try:
        wait_until(lambda: checkpoint.exists() or job.poll() is not None, what="a checkpoint")
        # the decryption processes started with the first chunk: they run now, with the key
        family = descendants(job.pid)
        lines = [command_line(p) for p in family]
        os.kill(job.pid, signal.SIGKILL)
        _, err = job.communicate()
        assert job.returncode == -signal.SIGKILL, f"the job ended before its kill: {err}"
        # the fork server and the workers it forked (a pool starts its second worker only when
        # work arrives while the first is busy: one or two), and the resource tracker
        assert 2 <= sum("multiprocessing.forkserver" in c for c in lines) <= 1 + DECRYPT_WORKERS
        assert sum("multiprocessing.resource_tracker" in c for c in lines) == 1
        wait_until(
            lambda: not any(running(p) for p in family),
            what=lambda: (
                "the killed job's processes still run: "
                + "; ".join(f"{p.pid} {command_line(p)[:80]}" for p in family if running(p))
            ),
        )
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
        kill_running(family)
    saved = json.loads(checkpoint.read_text())["rows"]
    # a timed save: far fewer rows than a part by count holds, and not the whole input
    assert 0 < saved < len(ids)

    capsys.readouterr()
    assert main(argv) == 0
    assert f"{len(ids)} rows (resumed after {saved})" in capsys.readouterr().out
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT line, subject_id FROM read_parquet(?) ORDER BY line", [str(out)]
        ).fetchall()
    assert rows == [(n + 1, subject) for n, subject in enumerate(ids)]
