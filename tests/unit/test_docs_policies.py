"""docs/policies.md stays true: its rules load, its case files pass, its transcripts still match.

The conventions (which comment marks which block) are written at the top of docs/policies.md.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from osmanthus.cli import main
from osmanthus.core.errors import ConfigError
from osmanthus.core.policy import SCHEMA, PolicyEngine
from osmanthus.core.policy_cases import load_cases, run_cases

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "policies.md"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"<!--\s*(.*?)\s*-->")
_DERIVED = re.compile(r"(?P<file>\S+\.cedar) = (?P<base>\S+\.cedar) \+ this block")
_EXCERPT = re.compile(r"excerpt of (?P<file>\S+\.cedar)")
_CASES = re.compile(r"(?P<file>\S+\.toml) tests (?P<policy>\S+\.cedar)")
_INVALID = re.compile(r"invalid (?P<file>\S+\.cedar)")
_REQUIRES = re.compile(r";\s*requires (\w+)$")
#: a rule as this page writes it: its comment lines, then @id first among its annotations
_RULE_START = re.compile(r'^(?://[^\n]*\n)*@id\("([^"]+)"\)', re.MULTILINE)
PENDING = "output pending: feature in progress"
#: what a transcript does not compare: policy hashes, and how many requests a diff generated
_UNSTABLE = (
    (re.compile(r"sha256 [0-9a-f]{16}"), "sha256 HASH"),
    (re.compile(r"^\d+ requests decided by both", re.MULTILINE), "N requests decided by both"),
)


@dataclass(frozen=True)
class Block:
    """One fenced block of the page and the comment line right above it, if any."""

    line: int
    lang: str
    text: str
    comment: str | None

    @property
    def marker(self) -> str | None:
        """The text after "doctest:" without any "; requires NAME" suffix."""
        if self.comment is None or not self.comment.startswith("doctest:"):
            return None
        return _REQUIRES.sub("", self.comment.removeprefix("doctest:").strip())

    @property
    def requires(self) -> str | None:
        found = _REQUIRES.search(self.comment or "")
        return found.group(1) if found else None


def parse(page: str) -> list[Block]:
    """Every fenced block of `page`, in order."""
    blocks = []
    for fence in _FENCE.finditer(page):
        above = page[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        comment = _COMMENT.fullmatch(above)
        blocks.append(
            Block(
                line=page.count("\n", 0, fence.start()) + 1,
                lang=fence.group(1),
                text=fence.group(2),
                comment=comment.group(1) if comment else None,
            )
        )
    return blocks


BLOCKS = parse(DOC.read_text(encoding="utf-8"))


def _available(feature: str | None) -> bool:
    """Whether the policy model has the action `feature` (None: nothing required)."""
    return feature is None or re.search(rf"\baction\b[^;]*\b{feature}\b", SCHEMA) is not None


def _skip_unless_available(block: Block) -> None:
    if not _available(block.requires):
        pytest.skip(f"the policy model has no {block.requires} yet")


def _statement_end(source: str, start: int) -> int:
    """The index just past the `;` ending the statement that starts at `start`."""
    in_string = in_comment = False
    pos = start
    while pos < len(source):
        char = source[pos]
        if in_comment:
            in_comment = char != "\n"
        elif in_string:
            if char == "\\":
                pos += 1
            elif char == '"':
                in_string = False
        elif source.startswith("//", pos):
            in_comment = True
        elif char == '"':
            in_string = True
        elif char == ";":
            return pos + 1
        pos += 1
    raise AssertionError(f"the rule at offset {start} has no closing ';'")


def rules_of(block: str) -> list[tuple[str, str]]:
    """(@id, text with its comments) of each rule of a block written as this page writes rules."""
    starts = list(_RULE_START.finditer(block))
    assert starts, "the block holds no rule starting with @id"
    assert not block[: starts[0].start()].strip(), "text before the first rule's comment and @id"
    return [
        (match.group(1), block[match.start() : _statement_end(block, match.start())])
        for match in starts
    ]


def apply_block(base: str, block: str) -> str:
    """`base` with each rule of `block` replacing the rule of the same @id, or added at the end."""
    text = base
    for rule_id, rule in rules_of(block):
        found = [m for m in _RULE_START.finditer(text) if m.group(1) == rule_id]
        if found:
            start = found[0].start()
            text = text[:start] + rule + text[_statement_end(text, start) :]
        else:
            text = text.rstrip("\n") + "\n\n" + rule + "\n"
    return text


def documented_files() -> dict[str, str | None]:
    """Every file the page makes, by name, in page order; None when its feature is missing."""
    files: dict[str, str | None] = {}

    def source(name: str) -> str | None:
        if name in files:
            return files[name]
        shipped = ROOT / name
        assert shipped.is_file(), f"{name} is neither shipped nor made earlier on the page"
        return shipped.read_text(encoding="utf-8")

    for block in BLOCKS:
        marker = block.marker or ""
        usable = _available(block.requires)
        if derived := _DERIVED.fullmatch(marker):
            base = source(derived["base"])
            made = apply_block(base, block.text) if usable and base is not None else None
            files[derived["file"]] = made
        elif cases := _CASES.fullmatch(marker):
            files[cases["file"]] = block.text if usable else None
        elif invalid := _INVALID.fullmatch(marker):
            files[invalid["file"]] = block.text if usable else None
    return files


FILES = documented_files()


def _policy(name: str) -> str:
    text = FILES[name] if name in FILES else (ROOT / name).read_text(encoding="utf-8")
    if text is None:
        pytest.skip(f"{name} needs a feature the policy model does not have yet")
    return text


def _of(*langs: str, marker: re.Pattern[str] | None = None) -> list[Block]:
    return [
        b
        for b in BLOCKS
        if b.lang in langs and (marker is None or marker.fullmatch(b.marker or "") is not None)
    ]


def _ids(blocks: list[Block]) -> list[str]:
    return [f"line{b.line}" for b in blocks]


def test_every_rule_and_case_block_says_how_it_is_checked() -> None:
    known = (_DERIVED, _EXCERPT, _CASES, _INVALID, re.compile("fragment"))
    # a case file is checked against a policy; every other marker is for rules
    unmarked = [
        b.line
        for b in BLOCKS
        if (b.lang == "cedar" and not any(p.fullmatch(b.marker or "") for p in known))
        or (b.lang == "toml" and not _CASES.fullmatch(b.marker or ""))
    ]
    assert not unmarked, f"docs/policies.md: blocks without a doctest marker at lines {unmarked}"
    made = [m["file"] for b in BLOCKS if (m := _DERIVED.fullmatch(b.marker or ""))]
    assert len(made) == len(set(made)), "two blocks make the same file"
    assert len(_of("cedar", "toml")) >= 10


DERIVED = _of("cedar", marker=_DERIVED)


@pytest.mark.parametrize("block", DERIVED, ids=_ids(DERIVED))
def test_a_rule_block_loads_alone_and_in_its_file(block: Block) -> None:
    _skip_unless_available(block)
    PolicyEngine(source=block.text, origin=f"docs/policies.md, line {block.line}")
    derived = _DERIVED.fullmatch(block.marker or "")
    assert derived is not None
    made = _policy(derived["file"])
    engine = PolicyEngine(source=made, origin=derived["file"])
    # every rule of the block is in force under its name, and the base's other rules stay
    base = PolicyEngine(source=_policy(derived["base"]), origin=derived["base"])
    ids = {rule_id for rule_id, _ in rules_of(block.text)}
    assert ids <= set(engine.annotations())
    assert set(base.annotations()) <= set(engine.annotations())


EXCERPTS = _of("cedar", marker=_EXCERPT)


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("block", EXCERPTS, ids=_ids(EXCERPTS))
def test_an_excerpt_is_word_for_word_in_its_shipped_file(block: Block) -> None:
    _skip_unless_available(block)
    excerpt = _EXCERPT.fullmatch(block.marker or "")
    assert excerpt is not None
    shipped = (ROOT / excerpt["file"]).read_text(encoding="utf-8")
    assert _words(block.text) in _words(shipped), f"{excerpt['file']} no longer says this"


MISTAKES = _of("cedar", marker=_INVALID)


@pytest.mark.parametrize("block", MISTAKES, ids=_ids(MISTAKES))
def test_a_mistake_block_is_refused(block: Block) -> None:
    _skip_unless_available(block)
    with pytest.raises(ConfigError):
        PolicyEngine(source=block.text, origin=f"docs/policies.md, line {block.line}")


CASE_FILES = _of("toml", marker=_CASES)


@pytest.mark.parametrize("block", CASE_FILES, ids=_ids(CASE_FILES))
def test_a_case_file_passes_against_its_policy(block: Block, tmp_path: Path) -> None:
    _skip_unless_available(block)
    cases = _CASES.fullmatch(block.marker or "")
    assert cases is not None
    path = tmp_path / Path(cases["file"]).name
    path.write_text(block.text, encoding="utf-8")
    engine = PolicyEngine(source=_policy(cases["policy"]), origin=cases["policy"])
    results = run_cases(engine, load_cases(path))
    failures = [f"{r.case.name}: {'; '.join(r.problems)}" for r in results if not r.passed]
    assert not failures, f"docs/policies.md, line {block.line}: " + " | ".join(failures)


# --- transcripts ------------------------------------------------------------------------------


def commands(transcript: str) -> Iterator[tuple[str, str]]:
    """Each `$ osmanthus ...` command of a transcript (joined over its `\\` continuation lines)
    with the output written below it."""
    lines = transcript.splitlines()
    assert lines and lines[0].startswith("$ "), "a transcript starts with a '$ ' command line"
    command: list[str] = []
    output: list[str] = []
    continued = False
    for line in lines:
        if line.startswith("$ ") or continued:
            if line.startswith("$ ") and command:
                yield " ".join(command), "\n".join(output)
                command, output = [], []
            continued = line.endswith("\\")
            command.append(line.removeprefix("$ ").removesuffix("\\").strip())
        else:
            output.append(line)
    yield " ".join(command), "\n".join(output)


def _stable(text: str) -> str:
    for pattern, replacement in _UNSTABLE:
        text = pattern.sub(replacement, text)
    return text.strip("\n")


def output_matches(expected: str, actual: str) -> bool:
    """Whether `actual` is `expected`, where "…" stands for any text (a line of it: any lines)."""
    parts = []
    for line in _stable(expected).split("\n"):
        if line.strip() == "…":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*?".join(re.escape(piece) for piece in line.split("…")) + r"\n")
    return re.fullmatch("".join(parts), _stable(actual) + "\n") is not None


def test_output_matching_understands_ellipses() -> None:
    assert output_matches("a\n…\nd", "a\nb\nc\nd")
    assert output_matches("a\n…\nd", "a\nd")
    assert output_matches("x … z", "x yyy z")
    assert not output_matches("x … z", "x y\ny z")
    assert not output_matches("a\nd", "a\nb\nd")
    assert output_matches("p (sha256 0123456789abcdef…)", "p (sha256 fedcba9876543210…)")


def _section(line: int) -> str:
    """The example a block belongs to: the last level-3 heading above it."""
    headings = [h for h in _HEADINGS if h[0] < line]
    return headings[-1][1] if headings else "top"


_PAGE_LINES = DOC.read_text(encoding="utf-8").splitlines()
_HEADINGS = [
    (n, text[4:]) for n, text in enumerate(_PAGE_LINES, start=1) if text.startswith("### ")
]
#: the transcripts of each example, in page order: the commands of one example share files
#: (a key made in one block signs a bundle in the next)
TRANSCRIPTS: dict[str, list[Block]] = {}
for _block in _of("console"):
    if _block.comment != PENDING:
        TRANSCRIPTS.setdefault(_section(_block.line), []).append(_block)


def _lay_out(directory: Path) -> None:
    """The shipped policies and every file the page makes, as the page's commands name them."""
    for shipped in (*ROOT.glob("policies/*.cedar"), *ROOT.glob("policies/cases/*.toml")):
        target = directory / shipped.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    for name, text in FILES.items():
        if text is not None:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text, encoding="utf-8")


@pytest.mark.parametrize("section", list(TRANSCRIPTS), ids=[s[:3] for s in TRANSCRIPTS])
def test_the_transcripts_of_an_example_still_print_what_the_page_shows(
    section: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _lay_out(tmp_path)
    monkeypatch.chdir(tmp_path)
    for block in TRANSCRIPTS[section]:
        for command, expected in commands(block.text):
            argv = shlex.split(command)
            assert argv[0] == "osmanthus", f"line {block.line}: {command}"
            for name in (a for a in argv if a.startswith("policies/")):
                if FILES.get(name, "") is None:
                    pytest.skip(f"{name} needs a feature the policy model does not have yet")
            main(argv[1:])
            captured = capsys.readouterr()
            actual = captured.out + captured.err
            assert output_matches(expected, actual), (
                f"docs/policies.md, line {block.line}: `{command}` now prints:\n{actual}"
            )
