"""RECEIVER_NOTIFY_URLS: reading the Apprise URLs out of one variable, and loading each.

The URLs are secrets (a Slack or Teams URL is its webhook's token): nothing here returns,
logs or raises their text. Apprise itself logs a URL it cannot load, at ERROR on its
`apprise` logger; while one is loaded here that logger is held silent, and the service's
logging withholds the text of its lines at any other time (QUOTING_LIBRARIES).
"""

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import apprise

# Whitespace separates URLs; so does a comma, but only before the next URL's scheme (or at
# the end): a comma inside one is its own (mailto's `?to=a@x.com,b@y.com`). Whitespace is
# split first: one pattern for both backtracked over a run of spaces after a comma, in
# quadratic time (40,000 spaces took 5.7 s).
_COMMA = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.-]*://|$)")
# Each message goes to every URL at once, each from a thread of its own: a handful of chat
# channels and mailboxes is the use, and twenty threads a message is the most we start. It
# also bounds the notifier's live threads: one per URL at most, a try abandoned past its bound
# included (the URL's next try fails as Busy while that thread lives).
MAX_NOTIFY_URLS = 20
# Above ERROR's DEPRECATION WARNING (ERROR + 1), the highest level Apprise logs at.
_SILENT = logging.CRITICAL + 1


def split_notify_urls(text: str) -> list[str]:
    return [url for word in text.split() for url in _COMMA.split(word) if url]


def scheme_of(url: str) -> str:
    """What may be shown of a URL: its service's scheme (`json`, `slack`), never the rest."""
    return url.partition("://")[0].lower()


@contextmanager
def _apprise_silenced() -> Iterator[None]:
    logger = logging.getLogger("apprise")
    level = logger.level
    logger.setLevel(_SILENT)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_service(url: str) -> "apprise.Apprise | None":
    """An Apprise object sending to `url` alone (so its result is that URL's), or None
    when Apprise has no service for it.

    Without Apprise's own per-service deadline (`service_timeout=0`; 60 s by default): with
    one, Apprise sends from its shared thread pool, whose threads the interpreter waits for at
    exit, so a hanging service held the process's exit. Without it, it sends from the calling
    thread, the notifier's daemon thread, which bounds each try itself (ATTEMPT_SECONDS)."""
    # Imported when a URL is loaded: Apprise takes 0.15 s to import (measured), which every
    # command and start-up without notification URLs would pay for nothing.
    import apprise

    asset = apprise.AppriseAsset(service_timeout=0)
    with _apprise_silenced():
        service = apprise.Apprise.instantiate(url, asset=asset)
    if service is None:
        return None
    sender = apprise.Apprise(asset=asset)
    sender.add(service)
    return sender


def check_notify_urls(urls: list[str]) -> None:
    """A ValueError naming the first URL Apprise cannot send to by its position, 1 first."""
    if len(urls) > MAX_NOTIFY_URLS:
        raise ValueError(f"give at most {MAX_NOTIFY_URLS} URLs")
    for position, url in enumerate(urls, start=1):
        if load_service(url) is None:
            raise ValueError(f"URL {position} is not a URL Apprise can send to")
