"""A feed document into entries: RSS 0.9x/1.0/2.0 and Atom with feedparser, JSON Feed with json.

feedparser 6.0 (its current release) reads every XML flavour, fixes encodings, resolves
relative links and sanitizes HTML, but not JSON Feed: its JSON support exists only on its
unreleased development branch, and `feedparser.parse()` calls a JSON Feed "not well-formed".
A JSON Feed is already JSON whose fields name what we need (`id`, `url`, `title`, `summary`,
`image`, `tags`, `date_published`), so the stdlib `json` module reads it and a few lines map it.

Only plain data leaves this module; nothing here touches Redis or the network.
"""

from __future__ import annotations

import calendar
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import feedparser

from .errors import FeedProblem

# More entries than any real feed carries; bounds the work one poll can cause.
MAX_ENTRIES = 500
JSON_FEED_VERSION = "https://jsonfeed.org/version/"


@dataclass(frozen=True)
class FeedEntry:
    """One story as the feed describes it."""

    key: str  # guid / id, else the link: the same entry on every poll
    link: str | None
    title: str
    summary: str  # plain text
    image: str | None  # the image the feed names for the entry
    content_image: str | None  # the first <img> of its content: a weaker guess
    categories: tuple[str, ...]
    published: float | None  # Unix time: published, else updated


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    format: str  # feedparser's version ("rss20", "atom10", ...) or "json"
    entries: tuple[FeedEntry, ...]
    # Set when the XML was not well-formed but feedparser's lenient parser still read entries.
    warning: str | None = None


class _TextExtractor(HTMLParser):
    """The text of an HTML fragment, and its first image.

    Written on the stdlib parser because what is at hand does it badly for a notification
    body: MarkupSafe's `striptags` glues paragraphs together ("end.Next") and keeps the text
    of `<script>`; lxml or BeautifulSoup would be a large dependency for these few lines.
    """

    BLOCKS = frozenset({
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure",
        "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
        "section", "table", "td", "th", "tr", "ul",
    })  # fmt: skip
    HIDDEN = frozenset({"script", "style", "template", "noscript", "iframe", "object", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0
        self.image: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append(" ")
        elif tag == "img" and self.image is None:
            self.image = dict(attrs).get("src") or None

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)

    def text(self) -> str:
        return " ".join("".join(self.parts).split())


class _ShareImage(HTMLParser):
    """The image a page names for sharing: `og:image` (Open Graph), else `twitter:image`,
    else `<link rel="image_src">`."""

    NAMES = ("og:image:secure_url", "og:image", "og:image:url", "twitter:image", "twitter:image:src", "image_src")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k: v or "" for k, v in attrs}
        if tag == "meta":
            name = (named.get("property") or named.get("name") or "").strip().lower()
            value = named.get("content", "").strip()
        elif tag == "link" and "image_src" in named.get("rel", "").lower().split():
            name, value = "image_src", named.get("href", "").strip()
        else:
            return
        if name in self.NAMES and value:
            self.found.setdefault(name, value)


def share_image(page: bytes, url: str) -> str | None:
    """The sharing image an article page names (what social networks show), made absolute."""
    parser = _ShareImage()
    parser.feed(page.decode("utf-8", errors="replace"))
    parser.close()
    image = next((parser.found[n] for n in _ShareImage.NAMES if n in parser.found), None)
    return urljoin(url, image) if image else None


def html_text(fragment: str) -> tuple[str, str | None]:
    """(plain text with whitespace collapsed, first `<img src>`) of an HTML fragment."""
    extractor = _TextExtractor()
    extractor.feed(fragment)
    extractor.close()
    return extractor.text(), extractor.image


def _plain(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _text_of(value: object, detail: Mapping[str, Any] | None) -> str:
    """A feedparser text construct as plain text (HTML titles exist, e.g. Atom type="html")."""
    if not isinstance(value, str):
        return ""
    if detail and "html" in str(detail.get("type", "")):
        return html_text(value)[0]
    return _plain(value)


def _distinct(names: Iterable[str]) -> tuple[str, ...]:
    """Non-empty names, first spelling kept, ignoring case (Atom gives term and label)."""
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.strip().casefold(), name.strip())
    return tuple(v for k, v in seen.items() if k)


# -- RSS and Atom (feedparser) -------------------------------------------------------------


def _xml_image(entry: Mapping[str, Any]) -> str | None:
    """media:content (an image), media:thumbnail, an image enclosure, else the entry's own
    image (itunes:image and the like)."""
    for media in entry.get("media_content", []):
        medium, kind = media.get("medium", ""), media.get("type", "")
        if media.get("url") and (medium == "image" or kind.startswith("image/") or not (medium or kind)):
            return media["url"]
    for thumbnail in entry.get("media_thumbnail", []):
        if thumbnail.get("url"):
            return thumbnail["url"]
    for enclosure in entry.get("enclosures", []):
        if enclosure.get("href") and str(enclosure.get("type", "")).startswith("image/"):
            return enclosure["href"]
    image = entry.get("image")
    if isinstance(image, Mapping) and image.get("href"):
        return image["href"]
    return None


