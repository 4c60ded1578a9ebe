"""External text never becomes live Slack markup (issue 12 point 9).

Slack's formatting docs: in mrkdwn, ``&``, ``<`` and ``>`` are control characters (``<!channel>``
pings, ``<url|label>`` links). Every piece of text from outside must be escaped, and only http(s)
URLs may become links.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import REF, T0, InMemoryCloudRun, RecordingNotifier, alert, rev, state

from controller.adapters.policy_files import load_policies
from controller.app.engine import Controller
from controller.app.manual import ManualControl
from controller.app.settings import Settings
from controller.core.messages import SlackMessage
from controller.core.mrkdwn import escape, link, safe_url

ROOT = Path(__file__).resolve().parent.parent.parent
REVS = [rev("checkout-00040-aaa", 1), rev("checkout-00041-abc", 2), rev("checkout-00042-xyz", 3)]
PHISH = "https://console.cloud.google.com/x|Confirm> <!channel> <https://evil.example|Undo"


def mrkdwn_texts(message: SlackMessage) -> list[str]:
    """Every string Slack parses as mrkdwn: the fallback text and each mrkdwn object."""
    out = [message.text]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(list(message.blocks))
    return out


def live_links(text: str) -> list[str]:
    """What Slack would treat as control sequences: every ``<…>``."""
    found, start = [], text.find("<")
    while start != -1:
        end = text.find(">", start)
        if end == -1:
            break
        found.append(text[start + 1 : end])
        start = text.find("<", end)
    return found


def rollback_message(**changes: str) -> SlackMessage:
    run, notes = InMemoryCloudRun(state(REVS)), RecordingNotifier()
    ctl = Controller(Settings(), run, notes, policies=load_policies(ROOT / "policies"), clock=lambda: T0)
    ctl.handle_alert(alert().model_copy(update=changes))
    (message,) = notes.messages
    return message


def test_incident_url_cannot_ping_the_channel_or_add_a_link() -> None:
    message = rollback_message(url=PHISH, condition_name="<!here> & co", incident_id="0.x<!everyone>")
    for text in mrkdwn_texts(message):
        for inner in live_links(text):
            assert not inner.startswith(("!", "@", "#")), inner
            assert "evil.example" not in inner
    context = next(b for b in message.blocks if b["type"] == "context")["elements"][0]["text"]
    # A URL with spaces is not a URL: shown as escaped text, only the console link stays.
    assert [x.split("|")[1] for x in live_links(context)] == ["Cloud Run console"]
    assert "Incident 0.x&lt;!everyone&gt;" in context


def test_a_url_cannot_close_its_link_early() -> None:
    url = "https://console.cloud.google.com/x|Confirm><!channel><https://evil.example|Undo"
    message = rollback_message(url=url)
    context = next(b for b in message.blocks if b["type"] == "context")["elements"][0]["text"]
    incident, console = live_links(context)
    target, label = incident.split("|")  # exactly one separator: the label is ours
    assert target.startswith("https://console.cloud.google.com/x%7CConfirm%3E%3C!channel%3E")
    assert label == "Incident 0.inc1"
    assert console.endswith("|Cloud Run console")


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "slack://channel?id=C1", "ftp://example.com/x", "https:///nohost", "https://a b.example/"],
)
def test_only_http_urls_are_linked(url: str) -> None:
    assert safe_url(url) is None
    assert link(url, "Incident <1>") == "Incident &lt;1&gt;"


def test_escape_follows_slacks_three_characters() -> None:
    assert escape("a & b <!channel> > c") == "a &amp; b &lt;!channel&gt; &gt; c"
    assert safe_url("https://example.com/?a=1&b=2") == "https://example.com/?a=1&amp;b=2"


def test_manual_reason_with_markup_is_posted_escaped() -> None:
    run, notes = InMemoryCloudRun(state(REVS)), RecordingNotifier()
    control = ManualControl(run, notes, lambda: T0 + timedelta(minutes=1), Settings())
    control.hold(REF, actor="api:<!channel>@example.com", reason="freeze <!channel> <https://evil.example|docs>")
    (message,) = notes.messages
    for text in mrkdwn_texts(message):
        for inner in live_links(text):
            assert not inner.startswith(("!", "@")), inner
            assert "evil.example" not in inner
    assert any("freeze &lt;!channel&gt;" in text for text in mrkdwn_texts(message))
