"""Feed documents shaped like the real ones publishers serve, built from a list of items.

- `ghost_rss`: Ghost's /rss/ (RSS 2.0, CDATA, media:content, object-id guids, categories).
- `wordpress_rss`: WordPress's /feed/ (RSS 2.0, `?p=N` guids, CDATA categories, content:encoded
  with the featured image only as an <img>, sy:updatePeriod, dc:creator).
- `substack_rss`: Substack's /feed (RSS 2.0, the cover image as an enclosure).
- `atom`: Atom 1.0 (category term/label, rel=alternate links, media:thumbnail, html summary).
- `json_feed`: JSON Feed 1.1.
- `rss1`: RSS 1.0 (RDF) and `rss091`: RSS 0.91, for the old formats.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from html import escape


@dataclass
class Item:
    key: str
    title: str
    link: str
    summary: str = "<p>A summary with <b>markup</b> &amp; an entity.</p>"
    categories: list[str] = field(default_factory=list)
    image: str | None = None
    published: float = field(default_factory=time.time)


def numbered(n: int, prefix: str, heading: str, **changes: object) -> Item:
    """Entry `n` of a test feed: id `{prefix}-{n}`, its own link and image, category Animals,
    published `n` seconds after ten minutes ago (so higher numbers are newer)."""
    fields = {"key": f"{prefix}-{n}", "title": f"{heading} {n}", "link": f"https://publisher.example/{prefix}-{n}/",
              "categories": ["Animals"], "image": f"https://publisher.example/img/{prefix}-{n}.jpg",
              "published": time.time() - 600 + n}  # fmt: skip
    return Item(**{**fields, **changes})  # type: ignore[arg-type]


def _rfc822(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cdata(text: str) -> str:
    return f"<![CDATA[{text}]]>"


def ghost_rss(items: list[Item], title: str = "The Publisher") -> str:
    entries = "".join(
        f"""
    <item>
      <title>{_cdata(i.title)}</title>
      <description>{_cdata(i.summary)}</description>
      <link>{escape(i.link)}</link>
      <guid isPermaLink="false">{escape(i.key)}</guid>
      {"".join(f"<category>{_cdata(c)}</category>" for c in i.categories)}
      <dc:creator>{_cdata("Staff Writer")}</dc:creator>
      <pubDate>{_rfc822(i.published)}</pubDate>
      {f'<media:content url="{escape(i.image)}" medium="image"/>' if i.image else ""}
      <content:encoded>{_cdata(i.summary + "<p>The rest of the story.</p>")}</content:encoded>
    </item>"""
        for i in items
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:atom="http://www.w3.org/2005/Atom" version="2.0" xmlns:media="http://search.yahoo.com/mrss/">
  <channel>
    <title>{_cdata(title)}</title>
    <description>{_cdata("Thoughts, stories and ideas.")}</description>
    <link>https://publisher.example/</link>
    <generator>Ghost 5.80</generator>
    <lastBuildDate>{_rfc822(time.time())}</lastBuildDate>
    <atom:link href="https://publisher.example/rss/" rel="self" type="application/rss+xml"/>
    <ttl>60</ttl>{entries}
  </channel>
</rss>
"""


def _figure(item: Item) -> str:
    return f'<figure><img src="{item.image}" alt=""/></figure>' if item.image else ""


