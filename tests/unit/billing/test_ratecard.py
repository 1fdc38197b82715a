from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest

from neocloud.config import ConfigError
from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.billing.ratecard import RateCard, load_ratecard, parse_ratecard
from tests.unit.billing.factories import CARD_YAML, EXAMPLE_CARD, H100, H200

BASE = """\
prices:
  internal: {"*": "1"}
  on_demand: {"*": "2"}
  spot:
    "NVIDIA H200": "1.40"
"""


def test_example_card_loads_with_plausible_2026_prices() -> None:
    card = load_ratecard(EXAMPLE_CARD)
    assert card.currency == "USD"
    assert card.billing_increment_s == 1
    on_demand = card.gpu_hour_price("on_demand", H200)
    spot = card.gpu_hour_price("spot", H200)
    internal = card.gpu_hour_price("internal", H200)
    assert on_demand == Decimal("3.50")
    assert spot is not None and internal is not None
    assert Decimal("0.3") <= spot / on_demand <= Decimal("0.5")
    assert internal < on_demand
    assert card.gpu_hour_price("on_demand", H100) == Decimal("2.50")
    assert card.gpu_hour_price("internal", "NVIDIA B200") == Decimal("1.65")  # the "*" entry
    assert card.gpu_hour_price("on_demand", "NVIDIA B200") is None
    assert set(card.contracts) == {"acme-h200-2026", "globex-5mw-2026", "globex-demo"}
    assert card.contracts["globex-5mw-2026"].nominal_gpu_w == Decimal(1000)
    assert card.contracts["acme-h200-2026"].where.endswith("line 33")  # the contract id's line


def test_money_is_exact_decimal_from_the_source_text() -> None:
    card = parse_ratecard(
        'prices:\n  internal: {"*": 0.1}\n  on_demand: {"*": 3.3333333333333333333}\n  spot: {"*": 1e1}\n'
        "energy_per_kwh: 1_000.5\n"
    )
    assert card.gpu_hour_price("internal", "x") == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert card.gpu_hour_price("on_demand", "x") == Decimal("3.3333333333333333333")
    assert str(card.gpu_hour_price("spot", "x")) == "10"
    assert card.energy_price("spot") == Decimal("1000.5")
    assert all(type(p) is Decimal for by_model in card.prices.values() for p in by_model.values())


def test_defaults() -> None:
    card = parse_ratecard(BASE)
    assert (card.currency, card.billing_increment_s, dict(card.contracts)) == ("USD", 1, {})
    assert all(card.energy_price(c) == 0 for c in ("internal", "reserved", "on_demand", "spot"))
    terms = parse_ratecard(CARD_YAML).contracts["c-power"]
    assert terms.sla_credit_cap_pct == 100 and terms.included_gpu_hours_per_month is None


def test_card_is_frozen() -> None:
    card = parse_ratecard(BASE)
    assert isinstance(card, RateCard)
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.__setattr__("currency", "EUR")
    with pytest.raises(TypeError):  # a read-only mapping, not a dict
        cast(dict[str, Decimal], card.prices["spot"])["NVIDIA H200"] = Decimal(0)


def test_negative_price_names_file_line_and_field() -> None:
    text = BASE.replace('"1.40"', "'-3'")
    with pytest.raises(ConfigError) as e:
        parse_ratecard(text, source="ratecard.yaml")
    assert str(e.value) == "ratecard.yaml line 5: prices.spot.'NVIDIA H200': '-3' is negative"
    assert isinstance(e.value, InvalidArgumentError)
    assert (e.value.line, e.value.field) == (5, "prices.spot.'NVIDIA H200'")