def _xml_entry(entry: Mapping[str, Any]) -> FeedEntry | None:
    link = entry.get("link") or None
    key = entry.get("id") or link
    if not key:
        return None
    content = next((c.get("value", "") for c in entry.get("content", []) if c.get("value")), "")
    summary_html = entry.get("summary") or content
    summary, summary_image = html_text(summary_html)
    content_image = html_text(content)[1] if content else None
    categories: list[str] = []
    for tag in entry.get("tags", []):
        categories.extend(v for v in (tag.get("term"), tag.get("label")) if isinstance(v, str) and v.strip())
    when = entry.get("published_parsed") or entry.get("updated_parsed")
    return FeedEntry(
        key=str(key).strip(),
        link=link,
        title=_text_of(entry.get("title"), entry.get("title_detail")),
        summary=summary,
        image=_xml_image(entry),
        content_image=content_image or summary_image,
        categories=_distinct(categories),
        published=float(calendar.timegm(when)) if when else None,
    )


def _parse_xml(body: bytes, content_type: str, url: str) -> ParsedFeed:
    # A BytesIO, never bytes or str: feedparser would treat a string as a path or URL to open.
    parsed = feedparser.parse(
        io.BytesIO(body),
        response_headers={"content-type": content_type or "application/xml", "content-location": url},
    )
    problem = None
    if parsed.get("bozo"):
        problem = str(parsed.get("bozo_exception", "unreadable")).removeprefix("<unknown>:")
    entries = tuple(e for e in map(_xml_entry, parsed.entries[:MAX_ENTRIES]) if e is not None)
    if not entries and (problem or not parsed.get("version")):
        detail = f" ({problem})" if problem else ""
        raise FeedProblem("malformed", f"not a readable RSS, Atom or JSON feed{detail}")
    feed = parsed.get("feed", {})
    return ParsedFeed(
        title=_text_of(feed.get("title"), feed.get("title_detail")) or None,
        format=parsed.get("version") or "unknown",
        entries=entries,
        warning=f"parsed leniently: {problem}" if problem else None,
    )


# -- JSON Feed (stdlib json) -----------------------------------------------------------------


def _json_time(value: object) -> float | None:
    """RFC 3339 as JSON Feed writes it; anything else (or no zone) counts as unknown."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo else moment.replace(tzinfo=UTC).timestamp()


def _json_image(item: Mapping[str, Any]) -> str | None:
    for name in ("image", "banner_image"):
        if isinstance(item.get(name), str) and item[name]:
            return item[name]
    attachments = item.get("attachments")
    for attachment in attachments if isinstance(attachments, list) else []:
        if (
            isinstance(attachment, Mapping)
            and str(attachment.get("mime_type", "")).startswith("image/")
            and isinstance(attachment.get("url"), str)
        ):
            return attachment["url"]
    return None


def _json_entry(item: object, base: str) -> FeedEntry | None:
    if not isinstance(item, Mapping):
        return None
    raw_link = next((item[n] for n in ("url", "external_url") if isinstance(item.get(n), str) and item[n]), None)
    link = urljoin(base, raw_link) if raw_link else None
    raw_id = item.get("id")
    key = str(raw_id).strip() if isinstance(raw_id, str | int) and str(raw_id).strip() else link
    if not key:
        return None
    content_text, content_image = (
        html_text(item["content_html"]) if isinstance(item.get("content_html"), str) else ("", None)
    )
    summary = _plain(item.get("summary")) or _plain(item.get("content_text")) or content_text
    image = _json_image(item)
    tags = item.get("tags")
    return FeedEntry(
        key=key,
        link=link,
        title=_plain(item.get("title")),
        summary=summary,
        image=urljoin(base, image) if image else None,
        content_image=urljoin(base, content_image) if content_image else None,
        categories=_distinct(t for t in (tags if isinstance(tags, list) else []) if isinstance(t, str)),
        published=_json_time(item.get("date_published")) or _json_time(item.get("date_modified")),
    )


def _parse_json(body: bytes, url: str) -> ParsedFeed:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedProblem("malformed", f"not valid JSON ({exc})") from None
    if (
        not isinstance(document, Mapping)
        or not str(document.get("version", "")).startswith(JSON_FEED_VERSION)
        or not isinstance(document.get("items"), list)
    ):
        raise FeedProblem("malformed", f"JSON but not a JSON Feed (needs version {JSON_FEED_VERSION}1.x and items)")
    entries = (_json_entry(item, url) for item in document["items"][:MAX_ENTRIES])
    return ParsedFeed(
        title=_plain(document.get("title")) or None,
        format="json",
        entries=tuple(e for e in entries if e is not None),
    )


def _looks_like_json(body: bytes, content_type: str) -> bool:
    return "json" in content_type.lower() or body.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def parse_feed(body: bytes, content_type: str, url: str) -> ParsedFeed:
    """Entries of an RSS, Atom or JSON feed, in document order.

    Raises:
        FeedProblem: `malformed` when the body is not a feed we can read.
    """
    if _looks_like_json(body, content_type):
        return _parse_json(body, url)
    return _parse_xml(body, content_type, url)
