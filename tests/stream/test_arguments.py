"""Argument types: good text gives the value, bad text one line that says why."""

import argparse

import pytest

from stream.config.arguments import at_least, finite_number, positive_number, positive_or_endless


def test_whole_numbers_have_a_floor():
    assert at_least(0)("0") == 0
    assert at_least(1)("4096") == 4096
    with pytest.raises(argparse.ArgumentTypeError, match="0 must be >= 1"):
        at_least(1)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"'1\.5' is not a whole number"):
        at_least(1)("1.5")


@pytest.mark.parametrize(("parse", "good", "bad", "why"), [
    (finite_number, ("-2.5", "0"), ("inf", "nan"), "must be finite"),
    (positive_number, ("1e-3", "4e6"), ("0", "-1", "inf"), "must be a finite number > 0"),
    (positive_or_endless, ("0.5", "inf"), ("0", "-3"), "must be > 0"),
])
def test_numbers(parse, good, bad, why):
    for text in good:
        assert parse(text) == float(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse(text)
    with pytest.raises(argparse.ArgumentTypeError, match="is not a number"):
        parse("abc")
