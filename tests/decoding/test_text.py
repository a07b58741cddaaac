"""Stop strings across token boundaries and UTF-8-safe incremental detokenisation."""

from __future__ import annotations

from modelfleet.decoding.text import IncrementalDetokenizer, StopMatcher


def feed_all(matcher: StopMatcher, deltas: list[str]) -> tuple[str, bool]:
    out = []
    for d in deltas:
        text, hit = matcher.feed(d)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_inside_one_delta_drops_it_and_the_rest() -> None:
    assert feed_all(StopMatcher(["END"]), ["abc END xyz"]) == ("abc ", True)


def test_stop_split_across_deltas_is_found_and_never_emitted() -> None:
    m = StopMatcher(["###"])
    assert m.feed("hello #") == ("hello ", False)  # '#' may start the stop: held back
    assert m.feed("#") == ("", False)
    assert m.feed("# tail") == ("", True)


def test_held_text_is_released_when_it_turns_out_not_to_be_a_stop() -> None:
    m = StopMatcher(["stop here"])
    assert m.feed("we st") == ("we ", False)
    assert m.feed("ay") == ("stay", False)
    assert feed_all(StopMatcher(["zz"]), ["a z", "b"]) == ("a zb", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(StopMatcher(["b", "a"]), ["xxab"]) == ("xx", True)


def test_no_stops_passes_through() -> None:
    assert StopMatcher([]).feed("anything") == ("anything", False)
    assert StopMatcher([""]).feed("x") == ("x", False)


class ByteTokenizer:
    """Tokens are single UTF-8 bytes, so characters span tokens like in byte-level BPE."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def test_detokenizer_never_splits_a_character() -> None:
    text = "naïve café ☕ ok"
    detok = IncrementalDetokenizer(ByteTokenizer(), list(b"prompt "))
    deltas = [detok.push(b) for b in text.encode()]
    assert "".join(deltas) + detok.flush() == text
    assert all("\ufffd" not in d for d in deltas)


def test_detokenizer_flushes_an_incomplete_character_at_the_end() -> None:
    detok = IncrementalDetokenizer(ByteTokenizer(), [])
    assert detok.push(0xE2) == ""
    assert detok.flush() == "\ufffd"
