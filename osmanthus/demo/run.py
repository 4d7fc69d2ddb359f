"""The local federation demo: seed, certify, start every node and the coordinator, query, report."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from certs import PeerRole, cert_paths, init_platform, issue_certificate
from certs.logkeys import create_log_key
from node.officer import ListOfficer
from osmanthus.core import signing
from osmanthus.core.audit import AuditEntry
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.denylist import write_deny_list
from osmanthus.core.errors import OsmanthusError
from osmanthus.core.files import private_directory, write_atomically
from osmanthus.core.ids import mask_subject
from osmanthus.core.lists import EntryId, NewEntry
from osmanthus.core.logkeys import ROSTER_FILE, WITNESS_KEY_FILE
from osmanthus.core.logserver import cosignatures_path
from osmanthus.core.peers import peer_dir
from osmanthus.core.rules import load_default_rules
from osmanthus.core.signing import load_private_key
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import DEFAULT_ISSUER, TokenIssuer, generate_issuer_keypair
from osmanthus.core.types import Role, Shape, SubjectId, SubjectKind
from osmanthus.demo.cases_scene import (
    CASE_OFFICERS,
    HOUSING,
    HOUSING_OFFICER,
    REPAIR_ENTRY,
    REPAIR_LIST,
    CasesContext,
    CasesScene,
    cases_scenes,
    desk_how_to,
    issue_case_officers,
    start_desk,
)
from osmanthus.demo.launcher import LocalFederation, Process, osmanthus_command, spawn
from osmanthus.demo.portal_scene import (
    KIOSK,
    ONLINE,
    Device,
    KioskScene,
    TryIt,
    demo_identities,
    how_to_try,
    issue_device,
    kiosk_scene,
    register_device_key,
    start_online,
    start_portal,
    wait_until_interrupted,
)
from osmanthus.demo.seed import DEMO_CITIZEN, DEMO_ENTERPRISE, SCENE_SUBJECTS, seed
from portal.devidp import DevIdentityProvider
from sdk import (
    Client,
    ConsentRecord,
    EnterpriseScore,
    PersonScore,
    RestrictionResult,
    load_or_create_keys,
    verify_consent_receipt,
)

_MARKER = ".osmanthus-demo"
AGENCY = "agency-1"
REGISTRAR = "registrar"
RESCORING = "rescoring"
BUREAU = "stats-bureau"
LIBRARY = "city-library"
BANK = "city-bank"
SYNC = "sync-1"
#: the city's sender id at the provincial platform
SENDER = "suzhou"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(t0: float, text: str) -> None:
    _say(f"[{time.monotonic() - t0:6.1f}s] {text}")


def _records_by_subject(
    data_dir: Path, catalogue: Catalogue, kind: SubjectKind
) -> dict[str, tuple[set[str], set[str]]]:
    """Per subject: departments with any record, and departments with a bonus record.

    Read straight from the seeded files before the nodes start: the demo operator made the data.
    """
    holders: dict[str, tuple[set[str], set[str]]] = {}
    for dept in catalogue.departments_for(kind):
        rules = load_default_rules(dept.id, catalogue=catalogue)
        bonus_kinds = [r.kind for r in rules.rules if r.subject_kind is kind and not r.is_deduction]
        con = duckdb.connect(str(data_dir / f"{dept.id}.duckdb"), read_only=True)
        try:
            rows = con.execute(
                # a recent, undisputed bonus record is likely to still count
                "SELECT subject_id, bool_or(list_contains(?, kind) AND status = 'active' "
                "AND event_start >= current_date - INTERVAL 2 YEAR) FROM records "
                "WHERE subject_kind = ? GROUP BY subject_id",
                [bonus_kinds, kind.value],
            ).fetchall()
        finally:
            con.close()
        for subject, has_bonus in rows:
            anything, bonus = holders.setdefault(subject, (set(), set()))
            anything.add(dept.id)
            if has_bonus:
                bonus.add(dept.id)
    return holders


def _showcase(data_dir: Path, catalogue: Catalogue) -> tuple[list[str], list[str]]:
    """Persons and enterprises whose records make instructive score cards."""
    chosen: list[list[str]] = []
    scene = {s.subject_id for s in SCENE_SUBJECTS}
    for kind in (SubjectKind.PERSON, SubjectKind.ENTERPRISE):
        # the scene's subjects have scenes of their own
        subjects = {
            s: held for s, held in _records_by_subject(data_dir, catalogue, kind).items()
            if s not in scene
        }  # fmt: skip
        # most bonus categories with fewest other records; then the most-recorded others
        rich = max(subjects, key=lambda s: (len(subjects[s][1]), -len(subjects[s][0]), s))
        court = [s for s in subjects if "court" in subjects[s][0] and s != rich]
        heavy = max(
            court or [s for s in subjects if s != rich], key=lambda s: (len(subjects[s][0]), s)
        )
        busy = max(
            (s for s in subjects if s not in {rich, heavy}), key=lambda s: (len(subjects[s][0]), s)
        )
        chosen.append([rich, heavy, busy])
    return chosen[0], chosen[1]


def _card(result: PersonScore, catalogue: Catalogue) -> str:
    kind = SubjectKind.ENTERPRISE if isinstance(result, EnterpriseScore) else SubjectKind.PERSON
    model = catalogue.model(kind)
    title = "Enterprise" if kind is SubjectKind.ENTERPRISE else "Person"
    lines = [f"┌─ {title} {mask_subject(result.subject_id)}   query {result.query_id}"]
    headline = f"│ score {result.score:>3}"
    if isinstance(result, EnterpriseScore):
        headline += f"   grade {result.grade}"
    if result.shape is Shape.BREAKDOWN:
        headline += (
            f"   = base {result.base} − deductions {result.deductions} + bonus {result.bonus_total}"
            f"  (clamped to [{model.floor}, {model.ceiling}])"
        )
        lines.append(headline)
        parts = []
        for category in model.categories:
            value = result.bonuses.get(category.name)
            shown = "n/a (owner missing)" if value is None else f"{value}/{category.cap}"
            parts.append(f"{category.label} {shown}")
        lines.append("│ " + " · ".join(parts))
    else:
        headline += "   (TOTAL shape: the score only, no breakdown)"
        lines.append(headline)
    coverage = f"{len(result.answered)}/{len(result.answered) + len(result.missing)} departments"
    if result.partial:
        missing = "; ".join(f"{m.department}: {m.detail.split(' (')[0]}" for m in result.missing)
        lines.append(f"│ coverage {coverage} — PARTIAL, missing {missing}")
    else:
        lines.append(f"│ coverage {coverage} answered")
    lines.append("└" + "─" * 60)
    return "\n".join(lines)


def _batch_summary(
    client: Client, data: Path, catalogue: Catalogue, *, compare: tuple[ConsentRecord, Client]
) -> str:
    with (data / "subjects.csv").open() as f:
        ids = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]
    per = client.subjects_per_ciphertext(SubjectKind.PERSON, Shape.TOTAL)
    started = time.monotonic()
    rows = list(client.batch_scores(ids, purpose="credit_rescoring"))
    elapsed = time.monotonic() - started
    scores = sorted(r.score for r in rows if r.score is not None)
    consent, agency = compare
    card = agency.person_score(
        consent.subject_id, purpose="loan_underwriting", consent_id=consent.consent_id
    )
    mine = next(r for r in rows if r.subject_id == consent.subject_id)
    model = catalogue.model(SubjectKind.PERSON)
    bands = [(lo, hi) for lo, hi in ((0, 59), (60, 89), (90, 99), (100, 119), (120, model.ceiling))]
    histogram = ", ".join(
        f"{lo}-{hi}: {sum(1 for s in scores if lo <= s <= hi)}" for lo, hi in bands
    )
    return "\n".join(
        [
            f"  {len(scores)} scored, {len(rows) - len(scores)} refused, in {elapsed:.1f} s; "
            f"{per} persons per ciphertext, so each department encrypted "
            f"{-(-len(ids) // per)} ciphertexts instead of {len(ids)}",
            f"  scores: median {scores[len(scores) // 2]}; {histogram}",
            f"  {mask_subject(consent.subject_id)}: batch {mine.score}, agency-1's single "
            f"query {card.score} (the same sum, under two different keys)",
        ]
    )


#: the joint-punishment measures the demo asks about (docs/joint-punishment.md)
PERSON_MEASURES = ("bank_loan",)
ENTERPRISE_MEASURES = ("bank_loan", "government_procurement", "customs_facilitation")


def _restrictions(result: RestrictionResult) -> str:
    verdicts = ", ".join(
        f"{measure} {'RESTRICTED' if applies else 'no'}"
        for measure, applies in result.restricted.items()
    )
    return f"  {mask_subject(result.subject_id)}: {verdicts}"


def _stats_summary(client: Client, data_dir: Path, person: str) -> str:
    with (data_dir / "subjects.csv").open() as f:
        cohort = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]
    layout_names = load_catalogue().model(SubjectKind.PERSON).slot_names()
    deductions, bonuses = layout_names[0], list(layout_names[1:])
    # each statistic asked splits the ε: the four capped bonus categories are cheap together,
    # while one subject can move the deductions by 22 departments × 200, so they get their own
    cheap = client.stats(
        cohort, kind=SubjectKind.PERSON, purpose="statistics", epsilon="0.5", statistics=bonuses
    )
    costly = client.stats(
        cohort, kind=SubjectKind.PERSON, purpose="statistics", epsilon="1", statistics=[deductions]
    )
    lines = [f"  cohort of {cheap.cohort} citizens, every department summed:"]
    for result in (cheap, costly):
        for name in result.sums:
            error = result.standard_error(name) / result.cohort
            lines.append(
                f"    mean {name:<18} {result.mean(name):7.2f}  (± {error:.2f} from the noise; "
                f"ε {result.epsilon} for {len(result.sums)} statistic(s))"
            )
    mean = 100 - costly.mean(deductions) + sum(cheap.mean(b) for b in bonuses)
    lines.append(f"  mean score before the clamp ≈ {mean:.1f}; ε left today: {costly.epsilon_left}")
    try:
        client.stats(cohort[:5], kind=SubjectKind.PERSON, purpose="statistics", epsilon="0.5")
    except OsmanthusError as exc:
        lines.append(f"  a cohort of 5 is refused ({type(exc).__name__}): {exc}")
    try:
        client.person_score(person, purpose="statistics")
    except OsmanthusError as exc:
        lines.append(f"  one citizen's score is refused ({type(exc).__name__}): {exc}")
    return "\n".join(lines)


def _coordinator_view(audit_path: Path) -> str:
    entries = [AuditEntry.from_json(line) for line in audit_path.read_text().splitlines() if line]
    chunks = [e for e in entries if e.subject_hashes]
    queries = [e for e in entries if e.subject_hash]
    allowed = sum(1 for e in queries if e.decision == "allow")
    received = sum(int(e.extra.get("ciphertexts_received", 0)) for e in entries)
    size = sum(int(e.extra.get("ciphertext_bytes_received", 0)) for e in entries)
    forwarded = sum(int(e.extra.get("ciphertexts_forwarded", 0)) for e in entries)
    return (
        f"What the coordinator saw: {received} ciphertexts ({size / 1024:.0f} KiB) from the "
        f"departments; it forwarded {forwarded} re-randomised sums for {allowed} answered queries "
        f"and {len(chunks)} batch chunk{'' if len(chunks) == 1 else 's'}, and refused "
        f"{len(queries) - allowed} queries. It holds no decryption key and logged only salted "
        "subject hashes."
    )


def _lists_demo(
    federation: LocalFederation, certs: Path, workdir: Path, agency: Client, firms: list[str]
) -> None:
    today = china_today()
    certified = firms[1]
    # the scene enterprise: no record of it sets a flag, so the restriction below is the list
    # entry's doing; it applies for credit repair of the entry later (cases_scene)
    defaulter = DEMO_ENTERPRISE.subject_id

    def officer(department: str) -> ListOfficer:
        files = issue_certificate(
            certs,
            role=PeerRole.OPERATOR,
            name=department,
            out_dir=workdir / "list-officers" / department,
        )
        node = federation.nodes[department]
        return ListOfficer(
            f"127.0.0.1:{node.port}", department=department, tls=TlsFiles.from_cert_paths(files)
        )

    def entry(
        entry_id: str, list_id: str, code: str, name: str, reason: str, days: int
    ) -> NewEntry:
        return NewEntry(
            entry_id=EntryId(entry_id),
            list=list_id,
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=SubjectId(code),
            subject_name=name,
            legal_basis="",  # the list's own, from the catalogue
            reason=reason,
            window_start=today,
            window_end=today + timedelta(days=days),
        )

    with officer("court") as court, officer("customs") as customs:
        court.publish([entry(REPAIR_ENTRY, REPAIR_LIST, defaulter, DEMO_ENTERPRISE.name,
                             "failed to perform an effective judgement", 730)])  # fmt: skip
        customs.publish([entry("aeo-2026-0456", "customs_advanced_certified", certified,
                               "Suzhou Example Electronics Co., Ltd.",
                               "advanced certified enterprise (AEO)", 1095)])  # fmt: skip
        for code in (defaulter, certified):
            for found in agency.search_lists(kind=SubjectKind.ENTERPRISE, subject=code).entries:
                klass = f", class {found.facilitation_class}" if found.facilitation_class else ""
                window = f"{found.window_start} to {found.window_end}"
                _say(f"  {found.colour.value} list {found.list}: {found.subject_name} "
                     f"{found.subject_id}, {window}{klass}")  # fmt: skip
        _say(_restrictions(agency.check_restrictions(
            defaulter, measures=ENTERPRISE_MEASURES, purpose="credit_report"
        )))  # fmt: skip
        _say("  (the enterprise applies for credit repair of the court's entry further on)")


def _sync_setup(workdir: Path, certs: Path, issuer: TokenIssuer) -> tuple[Path, Path]:
    """The provincial receiver's certificate and senders.toml, and the sync job's key, token,
    signing key, roster and sync.toml (coordinator and province targets filled in later)."""
    # the files name each other by absolute path: each is read relative to its own directory
    workdir, certs = workdir.resolve(), certs.resolve()
    issue_certificate(certs, role=PeerRole.NODE, name="province")
    # the receiver witnesses every log: its cosigning key joins logs.toml before any node
    # starts, so that the nodes keep the cosignatures the sync job brings back
    create_log_key(certs, role=PeerRole.NODE, name="province", witness=True)
    keys = load_or_create_keys(workdir / "keys" / f"{SYNC}.key")
    token = workdir / "keys" / f"{SYNC}.jwt"
    token.write_text(
        issuer.issue(
            requester=SYNC,
            role=Role.SYNC_JOB,
            purposes=["credit_rescoring", "statistics"],
            key_fingerprint=keys.fingerprint,
            ttl=timedelta(hours=1),
        )
    )
    private, public, _ = signing.write_key_pair(
        workdir / "keys", f"{SENDER}-sync", what="sender key"
    )
    senders = workdir / "province" / "senders.toml"
    senders.parent.mkdir()
    senders.write_text(
        f'[[sender]]\nid = "{SENDER}"\npublic_keys = ["{public}"]\ncertificates = ["{SYNC}"]\n'
    )
    with (workdir / "data" / "subjects.csv").open() as f:
        codes = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    roster = workdir / "sync" / "enterprises.csv"
    roster.parent.mkdir()
    roster.write_text("subject_id\n" + "".join(f"{c}\n" for c in codes))
    config = workdir / "sync" / "sync.toml"
    config.write_text(
        f'sender = "{SENDER}"\nsigning_key = "{private}"\nstate_dir = "state"\n\n'
        f'[coordinator]\ntarget = "{{coordinator}}"\nrequester = "{SYNC}"\n'
        f'token_file = "{token}"\npaillier_keys = "{workdir / "keys" / f"{SYNC}.key"}"\n'
        f'certs_dir = "{certs}"\n\n[province]\ntarget = "{{province}}"\n\n'
        f'[checkpoints]\nlogs = "{certs / ROSTER_FILE}"\n\n'
        f'[grades]\nenterprises = "{roster}"\nevery = "0s"\n\n'
        f'[[statistics]]\nname = "enterprises.all"\nsubject_kind = "enterprise"\n'
        f'subjects = "{roster}"\nepsilon = "0.05"\nstatistics = ["deductions"]\n'
    )
    return senders, config


def _sync_demo(
    *, workdir: Path, certs: Path, senders: Path, config: Path, coordinator: str
) -> Process:
    """Start the reference receiver, run the sync job twice and show what the province holds."""
    from sdk.province import ProvinceClient

    witness_key = peer_dir(certs, role=PeerRole.NODE, name="province") / WITNESS_KEY_FILE
    receiver = spawn(
        "province",
        osmanthus_command(
            "province", "serve", "--senders", str(senders),
            "--state-dir", str(workdir / "province" / "state"), "--certs-dir", str(certs),
            "--listen", "127.0.0.1:0", "--crl", str(certs / "crl.pem"),
            "--witness-key", str(witness_key), "--logs", str(certs / ROSTER_FILE),
        ),
        run_dir=workdir / "run",
        own_session=True,
    )  # fmt: skip
    port = receiver.wait_ready(report=lambda text: _say(f"  {text}"))
    config.write_text(
        config.read_text()
        .replace("{coordinator}", coordinator)
        .replace("{province}", f"127.0.0.1:{port}")
    )
    for label in ("first run", "second run, nothing changed"):
        done = subprocess.run(
            osmanthus_command("sync", "run", "--config", str(config), "--quiet"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1]
        _say(f"  {label} (exit {done.returncode}): {line}")
    operator = TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.OPERATOR, name="operator"))
    with ProvinceClient(f"127.0.0.1:{port}", tls=operator) as province:
        page = province.batches(page_size=20)
    _say("  the province holds, each verified against the city's Ed25519 key:")
    for batch in reversed(page.batches):
        partial = f", partial: {', '.join(batch.missing_departments)}" if batch.partial else ""
        records = f"{batch.records} record{'' if batch.records == 1 else 's'}"
        _say(f"    {batch.kind.value} #{batch.sequence}: {records}, watermarks "
             f"{batch.watermark_from} to {batch.watermark_to}{partial}")  # fmt: skip
    _audit_scene(workdir=workdir, certs=certs)
    return receiver


#: how long the kiosk scene waits for the nodes' logs to be witnessed (it takes about 4 s)
WITNESS_WAIT_S = 120.0


def _await_witnessed(state: Path, departments: list[str]) -> None:
    """Wait until every node holds a witness's cosignature on a checkpoint covering all its
    log holds now (its `<log>.cosignatures`), or say which are not after WITNESS_WAIT_S."""
    logs = {dept: state / dept / "audit.jsonl" for dept in departments}
    sizes = {dept: _lines(path) for dept, path in logs.items()}
    deadline = time.monotonic() + WITNESS_WAIT_S
    waiting = sorted(logs)
    while waiting and time.monotonic() < deadline:
        waiting = [d for d in waiting if _cosigned_size(logs[d]) < sizes[d]]
        if waiting:
            time.sleep(0.2)  # a poll: each node's file grows when the witness hands back
    if waiting:
        _say(f"  (not yet witnessed after {WITNESS_WAIT_S:g} s: {', '.join(waiting)})")
    else:
        _say(f"  every department's log is witnessed up to this query ({len(logs)} logs)")


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _cosigned_size(log: Path) -> int:
    """The largest checkpoint of `log` a witness cosigned (0 for none)."""
    try:
        records = cosignatures_path(log).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return 0
    sizes = []
    for record in records:
        try:
            sizes.append(int(json.loads(record)["size"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line while the node appends
    return max(sizes, default=0)


def _audit_scene(*, workdir: Path, certs: Path) -> None:
    """Replay every audit log against its signed checkpoints and witness cosignatures, as an
    auditor would, then show that one edited entry in a copy of a log is caught."""
    roster = str(certs / ROSTER_FILE)
    state = workdir / "run" / "state"
    done = subprocess.run(
        osmanthus_command("audit", "verify", str(state), "--logs", roster, "--json", "--quiet"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    reports = json.loads(done.stdout)["logs"] if done.stdout.strip() else []
    good = sum(1 for r in reports if r["ok"])
    entries = sum(int(r["entries"]) for r in reports)
    witnessed = Counter(name for r in reports for name in r["cosigned"])
    _say(f"  osmanthus audit verify (exit {done.returncode}): {good} of {len(reports)} audit logs "
         f"replay against their signed checkpoints ({entries} entries)")  # fmt: skip
    for name, logs in sorted(witnessed.items()):
        _say(f"    cosigned by the witness {name}: {logs} log(s)")
    # an auditor's copy of the housing node's log, one decision rewritten after it was signed
    source = state / "housing"
    copy = workdir / "audit-copy"
    copy.mkdir(exist_ok=True)
    for name in ("audit.jsonl", "audit.jsonl.checkpoints"):
        shutil.copy2(source / name, copy / name)
    signed = max(
        int(json.loads(line)["size"])
        for line in (copy / "audit.jsonl.checkpoints").read_text().splitlines()
    )
    lines = (copy / "audit.jsonl").read_bytes().split(b"\n")
    edited = next(
        (i for i, line in enumerate(lines[:signed]) if b'"decision":"allow"' in line), None
    )
    if edited is None:
        _say("  (housing's log has no signed allowed entry yet: the tampering example is skipped)")
        return
    lines[edited] = lines[edited].replace(b'"decision":"allow"', b'"decision":"deny"', 1)
    (copy / "audit.jsonl").write_bytes(b"\n".join(lines))
    done = subprocess.run(
        osmanthus_command(
            "audit", "verify", str(copy / "audit.jsonl"), "--logs", roster, "--json", "--quiet"
        ),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    [report] = json.loads(done.stdout)["logs"]
    _say(f"  line {edited + 1} of a copy of housing's log changed from allow to deny: "
         f"audit verify exits {done.returncode}: {report['problem']}")  # fmt: skip


def run_demo(
    *, workdir: Path, persons: int = 2000, enterprises: int = 300, keep_running: bool = False
) -> int:
    """Run the demo's scenes; with `keep_running`, leave the federation, the kiosk, the online
    site and the demo's identity provider up until Ctrl-C (or SIGTERM), then stop them all."""
    t0 = time.monotonic()
    if workdir.exists():
        if not (workdir / _MARKER).exists():
            raise OsmanthusError(f"{workdir} exists and is not a demo directory; choose another")
        shutil.rmtree(workdir)
    # owner-only like every service's state: it holds the data, the keys, tokens and state of
    # the whole federation (files in it keep the umask's modes; the directory keeps others out)
    private_directory(workdir, what="the demo's federation (data, keys, tokens, state)")
    (workdir / _MARKER).write_text("created by 'osmanthus demo'; safe to delete\n")
    catalogue = load_catalogue()
    departments = [d.id for d in catalogue.departments]
    person_depts = catalogue.departments_for(SubjectKind.PERSON)
    enterprise_depts = catalogue.departments_for(SubjectKind.ENTERPRISE)

    _step(t0, f"Seeding {persons} persons and {enterprises} enterprises into {len(departments)} "
          "department databases (one DuckDB file each)")  # fmt: skip
    data = workdir / "data"
    seed(data, persons=persons, enterprises=enterprises, as_of=datetime.now(UTC).date())

    _step(t0, "Creating the platform CA, node/coordinator/requester certificates and issuer key")
    certs = workdir / "certs"
    init_platform(
        certs,
        departments=departments,
        requesters=[AGENCY, REGISTRAR, RESCORING, LIBRARY, BUREAU, BANK, SYNC],
    )
    # the case officers of the housing bureau and the court ('osmanthus disputes' finds them)
    issue_case_officers(certs)
    issuer_dir = workdir / "issuer"
    generate_issuer_keypair(issuer_dir / "issuer.key", issuer_dir / "issuer.pub")
    issuer = TokenIssuer.from_file(issuer_dir / "issuer.key")
    # empty: 'osmanthus token revoke --deny-list' adds to it while the federation runs
    write_deny_list(
        issuer_dir / "deny.json",
        private_key=load_private_key(issuer_dir / "issuer.key", what="token issuer key"),
        issuer=DEFAULT_ISSUER,
    )

    _step(t0, "Generating 2048-bit Paillier keys for the credit agency, the consent registrar, "
          "the library, the rescoring service, the statistics bureau and a bank")  # fmt: skip
    bank_keys = load_or_create_keys(workdir / "keys" / f"{BANK}.key")
    bank_token = issuer.issue(
        requester=BANK,
        role=Role.BANK,
        purposes=["tax_bank_loan"],
        key_fingerprint=bank_keys.fingerprint,
        ttl=timedelta(hours=1),
    )
    agency_keys = load_or_create_keys(workdir / "keys" / f"{AGENCY}.key")
    registrar_keys = load_or_create_keys(workdir / "keys" / f"{REGISTRAR}.key")
    rescoring_keys = load_or_create_keys(workdir / "keys" / f"{RESCORING}.key")
    bureau_keys = load_or_create_keys(workdir / "keys" / f"{BUREAU}.key")
    library_keys = load_or_create_keys(workdir / "keys" / f"{LIBRARY}.key")
    library_token = issuer.issue(
        requester=LIBRARY,
        role=Role.LIBRARY,
        purposes=["deposit_waiver"],
        key_fingerprint=library_keys.fingerprint,
        ttl=timedelta(hours=1),
    )
    rescoring_token = issuer.issue(
        requester=RESCORING,
        role=Role.PLATFORM_SERVICE,
        purposes=["credit_rescoring"],
        key_fingerprint=rescoring_keys.fingerprint,
        ttl=timedelta(hours=1),
    )
    bureau_token = issuer.issue(
        requester=BUREAU,
        role=Role.STATISTICS_OFFICE,
        purposes=["statistics"],
        key_fingerprint=bureau_keys.fingerprint,
        ttl=timedelta(hours=1),
    )
    agency_token = issuer.issue(
        requester=AGENCY,
        role=Role.CREDIT_AGENCY,
        purposes=["loan_underwriting", "credit_report"],
        key_fingerprint=agency_keys.fingerprint,
        ttl=timedelta(hours=1),
    )
    registrar_token = issuer.issue(
        requester=REGISTRAR,
        role=Role.PLATFORM_SERVICE,
        purposes=["court_enforcement", "consent_management"],
        key_fingerprint=registrar_keys.fingerprint,
        ttl=timedelta(hours=1),
    )
    senders, sync_config = _sync_setup(workdir, certs, issuer)
    _step(t0, f"Issuing the service hall's kiosk {KIOSK} and the online site {ONLINE}: each a "
          "requester certificate, a Paillier key, an X25519 sealing key and a token for purpose "
          "self_query bound to both keys")  # fmt: skip
    kiosk_device = issue_device(
        workdir=workdir, certs=certs, issuer=issuer, name=KIOSK, role=Role.KIOSK
    )
    online_device = issue_device(
        workdir=workdir, certs=certs, issuer=issuer, name=ONLINE, role=Role.PORTAL
    )
    people, firms = _showcase(data, catalogue)
    with (data / "subjects.csv").open() as f:
        quiet_person = next(
            r["subject_id"] for r in csv.DictReader(f)
            if r["subject_kind"] == "person" and r["subject_id"] not in people
        )  # fmt: skip

    _step(t0, f"Starting {len(person_depts)} person-credit and {len(enterprise_depts)} enterprise "
          f"nodes ({len(departments)} processes) and the coordinator on 127.0.0.1")  # fmt: skip
    federation = LocalFederation(
        data_dir=data,
        certs_dir=certs,
        issuer_public_key=issuer_dir / "issuer.pub",
        run_dir=workdir / "run",
        departments=departments,
        token_deny_list=issuer_dir / "deny.json",
        # just after start-up 26 fresh processes share the machine's cores: on a busy machine a
        # node's first answer (TLS handshake, then its encryption table for a new key) takes
        # longer than the 5 s a coordinator gives its nodes by default. A node that is down is
        # refused at once, so the partial scene does not wait for this deadline
        deadline_s=60.0,
        # a demo lasts a minute: checkpoints (and the coordinator's witnessing of the nodes)
        # every 2 s rather than every minute, so that the auditor's replay below has signed
        # checkpoints over nearly every entry
        checkpoint_interval_s=2.0,
        # a Ctrl-C reaches the demo alone, which stops every process in order
        own_session=True,
        # a start that takes a while (a busy machine) says what it is waiting for
        progress=lambda text: _say(f"  {text}"),
    )
    receiver: Process | None = None
    portals: dict[str, Process] = {}
    provider: DevIdentityProvider | None = None
    try:
        port = federation.start()
        target = f"127.0.0.1:{port}"
        _step(t0, f"Federation up: coordinator on {target}")

        def tls(name: str) -> TlsFiles:
            return TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.REQUESTER, name=name))

        with (
            Client(target, tls=tls(AGENCY), token=agency_token, keys=agency_keys) as agency,
            Client(target, tls=tls(REGISTRAR), token=registrar_token, keys=registrar_keys) as reg,
        ):
            agency.register_key()
            reg.register_key()
            _step(t0, "Registrar records consent: three citizens allow agency-1 to check their "
                  "credit for a loan (purpose loan_underwriting, 30 days)")  # fmt: skip
            expires = datetime.now(UTC) + timedelta(days=30)
            consents = [
                reg.grant_consent(
                    subject_id=p, grantee=AGENCY, purpose="loan_underwriting", expires_at=expires
                )
                for p in [people[0], people[1], quiet_person]
            ]
            consent_pub = certs / "coordinator" / "consent.pub"
            receipt = verify_consent_receipt(
                consents[0].receipt, public_key=consent_pub, grantee=AGENCY
            )
            _say(
                f"  receipt for {receipt.consent_id} verifies against {consent_pub}: subject "
                f"{receipt.masked_subject}, {receipt.purpose}, until {receipt.expires_at:%Y-%m-%d}"
            )
            _step(t0, "agency-1 asks for BREAKDOWN score cards (decrypted only inside the agency)")
            for consent in consents:
                result = agency.person_score(
                    consent.subject_id, purpose="loan_underwriting", consent_id=consent.consent_id
                )
                _say(_card(result, catalogue))
            total = agency.person_score(
                consents[0].subject_id,
                purpose="loan_underwriting",
                consent_id=consents[0].consent_id,
                shape=Shape.TOTAL,
            )
            _say(_card(total, catalogue))

            _step(t0, "agency-1 asks about a citizen who gave no consent")
            try:
                agency.person_score(people[2], purpose="loan_underwriting")
            except OsmanthusError as exc:
                _say(f"  refused ({type(exc).__name__}): {exc}")

            _step(t0, "Enterprise credit reports (purpose credit_report)")
            for code in firms[:3]:
                _say(_card(agency.enterprise_score(code, purpose="credit_report"), catalogue))

            _step(t0, "Joint punishment: which measures apply, one bit each; the agency never "
                  "learns which department flagged the subject, nor how many did")  # fmt: skip
            for consent in consents:
                _say(_restrictions(agency.check_restrictions(
                    consent.subject_id, measures=PERSON_MEASURES, purpose="loan_underwriting",
                    consent_id=consent.consent_id,
                )))  # fmt: skip
            for code in firms[:3]:
                _say(_restrictions(agency.check_restrictions(
                    code, measures=ENTERPRISE_MEASURES, purpose="credit_report"
                )))  # fmt: skip

            _step(t0, "Red and black lists: the court lists the demo enterprise as a judgement "
                  "defaulter and customs an AA-class enterprise, each through its own node; "
                  "anyone may search what is in view (published fields only); a black-list "
                  "entry restricts loans")  # fmt: skip
            _lists_demo(federation, certs, workdir, agency, firms)

            _step(t0, "Tax-bank loans (税银贷): with each small business's consent, a bank asks "
                  "whether it is a clean A-level taxpayer (the taxation bureau's part alone) and "
                  "whether bank loans are restricted: two bits, a decision")  # fmt: skip
            with Client(target, tls=tls(BANK), token=bank_token, keys=bank_keys) as bank:
                for code in firms[:3]:
                    consent = reg.grant_consent(
                        subject_id=code,
                        grantee=BANK,
                        purpose="tax_bank_loan",
                        expires_at=expires,
                        kind=SubjectKind.ENTERPRISE,
                    )
                    check = bank.tax_bank_loan_check(code, consent_id=consent.consent_id)
                    _say(f"  {code}: {check.decision.value.replace('_', '-')} ({check.reason})")
                try:
                    bank.enterprise_score(firms[0], purpose="tax_bank_loan")
                except OsmanthusError as exc:
                    _say(f"  asking for the score itself is refused ({type(exc).__name__}): {exc}")

            _step(t0, "The citizen revokes consent; the next query is refused at once")
            reg.revoke_consent(consents[0].consent_id)
            try:
                agency.person_score(
                    consents[0].subject_id,
                    purpose="loan_underwriting",
                    consent_id=consents[0].consent_id,
                )
            except OsmanthusError as exc:
                _say(f"  refused ({type(exc).__name__}): {exc}")
            verify_consent_receipt(consents[0].receipt, public_key=consent_pub)
            _say("  its receipt still verifies: a receipt proves the grant, not that it stands")

            _step(t0, "The city library waives the book deposit at a score of 110: with the "
                  "reader's consent it learns one bit, never the score")  # fmt: skip
            with Client(target, tls=tls(LIBRARY), token=library_token, keys=library_keys) as lib:
                for consent in consents[1:]:
                    waiver = reg.grant_consent(
                        subject_id=consent.subject_id,
                        grantee=LIBRARY,
                        purpose="deposit_waiver",
                        expires_at=expires,
                    )
                    bit = lib.person_meets_threshold(
                        waiver.subject_id,
                        threshold=110,
                        purpose="deposit_waiver",
                        consent_id=waiver.consent_id,
                    )
                    verdict = "yes: deposit waived" if bit.meets else "no: deposit due"
                    _say(f"  {mask_subject(bit.subject_id)}: score ≥ 110? {verdict}")
                try:
                    lib.person_score(
                        waiver.subject_id, purpose="deposit_waiver", consent_id=waiver.consent_id
                    )
                except OsmanthusError as exc:
                    _say(f"  asking for the score itself is refused ({type(exc).__name__}): {exc}")

            _step(t0, f"The platform's rescoring service scores all {persons} citizens in one "
                  "batch (TOTAL; a statutory duty, so no consent per person)")  # fmt: skip
            with Client(
                target, tls=tls(RESCORING), token=rescoring_token, keys=rescoring_keys
            ) as rescoring:
                _say(_batch_summary(rescoring, data, catalogue, compare=(consents[1], agency)))

            _step(t0, f"The city statistics bureau compiles statistics over all {persons} "
                  "citizens: noisy sums added under encryption, charged to its ε budget (5 a "
                  "day, 50 a year)")  # fmt: skip
            with Client(target, tls=tls(BUREAU), token=bureau_token, keys=bureau_keys) as bureau:
                _say(_stats_summary(bureau, data, people[0]))

            _step(t0, "The provincial sync job reports upward: list changes, every "
                  "enterprise's grade and a noisy statistic, in Ed25519-signed batches to the "
                  "reference provincial receiver; it sends again only what changed")  # fmt: skip
            receiver = _sync_demo(
                workdir=workdir, certs=certs, senders=senders, config=sync_config,
                coordinator=target,
            )  # fmt: skip

            _step(t0, "At the service hall: a citizen places her identity card on the kiosk "
                  "(a requester device of its own: role kiosk, purpose self_query). Earlier, "
                  "with her consent, agency-1 checked her credit for a loan")  # fmt: skip
            hers = reg.grant_consent(
                subject_id=DEMO_CITIZEN.subject_id,
                grantee=AGENCY,
                purpose="loan_underwriting",
                expires_at=expires,
            )
            checked = agency.person_score(
                hers.subject_id, purpose="loan_underwriting", consent_id=hers.consent_id
            )
            _say(f"  agency-1 (consent {hers.consent_id}): score {checked.score}")
            # the kiosk marks an entry verified only once a witness cosigned a checkpoint over
            # it: the nodes sign one within 2 s, the coordinator witnesses them every 2 s
            _await_witnessed(workdir / "run" / "state", sorted(federation.nodes))
            register_device_key(kiosk_device, target=target)
            # the kiosk checks every "who asked" entry against the logs' pinned keys
            portals["kiosk"] = start_portal(
                kiosk_device, target=target, run_dir=workdir / "run", logs=certs / ROSTER_FILE
            )
            portals["kiosk"].wait_ready(report=lambda text: _say(f"  {text}"))
            scene = kiosk_scene(
                kiosk=portals["kiosk"], device=kiosk_device, citizen=DEMO_CITIZEN, say=_say
            )
            assert receiver is not None
            cases = cases_scenes(
                CasesContext(
                    certs=certs, target=target, online=online_device,
                    kiosk=scene, agency=agency, sync_config=sync_config, receiver=receiver,
                    province_state=workdir / "province" / "state",
                    nodes={d: f"127.0.0.1:{federation.nodes[d].port}" for d in CASE_OFFICERS},
                ),
                step=lambda text: _step(t0, text),
                say=_say,
            )  # fmt: skip

            _step(t0, "The volunteers' node goes down; a first answer about a newly consenting "
                  "citizen is explicitly partial")  # fmt: skip
            federation.nodes["volunteer"].popen.kill()
            federation.nodes["volunteer"].popen.wait()
            late = reg.grant_consent(
                subject_id=people[2],
                grantee=AGENCY,
                purpose="loan_underwriting",
                expires_at=expires,
            )
            partial = agency.person_score(
                late.subject_id, purpose="loan_underwriting", consent_id=late.consent_id
            )
            _say(_card(partial, catalogue))
            _step(t0, "Asking again about a citizen answered in full before is refused: the "
                  "difference would be the volunteers' contribution alone")  # fmt: skip
            try:
                agency.person_score(
                    consents[1].subject_id,
                    purpose="loan_underwriting",
                    consent_id=consents[1].consent_id,
                )
            except OsmanthusError as exc:
                _say(f"  refused ({type(exc).__name__}): {exc}")
            if keep_running:
                provider = DevIdentityProvider(identities=[*demo_identities(), HOUSING_OFFICER])
                _keep_running(
                    t0, federation=federation, workdir=workdir, certs=certs, issuer=issuer,
                    target=target, device=online_device, scene=scene, consent_id=hers.consent_id,
                    portals=portals, provider=provider, cases=cases,
                )  # fmt: skip
    finally:
        codes = {f"portal-{name}": p.stop() for name, p in portals.items()}
        if provider is not None:
            provider.stop()
        codes.update(federation.stop())
        if receiver is not None:
            codes["province"] = receiver.stop()
    _say()
    _say(_coordinator_view(federation.coordinator_audit))
    clean = sum(1 for code in codes.values() if code == 0)
    unclean = {name: code for name, code in codes.items() if code != 0}
    killed = "; the volunteers' node was killed on purpose" if "volunteer" in unclean else ""
    _step(t0, f"Shut down: {clean} of {len(codes)} processes exited cleanly "
          f"(not cleanly: {unclean}{killed})")  # fmt: skip
    return 0


