"""The one rule count every interface prints."""

from __future__ import annotations

from watchdogd.counting import count_line, tally


def test_count_line_lists_what_needs_a_look_first_and_skips_empty_states() -> None:
    counts = tally(["ok"] * 20 + ["firing"] * 2 + ["absent"] * 2 + ["down", "disabled", "disabled", "disabled"])
    assert count_line(counts) == "28 rules: 2 firing, 1 down, 2 absent, 20 ok, 3 disabled"


def test_count_line_singular_empty_and_unknown_states() -> None:
    assert count_line({"gave_up": 1}) == "1 rule: 1 gave up"
    assert count_line({}) == "0 rules: none"
    assert count_line({"ok": 1, "snoozed": 2}) == "3 rules: 1 ok, 2 snoozed"  # a newer daemon's state word