def wordpress_rss(items: list[Item], title: str = "Publisher News") -> str:
    entries = "".join(
        f"""
	<item>
		<title>{escape(i.title)}</title>
		<link>{escape(i.link)}</link>
		<comments>{escape(i.link)}#respond</comments>
		<dc:creator><![CDATA[editor]]></dc:creator>
		<pubDate>{_rfc822(i.published)}</pubDate>
		{"".join(f"<category><![CDATA[{c}]]></category>" for c in i.categories)}
		<guid isPermaLink="false">{escape(i.key)}</guid>
		<description><![CDATA[{i.summary} [&#8230;]]]></description>
		<content:encoded><![CDATA[{_figure(i)}{i.summary}]]></content:encoded>
		<wfw:commentRss>{escape(i.link)}feed/</wfw:commentRss>
		<slash:comments>0</slash:comments>
	</item>"""
        for i in items
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"
	xmlns:content="http://purl.org/rss/1.0/modules/content/"
	xmlns:wfw="http://wellformedweb.org/CommentAPI/"
	xmlns:dc="http://purl.org/dc/elements/1.1/"
	xmlns:atom="http://www.w3.org/2005/Atom"
	xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"
	xmlns:slash="http://purl.org/rss/1.0/modules/slash/"
	>

<channel>
	<title>{escape(title)}</title>
	<atom:link href="https://news.publisher.example/feed/" rel="self" type="application/rss+xml" />
	<link>https://news.publisher.example</link>
	<description>Just another WordPress site</description>
	<lastBuildDate>{_rfc822(time.time())}</lastBuildDate>
	<language>en-GB</language>
	<sy:updatePeriod>hourly</sy:updatePeriod>
	<sy:updateFrequency>1</sy:updateFrequency>
	<generator>https://wordpress.org/?v=6.5.2</generator>{entries}
</channel>
</rss>
"""


def substack_rss(items: list[Item], title: str = "The Letter") -> str:
    entries = "".join(
        f"""<item><title><![CDATA[{i.title}]]></title><description><![CDATA[{i.summary}]]></description>"""
        f"""<link>{escape(i.link)}</link><guid isPermaLink="false">{escape(i.key)}</guid>"""
        f"""<dc:creator><![CDATA[The Author]]></dc:creator><pubDate>{_rfc822(i.published)}</pubDate>"""
        + (f'<enclosure url="{escape(i.image)}" length="0" type="image/jpeg"/>' if i.image else "")
        + f"""<content:encoded><![CDATA[{i.summary}]]></content:encoded></item>"""
        for i in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:atom="http://www.w3.org/2005/Atom" '
        'version="2.0" xmlns:cc="http://cyber.law.harvard.edu/rss/creativeCommonsRssModule.html">'
        f"<channel><title><![CDATA[{title}]]></title><description><![CDATA[A newsletter]]></description>"
        "<link>https://letter.substack.example</link><generator>Substack</generator>"
        f"<lastBuildDate>{_rfc822(time.time())}</lastBuildDate>{entries}</channel></rss>"
    )


def atom(items: list[Item], title: str = "Atom Publisher") -> str:
    entries = "".join(
        f"""
  <entry>
    <title type="html">{escape(i.title)}</title>
    <link rel="alternate" type="text/html" href="{escape(i.link)}"/>
    <link rel="replies" type="application/atom+xml" href="{escape(i.link)}/comments.atom"/>
    <id>{escape(i.key)}</id>
    <published>{_rfc3339(i.published)}</published>
    <updated>{_rfc3339(i.published)}</updated>
    <author><name>Desk</name></author>
    {"".join(f'<category term="{escape(c.lower())}" label="{escape(c)}"/>' for c in i.categories)}
    {f'<media:thumbnail url="{escape(i.image)}" width="1200" height="675"/>' if i.image else ""}
    <summary type="html">{escape(i.summary)}</summary>
  </entry>"""
        for i in items
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/" xml:lang="en">
  <title>{escape(title)}</title>
  <link href="https://atom.publisher.example/" rel="alternate"/>
  <link href="https://atom.publisher.example/feed.atom" rel="self"/>
  <id>tag:atom.publisher.example,2024:feed</id>
  <updated>{_rfc3339(time.time())}</updated>{entries}
</feed>
"""


def json_feed(items: list[Item], title: str = "JSON Publisher") -> str:
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": title,
            "home_page_url": "https://json.publisher.example/",
            "feed_url": "https://json.publisher.example/feed.json",
            "items": [
                {
                    "id": i.key,
                    "url": i.link,
                    "title": i.title,
                    "content_html": i.summary,
                    "date_published": _rfc3339(i.published),
                    "tags": i.categories,
                    **({"image": i.image} if i.image else {}),
                }
                for i in items
            ],
        }
    )


def rss1(items: list[Item], title: str = "RDF Publisher") -> str:
    entries = "".join(
        f"""<item rdf:about="{escape(i.link)}"><title>{escape(i.title)}</title><link>{escape(i.link)}</link>"""
        f"""<description>{escape(i.summary)}</description><dc:date>{_rfc3339(i.published)}</dc:date>"""
        + "".join(f"<dc:subject>{escape(c)}</dc:subject>" for c in i.categories)
        + "</item>"
        for i in items
    )
    return (
        '<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<channel rdf:about="https://rdf.publisher.example/"><title>{escape(title)}</title>'
        "<link>https://rdf.publisher.example/</link><description>RDF</description></channel>"
        f"{entries}</rdf:RDF>"
    )


def rss091(items: list[Item], title: str = "Old Publisher") -> str:
    entries = "".join(
        f"<item><title>{escape(i.title)}</title><link>{escape(i.link)}</link>"
        f"<description>{escape(i.summary)}</description></item>"
        for i in items
    )
    return (
        '<?xml version="1.0"?><rss version="0.91"><channel><title>'
        f"{escape(title)}</title><link>https://old.publisher.example/</link>"
        f"<description>Old</description><language>en</language>{entries}</channel></rss>"
    )


# Truncated mid-document, with an unescaped ampersand: what a crashed PHP template serves.
MALFORMED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Broken & Co</title>
<item><title>Half a story</titl
"""

HTML_PAGE = "<!doctype html><html><head><title>Not a feed</title></head><body><p>Hello</p></body></html>"
