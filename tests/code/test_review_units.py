"""Review page pieces without a server: sessions, spreadsheet-safe export, link keys."""

from __future__ import annotations

import pandas as pd

from serving.review import customer_key, new_session, session_valid, spreadsheet_safe


def test_a_session_expires_and_belongs_to_its_token(monkeypatch):
    monkeypatch.setenv("EDDY_REVIEW_SESSION_HOURS", "1")
    cookie = new_session("token", now=1_000_000)
    assert session_valid(cookie, "token", now=1_000_000 + 3599)
    assert not session_valid(cookie, "token", now=1_000_000 + 3601)
    assert not session_valid(cookie, "another token", now=1_000_000)
    assert not session_valid("", "token") and not session_valid("ünïcode.1.abc", "token")


def test_the_export_defuses_formulas_in_text_but_keeps_numbers():
    table = pd.DataFrame({"customer_id": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "plain", None],
                          "days_late": [-1.5, 2.0, 0.0, 1.0, 3.0, None]})
    safe = spreadsheet_safe(table)
    assert safe.customer_id.tolist()[:5] == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)", "plain"]
    assert pd.isna(safe.customer_id.iloc[5])
    assert safe.days_late.iloc[0] == -1.5


def test_customer_links_are_stable_across_processes_and_follow_the_configured_key(tmp_path, monkeypatch):
    monkeypatch.setenv("EDDY_SCORES_DIR", str(tmp_path))
    monkeypatch.delenv("EDDY_LINK_KEY", raising=False)
    first = customer_key("C1")
    assert (tmp_path / ".link-key").exists() and customer_key("C1") == first != customer_key("C2")
    monkeypatch.setenv("EDDY_LINK_KEY", "configured")
    assert customer_key("C1") != first and customer_key("C1") == customer_key("C1")
