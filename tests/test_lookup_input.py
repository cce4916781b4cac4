"""The lookup screen's typing and lifetime (ui_kivy/lookup_input.py), without a window: keys, the
physical keyboard's text, closing on Back, when idle and when the visitor leaves, and that closing
forgets what was typed and found; its setting, display.lookup_idle_s."""

from __future__ import annotations

import pytest

import config
from ui_kivy.lookup_input import BACKSPACE, CLEAR, KEY_ROWS, MAX_CHARS, SEARCH, SHIFT, LookupInput, typable

S = 1_000_000_000


def _typed(keys: str, start_ns: int = 0) -> LookupInput:
    typing = LookupInput(idle_s=60)
    typing.open(start_ns)
    for k in keys:
        typing.press(k, start_ns)
    return typing


def test_every_key_row_is_ten_units_and_the_keyboard_types_what_flickr_names() -> None:
    assert [sum(units for _, units in row) for row in KEY_ROWS] == [10] * len(KEY_ROWS)
    keys = {k for row in KEY_ROWS for k, _ in row}
    assert set("0123456789abcdefghijklmnopqrstuvwxyz@./:_-") | {SHIFT, BACKSPACE, CLEAR, SEARCH} == keys


def test_keys_type_shift_capitalises_delete_and_clear_edit_search_asks() -> None:
    typing = _typed("55543106@n05")
    assert typing.text == "55543106@n05"
    typing.press(BACKSPACE, 1)
    typing.press(SHIFT, 1)
    typing.press("n", 1)
    assert typing.text == "55543106@n0N" and typing.shift
    typing.press(SHIFT, 1)
    typing.press("x", 1)
    assert typing.text == "55543106@n0Nx"
    assert typing.press(SEARCH, 2) is True and typing.text == "55543106@n0Nx"  # the caller searches
    typing.press(CLEAR, 3)
    assert typing.text == ""


def test_a_physical_keyboard_types_printable_characters_only_up_to_the_limit() -> None:
    typing = _typed("")
    typing.type("flickr.com/photo.gne?id=1 \t\n€", 0)
    assert typing.text == "flickr.com/photo.gne?id=1"
    assert typable("a b\x00c") == "abc"
    typing.type("9" * 1000, 0)
    assert len(typing.text) == MAX_CHARS


def test_closed_it_takes_nothing_and_an_answer_goes_when_the_text_changes() -> None:
    typing = LookupInput(idle_s=60)
    typing.type("123", 0)
    assert typing.press("4", 0) is False and typing.press(SEARCH, 0) is False and typing.text == ""
    typing = _typed("123")
    typing.answer = "the answer to 123"
    typing.press("4", 1)
    assert typing.answer is None, "an answer must not stay under other text"
    typing.answer = "the answer to 1234"
    typing.press(SHIFT, 2)
    assert typing.answer == "the answer to 1234"  # shift changes no text


@pytest.mark.parametrize("why", ["Back", "nothing touched for 60 s", "the visitor left"])
def test_closing_forgets_the_text_and_the_answer_and_reopening_starts_empty(why: str) -> None:
    typing = _typed("12345678@n01")
    typing.press(SHIFT, 0)
    typing.answer = "an answer"
    assert typing.close(why) is True and typing.closed_because == why
    assert (typing.is_open, typing.text, typing.answer, typing.shift) == (False, "", None, False)
    assert typing.close("again") is False and typing.closed_because == why
    typing.open(5 * S)
    assert typing.is_open and typing.text == "" and typing.answer is None


def test_it_closes_when_idle_counting_from_the_last_touch() -> None:
    typing = _typed("1", start_ns=0)
    assert not typing.idle(59 * S)
    typing.press("2", 50 * S)
    assert not typing.idle(109 * S) and typing.idle(110 * S)
    typing.touched(110 * S)  # scrolling the photos counts
    assert not typing.idle(111 * S)


def test_it_closes_when_the_visitor_who_was_there_has_left() -> None:
    leave_s = 2.5
    typing = _typed("1", start_ns=100 * S)
    assert not typing.visitor_gone(None, 200 * S, leave_s), "nobody was ever seen: only the idle timeout closes it"
    assert not typing.visitor_gone(10 * S, 200 * S, leave_s), "someone seen long before it opened is not its visitor"
    assert not typing.visitor_gone(99 * S, 101 * S, leave_s)  # seen just before it opened, still there
    assert typing.visitor_gone(99 * S, 102 * S, leave_s)  # ...and gone for leave_s
    assert typing.visitor_gone(150 * S, 152.5 * S, leave_s) and not typing.visitor_gone(150 * S, 152 * S, leave_s)
    typing.close("the visitor left")
    assert not typing.visitor_gone(150 * S, 160 * S, leave_s)  # closed: nothing to close


def test_the_idle_setting_is_checked_and_named() -> None:
    assert config.validate({})["display"]["lookup_idle_s"] == 60.0
    assert config.validate({"display": {"lookup_idle_s": 20}})["display"]["lookup_idle_s"] == 20
    with pytest.raises(config.ConfigError, match=r"display\.lookup_idle_s = 1\.0: allowed range is 5 to 3600"):
        config.validate({"display": {"lookup_idle_s": 1.0}})
