"""The Olist importer on the real shared sample: nothing lost, everything explained."""

from __future__ import annotations

import pandas as pd
import pytest

from data.load import load_data_set
from data.olist import import_olist, write_import


@pytest.fixture(scope="module")
def olist(olist_src, tmp_path_factory):
    result = import_olist(olist_src)
    folder = write_import(result, tmp_path_factory.mktemp("olist"))
    return result, load_data_set(folder)


def test_every_order_is_either_shipped_or_explained(olist, olist_src):
    result, ds = olist
    raw = pd.read_csv(olist_src / "olist_orders_dataset.csv", dtype=str)
    shipped_orders = set(result.tables["shipments"].order_id)
    excluded = set(result.excluded.order_id)
    assert shipped_orders.isdisjoint(excluded)
    assert shipped_orders | excluded == set(raw.order_id)
    assert len(ds["orders"]) == len(raw)  # every purchase stays an order
    assert result.excluded.reason.str.len().gt(0).all()
    assert result.report["excluded_by_reason"]["canceled before handover to the carrier"] > 0


def test_the_imports_own_notes_are_kept_apart_and_read_without_a_warning(olist):
    """The excluded orders and the report sit in ``_import/``, which the contract reader
    passes over: every command on an imported set used to warn about two files the
    import itself wrote."""
    result, ds = olist
    notes = ds.folder / "_import"
    assert len(pd.read_csv(notes / "excluded.csv")) == len(result.excluded)
    assert "excluded_by_reason" in (notes / "report.json").read_text()
    assert not [w for w in ds.warnings if "not a contract table" in w], ds.warnings


def test_only_really_inconsistent_rows_are_quarantined(olist):
    _, ds = olist
    assert set(ds.report["shipments"].by_rule) == {"delivered_at: delivered_at before shipped_at"}
    assert set(ds.report["scans"].by_rule) <= {"shipment_id: scan for a quarantined shipment"}
    for name in ("orders", "feedback", "customers", "locations"):
        assert ds.report[name].quarantined == 0, name


def test_one_shipment_per_order_and_seller(olist, olist_src):
    result, _ = olist
    items = pd.read_csv(olist_src / "olist_order_items_dataset.csv", dtype=str)
    pairs = items.drop_duplicates(["order_id", "seller_id"])
    kept = pairs[pairs.order_id.isin(result.tables["shipments"].order_id)]
    assert len(result.tables["shipments"]) == len(kept)
    multi = result.tables["shipments"].groupby("order_id").size()
    assert (multi > 1).any()
    assert result.tables["shipments"].shipment_id.is_unique


def test_times_are_utc_and_promise_is_end_of_local_day(olist):
    _, ds = olist
    s = ds["shipments"].set_index("order_id")
    row = s.loc["a4591c265e18cb1dcee52889e2d8acc3"]
    # 2017-07-09 21:57:05 in Sao Paulo (UTC-3 in July) and an estimate of 2017-08-01.
    assert row.ordered_at == pd.Timestamp("2017-07-10T00:57:05Z")
    assert row.promised_at == pd.Timestamp("2017-08-02T02:59:59Z")
    assert row.carrier == "olist"


def test_identifiers_keep_leading_zeros_and_customers_are_unique_ids(olist, olist_src):
    _, ds = olist
    postals = ds["shipments"].origin_postal.dropna()
    assert postals.str.len().eq(5).all() and postals.str.startswith("0").any()
    raw_customers = pd.read_csv(olist_src / "olist_customers_dataset.csv", dtype=str)
    assert set(ds["shipments"].customer_id) <= set(raw_customers.customer_unique_id)
    loc = ds["locations"]
    assert {"region", "postal"} == set(loc.kind)
    assert loc[loc.kind == "region"].latitude.between(-34, 5.5).all()


def test_reviews_become_feedback(olist, olist_src):
    _, ds = olist
    reviews = pd.read_csv(olist_src / "olist_order_reviews_dataset.csv", dtype=str)
    assert len(ds["feedback"]) == len(reviews)
    assert ds["feedback"].rating.between(1, 5).all()


def test_values_that_cannot_be_read_set_their_order_aside_with_the_value(olist_src, tmp_path):
    """A time that is not a time or an item number that is not a number: the order is
    listed with the value, never imported with it left empty (a delivery date read as
    none would make a delivered parcel look lost), and a missing column is one line."""
    import csv
    import shutil

    from data.olist import OlistError

    src = tmp_path / "olist"
    shutil.copytree(olist_src, src)
    orders = list(csv.reader(open(src / "olist_orders_dataset.csv")))
    col = {name: i for i, name in enumerate(orders[0])}
    orders[5][col["order_purchase_timestamp"]] = "yesterday"
    orders[6][col["order_delivered_customer_date"]] = "2017-13-45 99:00:00"
    items = list(csv.reader(open(src / "olist_order_items_dataset.csv")))
    items[3][items[0].index("order_item_id")] = "x"
    with open(src / "olist_orders_dataset.csv", "w", newline="") as f:
        csv.writer(f).writerows(orders)
    with open(src / "olist_order_items_dataset.csv", "w", newline="") as f:
        csv.writer(f).writerows(items)
    why = import_olist(src).excluded.set_index("order_id").reason
    assert why[orders[5][0]] == "unreadable order_purchase_timestamp: 'yesterday'"
    assert why[orders[6][0]] == "unreadable order_delivered_customer_date: '2017-13-45 99:00:00'"
    assert why[items[3][0]] == "an item whose order_item_id or price is not a number"
    with open(src / "olist_sellers_dataset.csv", "w", newline="") as f:
        csv.writer(f).writerows([["seller_id", "seller_state"], ["s1", "SP"]])
    with pytest.raises(OlistError, match="olist_sellers_dataset.csv: missing column seller_zip_code_prefix"):
        import_olist(src)
    shutil.copy(olist_src / "olist_sellers_dataset.csv", src)
    (src / "olist_order_reviews_dataset.csv").write_text("")  # an empty file was pandas' traceback
    with pytest.raises(OlistError, match=r"olist_order_reviews_dataset.csv: unreadable \(No columns to parse from file\)"):
        import_olist(src)
    (src / "olist_order_reviews_dataset.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(OlistError, match=r"olist_order_reviews_dataset.csv: unreadable \('utf-8' codec can't decode"):
        import_olist(src)