def _keep_running(
    t0: float,
    *,
    federation: LocalFederation,
    workdir: Path,
    certs: Path,
    issuer: TokenIssuer,
    target: str,
    device: Device,
    scene: KioskScene,
    consent_id: str,
    portals: dict[str, Process],
    provider: DevIdentityProvider,
    cases: CasesScene,
) -> None:
    """Bring the volunteers' node back, start the demo's identity provider, the online site
    and the housing bureau's desk, print how to try everything, and wait for Ctrl-C (the
    caller stops everything)."""
    _step(t0, "Keeping the demo up: the volunteers' node comes back on its port, the demo's "
          "identity provider, the online self-service site and the housing bureau's desk "
          "start")  # fmt: skip
    federation.restart_node("volunteer")
    provider.start()
    register_device_key(device, target=target)
    portals["online"], online_url = start_online(
        device,
        target=target,
        run_dir=workdir / "run",
        provider=provider,
        logs=certs / ROSTER_FILE,
    )
    housing_node = f"127.0.0.1:{federation.nodes[HOUSING].port}"
    portals["housing-desk"], desk_url = start_desk(
        department=HOUSING, certs=certs, node=housing_node, state_dir=workdir / "desks" / HOUSING,
        run_dir=workdir / "run", provider=provider,
    )  # fmt: skip
    # a token that outlives the hour the scenes' tokens were good for, and a report signing key
    keys_file = workdir / "keys" / f"{AGENCY}.key"
    token_file = workdir / "keys" / f"{AGENCY}.jwt"
    token = issuer.issue(
        requester=AGENCY,
        role=Role.CREDIT_AGENCY,
        purposes=["loan_underwriting", "credit_report"],
        key_fingerprint=load_or_create_keys(keys_file).fingerprint,
        ttl=timedelta(hours=12),
    )
    write_atomically(token_file, f"{token}\n".encode(), mode=0o600, field="token")
    signing_key, _, _ = signing.write_key_pair(
        workdir / "keys", f"{AGENCY}-reports", what="report signing key"
    )
    _say()
    _say(how_to_try(TryIt(
        workdir=workdir.resolve(), certs=certs.resolve(), target=target, kiosk=scene,
        online_url=online_url, provider=provider, consent_id=consent_id, requester=AGENCY,
        token_file=token_file.resolve(), keys_file=keys_file.resolve(),
        signing_key=signing_key.resolve(),
        desk=desk_how_to(
            url=desk_url, certs=certs.resolve(), node=housing_node, case_id=cases.objection_case
        ),
    )))  # fmt: skip
    wait_until_interrupted()
    _say()
    _step(t0, "Ctrl-C: stopping the portals, the identity provider and the federation")
