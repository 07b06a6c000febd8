from decimal import Decimal

import pytest

from core.quantity import non_negative_quantity, parse_quantity


@pytest.mark.parametrize("text, value", [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Gi", Decimal(2**30)), ("1.5Ti", Decimal("1.5") * 2**40),
    ("1e3", Decimal(1000)), ("100M", Decimal(10**8)), ("250u", Decimal("0.00025")), (".5", Decimal("0.5")),
])
def test_quantities_parse_as_the_api_server_reads_them(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1Gb", "1 Gi", "Gi", "1.2.3", ""])
def test_what_the_api_server_rejects_is_rejected(text):
    with pytest.raises(ValueError, match="Kubernetes quantity"):
        parse_quantity(text)


def test_yaml_numbers_are_accepted_and_negatives_are_not():
    assert non_negative_quantity(4) == "4"
    assert non_negative_quantity(0.5) == "0.5"
    with pytest.raises(ValueError, match="negative"):
        non_negative_quantity("-1")
    with pytest.raises(ValueError):
        non_negative_quantity(True)
