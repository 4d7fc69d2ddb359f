"""`osmanthus batch`: score many subjects at once, resumably, into a Parquet file."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import (
    Subcommands,
    catalogue_of,
    catalogue_options,
    command,
    command_group,
    requester_client,
    requester_options,
    requester_token,
    tls_options,
)
from osmanthus.core.errors import ConfigError

#: sdk.batchjob.DEFAULT_CHECKPOINT_S, repeated so that `--help` loads no batch extra (DuckDB);
#: tests/unit/test_batchjob.py keeps the two equal
DEFAULT_CHECKPOINT_SECONDS = 30.0


def register(subcommands: Subcommands) -> None:
    """Add `batch score`."""
    batch = command_group(
        subcommands,
        "batch",
        "score many subjects at once",
        "Batch jobs for the platform's services.",
    )
    p = command(
        batch,
        "score",
        "score every subject id of a CSV file into a Parquet file",
        "Stream the ids of --in (a CSV file with a 'subject_id' column) to the coordinator in "
        "chunks; every department scores each chunk under your key, the coordinator adds the "
        "parts up blindly, and this command decrypts them on all cores and writes one row per "
        "input line to --out (Parquet: line, subject_id, score, grade, and for --shape "
        "breakdown deductions and bonus_<category>; 'refused' says why a subject was not "
        "scored).\n\n"
        "Work is saved every 50,000 rows or every --checkpoint-seconds, whichever comes first. "
        "If the job stops (Ctrl-C, kill -9, a department down), run the same command again: it "
        "resumes from the checkpoint kept next to --out, with no duplicate and no missing row. "
        "The decryption processes hold your private key and exit with this command, however it "
        "ends. The central policy decides who may batch and for what "
        "purpose (by default the platform's services and the sync job, for credit_rescoring).",
        _cmd_batch_score,
        parents=[
            catalogue_options(),
            requester_options(keys_help="your Paillier key file (created if absent)"),
            tls_options(role_hint="requester"),
        ],
        extra="batch",
    )
    p.add_argument("--in", dest="source", type=Path, required=True, help="CSV of subject ids")
    p.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    p.add_argument("--purpose", default="credit_rescoring", help="purpose named in the token")
    p.add_argument(
        "--kind", choices=["person", "enterprise"], default="person", help="the subjects' kind"
    )
    p.add_argument(
        "--shape",
        choices=["total", "breakdown"],
        default="total",
        help="total: the score only; breakdown: deductions and each bonus category too",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        help="subjects per chunk (default: --ciphertexts-per-chunk full ciphertexts)",
    )
    p.add_argument("--ciphertexts-per-chunk", type=int, default=24, help=argparse.SUPPRESS)
    p.add_argument("--decrypt-workers", type=int, help="decryption processes (default: every core)")
    p.add_argument(
        "--checkpoint-seconds",
        type=_seconds,
        default=DEFAULT_CHECKPOINT_SECONDS,
        metavar="SECONDS",
        help="save the rows received at least this often, at the end of a chunk (0: after every "
        "chunk); a killed job loses little more than this much work",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _seconds(text: str) -> float:
    """A number of seconds >= 0, such as 30 or 0.5 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds >= 0")
    return value


def _cmd_batch_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from osmanthus.core.types import Shape, SubjectKind
    from sdk.batchjob import BatchJob, count_ids

    token = requester_token(args)
    if not args.source.is_file():
        raise ConfigError(f"{args.source}: the input file does not exist", field="in")
    catalogue = catalogue_of(args)
    kind = SubjectKind(args.kind)
    shape = Shape(args.shape)
    with requester_client(args, token=token, catalogue=catalogue) as client:
        per = client.subjects_per_ciphertext(kind, shape)
        chunk_size = args.chunk_size or per * args.ciphertexts_per_chunk
        job = BatchJob(
            source=args.source,
            output=args.out,
            model=catalogue.model(kind),
            shape=shape,
            purpose=args.purpose,
            chunk_size=chunk_size,
            checkpoint_s=args.checkpoint_seconds,
        )
        total = count_ids(args.source)
        with tqdm(total=total, unit="subject", desc="scoring", disable=args.quiet or None) as bar:
            report = job.run(
                lambda ids: client.batch_scores(
                    ids,
                    purpose=args.purpose,
                    kind=kind,
                    shape=shape,
                    chunk_size=chunk_size,
                    decrypt_workers=args.decrypt_workers,
                ),
                progress=bar.update,
            )
    resumed = f" (resumed after {report.resumed_from})" if report.resumed_from else ""
    print(
        f"{report.output}: {report.rows} rows{resumed}, {report.scored} scored, "
        f"{report.refused} refused"
    )
    return ExitCode.SUCCESS
