import math

import pytest

from memsim import units


@pytest.mark.parametrize("text, kind, expected", [
    ("3.35 TB/s", "bandwidth", 3.35e12),
    ("80 GiB", "bytes", 80 * 2**30),
    ("80GB", "bytes", 80e9),
    ("989 TFLOP/s", "flops", 989e12),
    ("989 TFLOPS", "flops", 989e12),
    ("600 ns", "time", 600e-9),
    ("2 us", "time", 2e-6),
    ("1.98 GHz", "frequency", 1.98e9),
    ("512 B", "bytes", 512.0),
    ("25.6 GiB/s", "bandwidth", 25.6 * 2**30),
    (1024, "bytes", 1024.0),
])
def test_parse(text, kind, expected):
    assert math.isclose(units.parse(text, kind), expected, rel_tol=1e-12)


@pytest.mark.parametrize("text, kind", [("3.35 TB", "bandwidth"), ("80 GHz", "bytes"), ("fast", "time"),
                                         ("1.2.3 GB", "bytes"), (True, "bytes"), ("nan GB", "bytes")])
def test_parse_rejects_wrong_forms(text, kind):
    with pytest.raises(ValueError, match="expected e.g."):
        units.parse(text, kind)


def test_negative_is_rejected_with_the_expected_form():
    with pytest.raises(ValueError, match="negative"):
        units.parse("-1 GiB", "bytes")


def test_format_round_trip_is_readable():
    assert units.format_bytes(80 * 2**30) == "80 GiB"
    assert units.format_bandwidth(3.35e12) == "3.35 TB/s"
    assert units.format_time(4.5e-3) == "4.5 ms"
