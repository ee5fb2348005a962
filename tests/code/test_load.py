"""The contract reader: every rule, with small hand-written bad files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from data.load import ContractError, load_data_set, write_report

SHIP_HEADER = "shipment_id,order_id,customer_id,carrier,service_level,origin_region,destination_region,ordered_at,shipped_at,promised_at,delivered_at,weight_kg,value"
GOOD_SHIP = "S1,O1,C1,ups,ground,CA,NY,2024-11-29T14:03:00Z,2024-11-30T10:00:00Z,2024-12-03,2024-12-02T10:00:00Z,1.5,20"


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text).strip() + "\n")


def shipments(folder: Path, *rows: str) -> None:
    write(folder, "shipments.csv", "\n".join([SHIP_HEADER, GOOD_SHIP, *rows]))


def only_rules(ds, table: str) -> dict[str, int]:
    return ds.report[table].by_rule


def assert_counts_add_up(ds) -> None:
    for name, r in ds.report.items():
        assert r.read == r.accepted + r.quarantined, name
        assert len(ds.tables[name]) == r.accepted
        assert len(ds.quarantine[name]) == r.quarantined


# ------------------------------------------------------------------ normalising


def test_types_are_normalised(tmp_path):
    shipments(tmp_path, "00123,O2,C2,ups,ground,CA,NY,2024-11-29 14:03:00+01:00,,,,,")
    ds = load_data_set(tmp_path)
    s = ds["shipments"]
    assert s.shipment_id.tolist() == ["S1", "00123"]  # identifiers stay strings
    assert str(s.ordered_at.dtype) == "datetime64[us, UTC]"
    assert s.ordered_at[1] == pd.Timestamp("2024-11-29T13:03:00Z")  # offset converted to UTC
    assert s.promised_at[0] == pd.Timestamp("2024-12-03T23:59:59Z")  # bare date = end of day
    assert pd.isna(s.shipped_at[1]) and pd.isna(s.weight_kg[1])  # empty = unknown
    assert ds.total_quarantined == 0


def test_extra_columns_are_ignored_with_a_note(tmp_path):
    write(tmp_path, "shipments.csv", SHIP_HEADER + ",colour\n" + GOOD_SHIP + ",red")
    ds = load_data_set(tmp_path)
    assert ds.report["shipments"].ignored_columns == ["colour"]
    assert "colour" not in ds["shipments"].columns


def test_parquet_tables_with_numeric_ids_and_naive_timestamps(tmp_path):
    df = pd.DataFrame({
        "shipment_id": [1, 2], "order_id": [10, 11], "customer_id": [5, 5], "carrier": ["ups"] * 2,
        "service_level": ["ground"] * 2, "origin_region": ["CA"] * 2, "destination_region": ["NY"] * 2,
        "ordered_at": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 10:00"]),
    })
    df.to_parquet(tmp_path / "shipments.parquet")
    s = load_data_set(tmp_path)["shipments"]
    assert s.shipment_id.tolist() == ["1", "2"]
    assert s.ordered_at[0] == pd.Timestamp("2024-01-01T10:00:00Z")


# ------------------------------------------------------------------ row rules


@pytest.mark.parametrize(
    "row, column, rule",
    [
        ("S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,2024-11-28T10:00:00Z,,,,", "shipped_at", "shipped_at before ordered_at"),
        ("S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,2024-11-30T10:00:00Z,,2024-11-30T09:00:00Z,,", "delivered_at", "delivered_at before shipped_at"),
        ("S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,,,2024-11-28T09:00:00Z,,", "delivered_at", "delivered_at before ordered_at"),
        ("S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,,2024-11-27,,,", "promised_at", "promised_at before ordered_at"),
        ("S1,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,,,,,", "shipment_id", "duplicate shipment_id"),
        ("S2,O2,C1,ups,ground,CA,NY,yesterday,,,,,", "ordered_at", "unparseable timestamp"),
        ("S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,,,,heavy,", "weight_kg", "unparseable number"),
        ("S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,,,,-1,", "weight_kg", "negative weight"),
        ("S2,O2,,ups,ground,CA,NY,2024-11-29T14:00:00Z,,,,,", "customer_id", "required value missing"),
    ],
)
def test_bad_shipment_rows_are_quarantined_with_reason(tmp_path, row, column, rule):
    shipments(tmp_path, row)
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    assert ds.report["shipments"].quarantined == 1
    q = ds.quarantine["shipments"].iloc[0]
    assert (q["_row"], q["_column"], q["_rule"]) == (3, column, rule)  # CSV line 3: header, good row, bad row
    assert ds["shipments"].shipment_id.tolist() == ["S1"]


def test_a_row_breaking_two_rules_is_quarantined_once_with_both(tmp_path):
    shipments(tmp_path, "S1,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,,,,abc,")
    ds = load_data_set(tmp_path)
    q = ds.quarantine["shipments"]
    assert len(q) == 1
    assert set(q._rule[0].split("; ")) == {"unparseable number", "duplicate shipment_id"}
    assert ds.report["shipments"].by_rule == {"weight_kg: unparseable number": 1, "shipment_id: duplicate shipment_id": 1}


def test_scan_rules(tmp_path):
    shipments(tmp_path, "S2,O2,C1,ups,ground,CA,NY,2024-11-29T14:00:00Z,2024-11-28T10:00:00Z,,,,")
    write(tmp_path, "scans.csv", """
        shipment_id,scanned_at,event,region
        S1,2024-11-30T10:00:00Z,picked_up,CA
        S1,2024-11-30T11:00:00Z,teleported,CA
        S9,2024-11-30T11:00:00Z,picked_up,CA
        S2,2024-11-30T11:00:00Z,picked_up,CA
        S1,2024-11-20T11:00:00Z,label_created,CA
        S1,,delivered,NY
    """)
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    assert ds.report["scans"].by_rule == {
        "event: unknown event": 1,
        "shipment_id: scan for an unknown shipment": 1,
        "shipment_id: scan for a quarantined shipment": 1,
        "scanned_at: scanned_at before the shipment's ordered_at": 1,
        "scanned_at: required value missing": 1,
    }
    assert ds["scans"].event.tolist() == ["picked_up"]


def test_scans_of_a_file_whose_every_shipment_fails_are_all_set_aside(tmp_path):
    """With no shipment accepted there is no order time to compare a scan with: every
    scan is set aside for its quarantined shipment (an IndexError before 2026-12-04)."""
    write(tmp_path, "shipments.csv", "\n".join([SHIP_HEADER, GOOD_SHIP.replace("2024-11-29T14:03:00Z", "1732889000")]))
    write(tmp_path, "scans.csv", """
        shipment_id,scanned_at,event,region
        S1,2024-11-30T10:00:00Z,picked_up,CA
        S9,2024-11-30T11:00:00Z,picked_up,CA
    """)
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    assert ds.report["shipments"].by_rule == {"ordered_at: unparseable timestamp": 1}
    assert ds.report["scans"].by_rule == {"shipment_id: scan for a quarantined shipment": 1,
                                          "shipment_id: scan for an unknown shipment": 1}


def test_feedback_rules(tmp_path):
    shipments(tmp_path)
    write(tmp_path, "feedback.csv", """
        order_id,submitted_at,rating,contacts
        O1,2024-12-04T10:00:00Z,5,0
        O1,2024-12-04T10:00:00Z,6,0
        O1,2024-12-04T10:00:00Z,0,
        O1,2024-12-04T10:00:00Z,4.5,
        O1,2024-12-04T10:00:00Z,,-2
        O404,2024-12-04T10:00:00Z,3,
        O1,2024-12-04T10:00:00Z,,
    """)
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    assert ds.report["feedback"].by_rule == {
        "rating: rating outside 1..5": 2,
        "rating: not a whole number": 1,
        "contacts: negative contacts": 1,
        "order_id: feedback for an unknown order": 1,
    }
    assert ds["feedback"].rating.tolist()[0] == 5
    assert str(ds["feedback"].rating.dtype) == "Int64"


def test_orders_customers_locations_rules(tmp_path):
    shipments(tmp_path)
    write(tmp_path, "orders.csv", """
        order_id,customer_id,ordered_at,value
        O1,C1,2024-11-29T14:03:00Z,20
        O1,C1,2024-11-29T14:03:00Z,20
        O2,C1,2024-11-29T14:03:00Z,-5
    """)
    write(tmp_path, "customers.csv", """
        customer_id,region,first_seen_at
        C1,CA,2023-01-01
        C1,CA,2023-01-01
    """)
    write(tmp_path, "locations.csv", """
        key,kind,latitude,longitude
        CA,region,36.8,-119.4
        CA,region,36.8,-119.4
        NY,city,42.9,-75.5
        XX,region,95,0
        YY,region,0,200
    """)
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    assert ds.report["orders"].by_rule == {"order_id: duplicate order_id": 1, "value: negative value": 1}
    assert ds.report["customers"].by_rule == {"customer_id: duplicate customer_id": 1}
    assert ds.report["locations"].by_rule == {
        "key: duplicate key and kind": 1,
        "kind: kind is not region or postal": 1,
        "latitude: latitude outside -90..90": 1,
        "longitude: longitude outside -180..180": 1,
    }


def test_report_and_quarantine_files(tmp_path):
    shipments(tmp_path, "S2,O2,C1,ups,ground,CA,NY,bad,,,,,")
    ds = load_data_set(tmp_path)
    out = write_report(ds)
    q = pd.read_csv(out / "shipments.csv", dtype=str)
    assert q[["_row", "_column", "_rule", "shipment_id"]].values.tolist() == [["3", "ordered_at", "unparseable timestamp", "S2"]]
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["tables"]["shipments"]["read"] == 2
    assert report["tables"]["shipments"]["accepted"] == 1


# ------------------------------------------------------------------ whole-file errors


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "no contract tables found"),
        (lambda d: write(d, "orders.csv", "order_id,customer_id,ordered_at\nO1,C1,2024-01-01"), "required table shipments is missing"),
        (lambda d: write(d, "shipments.csv", "shipment_id,order_id\nS1,O1"), "shipments.csv: missing required columns customer_id, carrier"),
        (lambda d: (d / "shipments.parquet").write_bytes(b"not a parquet file at all"), "shipments.parquet: unreadable"),
        (lambda d: (d / "shipments.csv").write_text(""), "shipments.csv: file is empty"),
        (lambda d: (shipments(d), (d / "shipments.parquet").write_bytes(b"x")), "shipments.parquet and shipments.csv both hold shipments; keep one"),
    ],
)
def test_whole_file_problems_raise_one_clear_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ContractError) as err:
        load_data_set(tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(ContractError, match="folder does not exist"):
        load_data_set(tmp_path / "nope")


def test_a_byte_order_mark_changes_no_id(tmp_path):
    """Excel writes a BOM; "0000001" must stay "0000001" (it became "1", and every scan
    an orphan)."""
    text = "\n".join([SHIP_HEADER, GOOD_SHIP.replace("S1", "0000001", 1)]) + "\n"
    (tmp_path / "shipments.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    write(tmp_path, "scans.csv", "shipment_id,scanned_at,event\n0000001,2024-11-30T11:00:00Z,picked_up")
    ds = load_data_set(tmp_path)
    assert ds["shipments"].shipment_id.tolist() == ["0000001"]
    assert ds.report["scans"].accepted == 1 and ds.total_quarantined == 0


def test_a_misspelt_table_file_is_named_in_a_warning(tmp_path):
    shipments(tmp_path)
    write(tmp_path, "scan.csv", "shipment_id,scanned_at,event\nS1,2024-11-30T11:00:00Z,picked_up")
    ds = load_data_set(tmp_path)
    assert "scan.csv is not a contract table and was not read (did you mean scans.csv?)" in ds.warnings
    assert "scans" not in ds.tables


def test_a_bad_byte_or_a_short_line_costs_one_row_not_the_table(tmp_path):
    """A cell that is not UTF-8 and a line with too few fields are each one quarantined
    row with its line number; the rows around them, before and after, are accepted."""
    rows = [GOOD_SHIP.replace("S1", f"S{i}", 1) for i in range(1, 7)]
    lines = [SHIP_HEADER.encode(), *(r.encode() for r in rows)]
    lines[3] = lines[3].replace(b",ups,", b",u\xffps,")  # line 4: S3's carrier
    lines.insert(5, b"S9,O9,C9")  # line 6: three fields
    (tmp_path / "shipments.csv").write_bytes(b"\n".join(lines) + b"\n")
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    assert ds["shipments"].shipment_id.tolist() == ["S1", "S2", "S4", "S5", "S6"]
    q = ds.quarantine["shipments"]
    assert q["_row"].tolist() == [4, 6]
    assert q["_column"].tolist() == ["carrier", "(row)"]
    assert q["_rule"].tolist() == ["not valid UTF-8", "expected 13 fields, found 3"]
    assert q["_text"].iloc[1] == "S9,O9,C9" and q["carrier"].iloc[0] == "u\ufffdps"
    assert only_rules(ds, "shipments") == {"carrier: not valid UTF-8": 1, "(row): expected 13 fields, found 3": 1}


def test_rows_after_a_short_line_keep_their_own_line_numbers(tmp_path):
    shipments(tmp_path, "S2,O2,C2", GOOD_SHIP.replace("S1", "S3", 1).replace("1.5", "heavy"))
    ds = load_data_set(tmp_path)
    assert_counts_add_up(ds)
    q = ds.quarantine["shipments"]
    assert q[["_row", "_rule"]].values.tolist() == [[3, "expected 13 fields, found 3"], [4, "unparseable number"]]


def test_a_table_as_a_folder_of_parts_reads_as_the_single_file_does(sim_small, tmp_path):
    """Contract 1.1: ``scans/part-00000.parquet``, ...; the same rows and report as one file,
    a bad row quarantined with its part and its row there, and the counts still add up."""
    from data.write import write_data_set

    whole, parted = tmp_path / "whole", tmp_path / "parted"
    write_data_set(sim_small.tables, whole)
    write_data_set(sim_small.tables, parted, parts=3)
    assert sorted(p.name for p in (parted / "scans").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    scans = pd.read_parquet(parted / "scans" / "part-00001.parquet")
    scans["event"] = scans["event"].astype("str")
    scans.loc[5, "event"] = "teleported"
    scans.to_parquet(parted / "scans" / "part-00001.parquet", index=False)

    a, b = load_data_set(whole), load_data_set(parted)
    for name in a.tables:
        assert b.report[name].read == a.report[name].read == b.report[name].accepted + b.report[name].quarantined
    pd.testing.assert_frame_equal(b["shipments"], a["shipments"])
    assert len(b["scans"]) == len(a["scans"]) - 1
    bad = b.quarantine["scans"]
    assert bad[["_part", "_row", "_column"]].values.tolist() == [["part-00001.parquet", 5, "event"]]
    assert b.report["scans"].file == "scans/"
    assert not any("scans" in w for w in b.warnings), b.warnings


def test_parts_that_disagree_or_a_table_given_twice_are_one_clear_error(sim_small, tmp_path):
    from data.write import write_data_set

    write_data_set(sim_small.tables, tmp_path, parts=2)
    odd = pd.read_parquet(tmp_path / "scans" / "part-00001.parquet").drop(columns=["region"])
    odd.to_parquet(tmp_path / "scans" / "part-00001.parquet", index=False)
    with pytest.raises(ContractError, match=r"part-00001.parquet: its columns differ from those of part-00000.parquet"):
        load_data_set(tmp_path)
    sim_small.tables["scans"].head(3).to_parquet(tmp_path / "scans.parquet")
    with pytest.raises(ContractError, match="scans.parquet and scans both hold scans; keep one"):
        load_data_set(tmp_path)
    (tmp_path / "scans.parquet").unlink()
    for part in (tmp_path / "scans").iterdir():
        part.unlink()
    with pytest.raises(ContractError, match="must hold Parquet parts"):
        load_data_set(tmp_path)
