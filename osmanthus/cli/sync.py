"""`osmanthus sync`: the city's provincial sync job (list changes, grades, statistics upward)."""

from __future__ import annotations

import argparse
from pathlib import Path

from osmanthus.cli.env import read_environment
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, command_group, duration


def register(subcommands: Subcommands) -> None:
    """Add `sync run|status|rebase|quarantine`."""
    sync = command_group(
        subcommands,
        "sync",
        "the provincial sync job: report list changes, grades and statistics upward",
        "Run and inspect the city's provincial sync job (docs/province.md). Everything it needs "
        "is in one config file, sync.toml: the sender id, the Ed25519 signing key, the state "
        "directory, the coordinator (as a sync_job requester: certificate, token, Paillier "
        "keys), the province's receiver, and what to report on which schedule.",
    )
    p = command(
        sync,
        "run",
        "gather what changed, sign it into batches and deliver them",
        "One run: deliver batches an earlier run left undelivered, then gather each kind of "
        "data that is due (list entries published and withdrawn since the job's cursor, and "
        "expiries; enterprise grades that changed; statistics through STATS), put them into "
        "signed batches, and deliver them in order, retrying an unreachable receiver with "
        "exponential backoff and jitter for [delivery] retry_for. Each batch is checkpointed "
        "when the receiver acknowledges it; a run stopped at any point (even kill -9) resumes "
        "with nothing lost or sent twice. Prints progress on stderr and a summary line "
        "(batches, records, duplicates, retries, duration). With --every it runs on that "
        "schedule until SIGTERM and then exits 0; a run that fails is reported (stderr, "
        "metrics, 'sync status') and the next one runs on schedule. Exit codes of a single "
        "run: 0 all delivered (a department that did not "
        "answer is reported as partial, not as a failure), 3 configuration or input error, "
        "4 refused by the receiver or the coordinator (see 'sync status'), 5 the receiver or "
        "coordinator unreachable for longer than retry_for (the batches wait in the outbox), "
        "7 a waiting batch failed verification against the job's keys and is quarantined "
        "(see 'sync quarantine show'), 130 stopped.\n\n"
        "example: osmanthus sync run --config /etc/osmanthus/sync.toml --every 1h "
        "--metrics-listen 127.0.0.1:9464",
        _cmd_sync_run,
        extra="sync",
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one run, then exit (the default)")
    when.add_argument(
        "--every", type=duration, metavar="DURATION", help="run on this schedule, e.g. 1h"
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while running",
    )
    p.add_argument(
        "--metrics-file",
        type=Path,
        help="write Prometheus metrics here after each run (node-exporter textfile collector)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary line")
    read_environment(p)
    p = command(
        sync,
        "status",
        "show the job's watermarks, last success, backlog and last error",
        "Read the job's state (it may be running): for each stream (list_changes, grades, "
        "statistics) the last batch the receiver acknowledged and its watermark, when the last "
        "delivery succeeded, the batches waiting in the outbox, the last run, the last error, "
        "each department's list feed cursor and when each kind of data is next due; first of "
        "all, any batch in quarantine (it failed verification against the job's keys and "
        "holds its stream). Exit 7 while a batch is quarantined, 0 otherwise.",
        _cmd_sync_status,
        extra="sync",
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command(
        sync,
        "rebase",
        "renumber waiting batches to follow the receiver's stream (after a gap or overlap)",
        "When the receiver refuses the job's next batch as a gap or an overlap, the job's state "
        "and the receiver disagree on where the stream stands (a state restored from an old "
        "backup, a receiver reset). This asks the receiver for its last batch of --kind and "
        "renumbers every waiting batch of that kind to follow it: records and their order are "
        "kept, each batch gets the next sequence and is signed anew (its id changes). If the "
        "receiver may already hold some of these records (an old backup), ask the province "
        "first: they would be stored again. Every waiting batch is first verified against the "
        "key that signed it: if one fails, it is quarantined, nothing is renumbered or signed "
        "anew, and the command exits 7 (see 'sync quarantine'). Needs the job to be stopped "
        "(it takes the state's lock).\n\n"
        "example: osmanthus sync rebase --config /etc/osmanthus/sync.toml --kind grades",
        _cmd_sync_rebase,
        extra="sync",
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    p.add_argument(
        "--kind", required=True, choices=["list_changes", "grades", "statistics"], help="stream"
    )
    _register_quarantine(sync)


def _register_quarantine(sync: Subcommands) -> None:
    quarantine = command_group(
        sync,
        "quarantine",
        "show, drop or rebuild the batches that failed verification",
        "Before the job signs a waiting batch anew (after a key change, 'sync rebase') or sends "
        "it, it verifies the stored signature against the key that made it (one of the job's "
        "own keys, which the state records). A batch that fails was changed after it was "
        "signed: it is quarantined, never signed anew nor sent, and its stream waits behind "
        "it. These commands get the stream going again (docs/province.md).",
    )
    p = command(
        quarantine,
        "show",
        "list the quarantined batches, and check every waiting batch now",
        "List the quarantined batches (kind, sequence, id, key, the payload's SHA-256, why, "
        "since when) and check every waiting batch against the job's keys now (read only: the "
        "job may be running). Exit 7 if a batch is quarantined or fails the check, 0 "
        "otherwise.\n\n"
        "example: osmanthus sync quarantine show --config /etc/osmanthus/sync.toml",
        _cmd_quarantine_show,
        extra="sync",
    )
    p.add_argument("--config", type=Path, required=True, help="sync.toml")
    p.add_argument("--json", action="store_true", help="print JSON")
    for name, rebuild, summary, detail in (
        (
            "drop",
            False,
            "take a stream's quarantined batches out; the rest follow the province's last batch",
            "Verify every waiting batch of --kind, then take the quarantined ones out of the "
            "outbox and renumber the batches behind them (verified, signed anew) to follow the "
            "last batch the province acknowledged. What the dropped batches held is not "
            "reported again (use rebuild for that). A quarantined batch the province already "
            "holds as it was signed is acknowledged instead: nothing is lost.",
        ),
        (
            "rebuild",
            True,
            "drop, then gather the stream's data again from the nodes at the next run",
            "As drop, and the next run reads the stream's source again, so the records come "
            "from the nodes, never from the changed payload: list_changes reads every "
            "department's feed from its first event (the province hears again of entries it "
            "holds), grades sends every enterprise's grade, statistics asks every statistic "
            "again (spending its ε again).",
        ),
    ):
        p = command(
            quarantine,
            name,
            summary,
            detail + " Needs the job to be stopped (it takes the state's lock) and the "
            "province's receiver to answer.\n\n"
            f"example: osmanthus sync quarantine {name} --config /etc/osmanthus/sync.toml "
            "--kind grades",
            _cmd_quarantine_rebuild if rebuild else _cmd_quarantine_drop,
            extra="sync",
        )
        p.add_argument("--config", type=Path, required=True, help="sync.toml")
        p.add_argument(
            "--kind",
            required=True,
            choices=["list_changes", "grades", "statistics"],
            help="stream",
        )


def _cmd_sync_run(args: argparse.Namespace) -> int:
    from syncjob.config import load_config
    from syncjob.runner import run

    return run(
        load_config(args.config),
        every=args.every,
        metrics_listen=args.metrics_listen,
        metrics_file=args.metrics_file,
        quiet=args.quiet,
    )


def _cmd_sync_rebase(args: argparse.Namespace) -> int:
    from osmanthus.core.syncbatch import BatchKind
    from syncjob.config import load_config
    from syncjob.runner import rebase

    print(rebase(load_config(args.config), BatchKind(args.kind)))
    return ExitCode.SUCCESS


def _cmd_sync_status(args: argparse.Namespace) -> int:
    import json

    from syncjob.config import load_config
    from syncjob.runner import print_status, status

    report = status(load_config(args.config))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_status(report)
    return ExitCode.QUARANTINED if report["quarantine"] else ExitCode.SUCCESS


def _cmd_quarantine_show(args: argparse.Namespace) -> int:
    import json

    from syncjob.config import load_config
    from syncjob.runner import print_quarantine, quarantine_report

    report = quarantine_report(load_config(args.config))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_quarantine(report)
    bad = report["quarantine"] or report["failing_now"]
    return ExitCode.QUARANTINED if bad else ExitCode.SUCCESS


def _settle(args: argparse.Namespace, *, rebuild: bool) -> int:
    from osmanthus.core.syncbatch import BatchKind
    from syncjob.config import load_config
    from syncjob.runner import quarantine_settle

    print(quarantine_settle(load_config(args.config), BatchKind(args.kind), rebuild=rebuild))
    return ExitCode.SUCCESS


def _cmd_quarantine_drop(args: argparse.Namespace) -> int:
    return _settle(args, rebuild=False)


def _cmd_quarantine_rebuild(args: argparse.Namespace) -> int:
    return _settle(args, rebuild=True)
