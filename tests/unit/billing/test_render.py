from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

from neocloud.domain.errors import InvalidArgumentError
from neocloud.scheduler.billing.adjustments import adjustment_lines
from neocloud.scheduler.billing.invoice import Invoice, LineKind
from neocloud.scheduler.billing.rating import invoice
from neocloud.scheduler.billing.render import (
    CSV_FIELDS,
    invoice_from_json,
    render_csv,
    render_json,
    render_table,
)
from neocloud.scheduler.store.records import ContractShortfall
from tests.unit.billing.factories import (
    CARD_YAML,
    DEC_START,
    H100,
    HOUR_MS,
    KWH_MJ,
    NOV,
    NOV_START,
    card,
    contract,
    row,
)


def sample() -> Invoice:
    """December with a commitment, usage of every kind, energy, a credit and November's adjustments."""
    rows = [
        row("r", "reserved", start=DEC_START, gpu_ms=800 * HOUR_MS, contract="c-gpu", energy_mj=900 * KWH_MJ),
        row("o", start=DEC_START, gpu_ms=1234 * HOUR_MS + 5, energy_mj=KWH_MJ),
        row("s", "spot", start=DEC_START, gpu_ms=HOUR_MS),
        row("h", model=H100, start=DEC_START, gpu_ms=HOUR_MS // 3),
    ]
    nov = [row("a", gpu_ms=HOUR_MS)]
    adj = adjustment_lines(
        invoice("acme", NOV, nov, [], [], card()),
        invoice("acme", NOV, [*nov, row("b", gpu_ms=HOUR_MS)], [], [], card()),
    )
    short = [ContractShortfall("c-gpu", "acme", DEC_START + 3600, 2 * HOUR_MS)]
    contracts = [contract(gpus=1, end=DEC_START + 86400 * 31)]
    return invoice("acme", "2026-12", rows, contracts, short, card(), adjustments=adj)


def test_sample_has_every_kind_of_line() -> None:
    inv = sample()
    assert {ln.kind.value for ln in inv.lines} == {
        "commitment",
        "usage",
        "overage",
        "energy",
        "sla_credit",
        "adjustment",
    }
    assert inv.adjustments == Decimal("3.50")


def test_table_is_aligned_with_header_lines_and_totals() -> None:
    inv = sample()
    text = render_table(inv)
    out = text.splitlines()
    assert out[0] == "Invoice  tenant: acme  period: 2026-12  currency: USD"
    assert out[2].split() == ["Description", "Quantity", "Unit", "Unit", "price", "Amount"]
    body = out[4 : 4 + len(inv.lines)]
    assert len(body) == len(inv.lines)
    assert len({len(x) for x in [out[2], *body]}) == 1  # right-aligned amounts end in one column
    assert out[-4].startswith("Subtotal") and out[-4].endswith(f"{inv.subtotal:,.2f}")
    assert out[-3].startswith("Adjustments") and out[-3].endswith("3.50")
    assert out[-2].startswith("Total USD") and out[-2].endswith(f"{inv.total:,.2f}")
    assert len(out[-2]) == len(out[3])  # totals end under the amounts
    assert out[-1] == f"Rate card: {card().version}"  # the card the lines were priced with
    assert "10,000.00" in text  # thousands separated


def test_empty_invoice_renders() -> None:
    text = render_table(invoice("nobody", NOV, [], [], [], card()))
    assert "(no charges)" in text and text.splitlines()[-1].endswith("0.00")


def test_json_keeps_money_as_strings_in_a_fixed_order() -> None:
    inv = sample()
    text = render_json(inv)
    assert text == render_json(inv)
    doc = json.loads(text)
    assert list(doc) == ["format", "tenant", "period", "currency", "lines", "subtotal", "adjustments", "total"]
    assert list(doc["lines"][0]) == [
        "kind",
        "description",
        "job_class",
        "gpu_model",
        "contract_id",
        "ref_period",
        "ref_kind",
        "quantity",
        "unit",
        "unit_price",
        "amount",
        "rate_version",
    ]
    assert all(isinstance(v, str) for line in doc["lines"] for v in line.values())
    assert doc["total"] == str(inv.total)
    json.loads(text, parse_float=lambda s: pytest.fail(f"a float in invoice JSON: {s}"))


def test_json_round_trip_gives_the_same_invoice() -> None:
    inv = sample()
    back = invoice_from_json(render_json(inv))
    assert back == inv
    assert [ln.amount for ln in back.lines] == [ln.amount for ln in inv.lines]
    assert (back.subtotal, back.total) == (inv.subtotal, inv.total)
    assert all(type(ln.amount) is Decimal for ln in back.lines)


def test_json_with_a_wrong_total_or_shape_is_refused() -> None:
    doc = json.loads(render_json(sample()))
    doc["total"] = str(Decimal(doc["total"]) + Decimal("0.01"))
    with pytest.raises(InvalidArgumentError, match="lines add up to"):
        invoice_from_json(json.dumps(doc))
    doc = json.loads(render_json(sample()))
    doc["lines"][0]["amount"] = 12.5
    with pytest.raises(InvalidArgumentError, match="not an invoice"):
        invoice_from_json(json.dumps(doc))
    with pytest.raises(InvalidArgumentError, match="not an invoice"):
        invoice_from_json("[]")
    with pytest.raises(InvalidArgumentError, match="format"):
        invoice_from_json('{"format": 99}')


def test_an_invoice_issued_in_format_1_reads_back_without_rate_versions() -> None:
    """Invoices issued before lines named their rate card are stored in format 1: they still read."""
    doc = json.loads(render_json(sample()))
    doc["format"] = 1
    for line in doc["lines"]:
        del line["rate_version"]
    back = invoice_from_json(json.dumps(doc))
    assert {ln.rate_version for ln in back.lines} == {""}
    assert back.total == sample().total


def test_every_line_names_the_rate_card_it_was_priced_with() -> None:
    inv = sample()
    own = [ln for ln in inv.lines if ln.kind is not LineKind.ADJUSTMENT]
    assert {ln.rate_version for ln in own} == {card().version} and card().version.startswith("file-")
    assert all(ln.rate_version for ln in inv.lines)  # adjustments name the card of the correction
    assert card(increment_s=60).version != card().version  # another card, another version


def test_money_rounds_and_renders_to_the_currency_minor_unit() -> None:
    """ISO 4217 minor units: one GPU-hour at 1234.5678 is 1,235 JPY, 1,234.57 USD, 1,234.568 KWD
    (the old code gave every currency 2 decimals)."""
    for code, amount in (("JPY", "1235"), ("USD", "1234.57"), ("KWD", "1234.568")):
        yaml = CARD_YAML.replace("currency: USD", f"currency: {code}").replace('"3.50"', '"1234.5678"')
        inv = invoice("acme", NOV, [row("a", gpu_ms=HOUR_MS)], [], [], card(text=yaml))
        assert [str(ln.amount) for ln in inv.lines] == [amount]
        assert str(inv.total) == amount
        assert invoice_from_json(render_json(inv)) == inv
        assert render_table(inv).splitlines()[-2].endswith(f"{Decimal(amount):,}")


def test_csv_has_a_header_and_one_row_per_line() -> None:
    inv = sample()
    records = list(csv.DictReader(io.StringIO(render_csv(inv))))
    assert len(records) == len(inv.lines)
    assert tuple(records[0]) == CSV_FIELDS
    assert {r["tenant"] for r in records} == {"acme"}
    assert sum(Decimal(r["amount"]) for r in records) == inv.total
    assert [r["description"] for r in records] == [ln.description for ln in inv.lines]


def test_nov_start_is_a_utc_month_start() -> None:
    assert NOV_START % 86400 == 0
