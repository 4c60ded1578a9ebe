"""Slack ``mrkdwn`` safety: escape text that came from outside, link only http(s) URLs.

Slack's formatting reference ("Formatting text for app surfaces", *Escaping text*) says that in
``mrkdwn`` text ``&``, ``<`` and ``>`` are control characters: ``<!channel>`` pings a channel,
``<https://x|label>`` is a link, ``<@U123>`` a mention. So every piece of text the controller did
not write itself (an incident's URL, summary or condition name, a label, a revision name, a human's
``reason``, a Slack user's display name) goes through :func:`escape` (``&amp;``, ``&lt;``, ``&gt;``)
before it is placed in a ``mrkdwn`` field or in a message's ``text``. ``plain_text`` objects (the
header) are never parsed, so they are left alone.

A URL becomes a link only if it is ``http`` or ``https`` with a host and no whitespace; in it,
``&`` is written as ``&amp;`` (as Slack writes it) and ``|``, ``<``, ``>`` are percent-encoded, so
the URL cannot end the link early and smuggle in a label or a second link. Anything else is shown
as escaped text, not linked.

Pure: no I/O.
"""

from __future__ import annotations

import urllib.parse

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_URL_QUOTES = str.maketrans({"&": "&amp;", "|": "%7C", "<": "%3C", ">": "%3E"})
_MAX_URL_CHARS = 2000


def escape(text: str) -> str:
    """``text`` with Slack's three control characters escaped (``&`` first, as the docs order it)."""
    return text.translate(_ESCAPES)


def safe_url(url: str) -> str | None:
    """``url`` ready to go inside ``<…|…>``, or None when it must not be linked (not http(s), no host)."""
    if not url or len(url) > _MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 or c == "\x7f" for c in url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: Slack would refuse the whole message
        return None
    return url.translate(_URL_QUOTES)


def link(url: str, label: str) -> str:
    """``<url|label>`` for an http(s) URL; otherwise the label alone (escaped)."""
    safe = safe_url(url)
    return f"<{safe}|{escape(label)}>" if safe else escape(label)