HOSTILE = [
    # (what, text appended to or replacing BASE, expected line, expected text in the message)
    ("unknown top-level key", BASE + "currnecy: USD\n", 6, "currnecy: unknown key"),
    ("unknown class", BASE + "  spto: {'*': '1'}\n", 6, "prices.spto: unknown key"),
    ("reserved priced per hour", BASE + "  reserved: {'*': '1'}\n", 6, "priced by its contract"),
    ("missing class", BASE.replace('  on_demand: {"*": "2"}\n', ""), 1, "prices: missing required key 'on_demand'"),
    ("model key not a string", BASE + "    200: '1'\n", 6, "key '200' must be a string"),
    ("model with spaces", BASE + "    ' NVIDIA H100': '1'\n", 6, "is not a valid name"),
    ("model pattern", BASE + "    'NVIDIA H*': '1'\n", 6, 'only a lone "*"'),
    ("comma decimal", BASE.replace('"1.40"', '"1,40"'), 5, "'1,40' is not a number"),
    ("currency sign", BASE.replace('"1.40"', '"$1.40"'), 5, "'$1.40' is not a number"),
    ("boolean", BASE.replace('"1.40"', "yes"), 5, "'yes' is not a number"),
    ("nan", BASE.replace('"1.40"', ".nan"), 5, "'.nan' is not a number"),
    ("NaN string", BASE.replace('"1.40"', '"NaN"'), 5, "'NaN' is not a number"),
    ("infinity", BASE.replace('"1.40"', ".inf"), 5, "'.inf' is not a number"),
    ("hex", BASE.replace('"1.40"', "0x10"), 5, "'0x10' is not a number"),
    ("empty price", BASE.replace('"1.40"', ""), 5, "is empty"),
    ("list as price", BASE.replace('"1.40"', "[1, 2]"), 5, "must be a number, not a list"),
    ("duplicate model", BASE + '    "NVIDIA H200": "1.50"\n', 6, "duplicate key 'NVIDIA H200' (first at line 5)"),
    ("duplicate top key", BASE + "prices: {}\n", 6, "duplicate key 'prices' (first at line 1)"),
    ("no models", BASE.replace('  internal: {"*": "1"}', "  internal: {}"), 2, "names no GPU model"),
    ("lower-case currency", "currency: usd\n" + BASE, 1, "is not an ISO 4217 code"),
    ("unknown currency", "currency: XYZ\n" + BASE, 1, "is not an ISO 4217 currency with a minor unit"),
    ("zero increment", "billing_increment_s: 0\n" + BASE, 1, "must be a whole number from 1 to 3600, not '0'"),
    ("fractional increment", "billing_increment_s: 1.5\n" + BASE, 1, "whole number from 1 to 3600, not '1.5'"),
    ("energy class missing", BASE + "energy_per_kwh:\n  spot: '0.1'\n", 6, "energy_per_kwh: missing required key"),
    ("energy unknown class", BASE + "energy_per_kwh:\n  idle: '0.1'\n", 7, "energy_per_kwh.idle: unknown key"),
    ("energy negative", BASE + "energy_per_kwh: -0.1\n", 6, "'-0.1' is negative"),
    ("merge key", BASE + "contracts:\n  c1:\n    <<: {a: 1}\n", 8, "merge keys"),
    ("prices not a mapping", "prices: 3\n", 1, "prices: must be a mapping"),
    ("no prices", "currency: USD\n", 1, "missing required key 'prices'"),
    ("syntax error", BASE + "  spot: [\n", 7, "not valid YAML"),
]
TERMS = (
    BASE
    + """\
contracts:
  c1:
    commitment_per_month: "1000"
    overage_per_gpu_hour: "3"
    sla_credit_per_gpu_hour: "5"
"""
)
HOSTILE += [
    ("terms missing", TERMS.replace('    overage_per_gpu_hour: "3"\n', ""), 7, "contracts.c1: missing required key"),
    ("terms unknown key", TERMS + "    sla_cap_pct: 10\n", 11, "contracts.c1.sla_cap_pct: unknown key"),
    (
        "terms both included and nominal",
        TERMS + "    nominal_gpu_w: 700\n    included_gpu_hours_per_month: 1\n",
        11,
        "not both",
    ),
    ("terms zero nominal draw", TERMS + "    nominal_gpu_w: 0\n", 11, "must be above 0"),
    ("cap above 100", TERMS + "    sla_credit_cap_pct: 150\n", 11, "'150' is above 100"),
    ("negative commitment", TERMS.replace('"1000"', '"-1000"'), 8, "contracts.c1.commitment_per_month: '-1000'"),
    ("terms not a mapping", BASE + "contracts:\n  c1: 5\n", 7, "contracts.c1: must be a mapping"),
]


@pytest.mark.parametrize(("what", "text", "line", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_card_is_refused_with_its_line(what: str, text: str, line: int, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_ratecard(text, source="ratecard.yaml")
    message = str(e.value)
    assert message.startswith(f"ratecard.yaml line {line}: "), message
    assert expected in message, message


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        parse_ratecard("# nothing\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_ratecard(tmp_path / "absent.yaml")
    path = tmp_path / "card.yaml"
    path.write_text("prices: [\n")
    with pytest.raises(ConfigError, match=rf"^{path} line \d+: not valid YAML"):
        load_ratecard(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE + "# " + "x" * (1 << 20) + "\n", "ratecard.yaml: is larger than 1 MiB"),
        (BASE + "contracts: " + "{a: " * 20 + "1" + "}" * 20 + "\n", "nested more than 16 levels deep"),
        (BASE.replace('"1.40"', "!!binary aGVsbG8="), "line 5: prices.spot.'NVIDIA H200': the tag"),
        # int() refuses over 4,300 digits: the text is read as a decimal and bounded, not a traceback.
        (
            BASE.replace('"1.40"', "1" * 5000),
            "line 5: prices.spot.'NVIDIA H200': '" + "1" * 60 + "...' has more than 15",
        ),
        ("- 1\n", "ratecard.yaml line 1: must be a mapping, not a list"),
        # A billion laughs: every alias is a copy, so the values are counted, not the text.
        (
            "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)),
            "more than 100000 values (aliases included)",
        ),
    ],
)
def test_what_no_config_needs_is_refused_before_the_schema(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_ratecard(text, source="ratecard.yaml")
    assert expected in str(e.value)


def test_an_oversized_file_is_read_no_further(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(BASE + "#" * (2 << 20))
    with pytest.raises(ConfigError, match=rf"^{path}: is larger than 1 MiB$"):
        load_ratecard(path)
