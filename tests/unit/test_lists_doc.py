"""The red and black list table of docs/joint-punishment.md is the default catalogue's lists."""

from __future__ import annotations

from pathlib import Path

from osmanthus.core.catalogue import ListType, load_catalogue

DOC = Path(__file__).resolve().parents[2] / "docs" / "joint-punishment.md"
HEADER = "| list | department | colour | name | subjects | longest window | sets / grants |"


def _row(t: ListType) -> str:
    kinds = ", ".join(sorted(k.value for k in t.subject_kinds))
    grants = f"flag `{t.flag}`" if t.flag else f"class {t.facilitation_class}"
    years = f"{t.max_window_days // 366} y"
    cells = [f"`{t.id}`", t.department, t.colour.value, f"{t.name} ({t.name_zh})", kinds, years]
    return "| " + " | ".join([*cells, grants]) + " |"


def test_the_docs_table_lists_every_catalogue_list_as_the_catalogue_says() -> None:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    expected = [_row(t) for t in load_catalogue().lists]
    assert lines[start:end] == expected, (
        "docs/joint-punishment.md: the red and black list table no longer matches the "
        "catalogue; replace its rows with:\n" + "\n".join(expected)
    )


def test_every_black_list_sets_a_flag_and_every_red_list_grants_a_class() -> None:
    for t in load_catalogue().lists:
        assert (t.flag is None) != (t.facilitation_class is None), t.id
        assert (t.flag is not None) == (t.colour.value == "black"), t.id
