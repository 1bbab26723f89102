"""Strict JSON request bodies (`http/bodies.py`): the nesting check agrees with a parser's reading of the body,
and costs about what parsing does, however the body is built."""

from __future__ import annotations

import json
import random
import time

import pytest

from local_code_interpreter.http.bodies import MAX_DEPTH, BadRequest, _depth_exceeds, parse_body


def _depth(value) -> int:
    """The oracle: the nesting depth of a parsed value (an empty array or object counts, as its brackets do)."""
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


# Strings full of what could fool a scan: brackets, quotes, backslashes (escaped by json.dumps), non-ASCII.
_ALPHABET = '[]{}"\\ab\u00e9\U0001f600\n,:'


def _random_value(rng: random.Random, depth: int):
    def text() -> str:
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 6)))

    if depth <= 0 or rng.random() < 0.2:
        return rng.choice([text(), 1, 2.5, None, True, -3e10])
    if rng.random() < 0.5:
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {text(): _random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))}


def _nested(rng: random.Random, depth: int):
    """`depth` levels around a small random value, with small random siblings beside some of them."""
    value = _random_value(rng, 3)
    for _ in range(depth):
        sibling = _random_value(rng, 3)
        value = [sibling, value] if rng.random() < 0.5 else {"k[\\\"": value, "s": sibling}
    return value


def test_the_depth_check_agrees_with_the_parsed_depth_on_random_bodies():
    rng = random.Random(20261207)
    for i in range(3000):
        value = _nested(rng, rng.randint(0, 40))
        body = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1])).encode()
        for limit in (3, MAX_DEPTH):
            assert _depth_exceeds(body, limit) == (_depth(value) > limit), body[:300]


@pytest.mark.parametrize("open_, close", [(b"[", b"]"), (b'{"a":', b"}"), (b'[{"a":', b"}]")])
def test_exactly_the_limit_is_taken_and_one_more_level_is_refused(open_, close):
    def body(depth: int) -> bytes:  # `depth` levels of the pattern, as an object's value
        levels = depth // (open_.count(b"[") + open_.count(b"{"))
        return b'{"input": ' + open_ * levels + b"1" + close * levels + b"}"

    per = open_.count(b"[") + open_.count(b"{")
    fits = body(MAX_DEPTH - 1 - (MAX_DEPTH - 1) % per)
    assert not _depth_exceeds(fits, MAX_DEPTH) and parse_body(fits)
    deep = body(MAX_DEPTH + per)
    assert _depth_exceeds(deep, MAX_DEPTH)
    with pytest.raises(BadRequest, match="nested deeper"):
        parse_body(deep)


def test_brackets_inside_strings_and_escapes_do_not_count():
    inside = json.dumps({"input": "[" * 1000 + '\\"' * 50 + "{" * 1000}).encode()
    assert not _depth_exceeds(inside, MAX_DEPTH)
    assert parse_body(inside)["input"].startswith("[[[")
    # an escaped backslash ends before the closing quote: what follows is structure again
    tricky = b'{"a": "\\\\", "b": ' + b"[" * 40 + b"]" * 40 + b"}"
    assert _depth_exceeds(tricky, MAX_DEPTH)


def _best_of_alternating(first, second, body: bytes, rounds: int = 7) -> tuple[float, float]:
    """The least time of each over `rounds` alternating calls: a load spike on a shared machine hits both."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for function, spent in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            function(body)
            spent.append(time.perf_counter() - started)
    return min(times[0]), min(times[1])


@pytest.mark.parametrize("shape", ["history", "long strings of brackets"])
def test_checking_the_depth_costs_about_what_parsing_costs(shape):
    """A body as large as the guard allows (1 MiB by default) is checked on the event loop before parsing: the
    check must cost about what the parse does, not a multiple (the Python loop over the bytes it replaces cost
    about 19x the parse of long strings; this, 2x; the bound leaves room for a loaded machine)."""
    if shape == "history":
        value = {"input": [{"role": "user", "content": [{"type": "input_text", "text": f"print({i}) [x] {{y}}"}]}
                           for i in range(8000)]}
    else:
        value = {"input": ["[{" * 500] * 600}
    body = json.dumps(value).encode()
    assert 500_000 < len(body) <= 1024 * 1024
    check, parse = _best_of_alternating(lambda b: _depth_exceeds(b, MAX_DEPTH), json.loads, body)
    assert check < 5 * parse, (check, parse)
