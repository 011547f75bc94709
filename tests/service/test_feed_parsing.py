"""Feed documents to entries, and entries to stories: formats, text, images, ids and topics."""

from __future__ import annotations

import json
import time

import pytest

from service.errors import FeedProblem
from service.feed_parsing import html_text, parse_feed, share_image
from service.feed_stories import EntrySkipped, TopicMatcher, entry_story, story_id_for
from service.topics import parse_topics
from service.validation import StoryData
from tests.helpers import feed_documents as docs
from tests.helpers.feed_documents import Item

CATALOGUE = parse_topics(None)
KNOWN = frozenset(t.id_ for t in CATALOGUE)
NOW = time.time()
WALRUS = Item(
    key="tag:publisher.example,2024:walrus",
    title="Viewers Are Being Broken By The Walrus Scene",
    link="https://publisher.example/news/walrus/",
    summary="<p>The director said it was <em>the hardest thing</em> I&#8217;ve filmed.</p><p>Second &amp; last.</p>",
    categories=["Animals", "TV and Film"],
    image="https://publisher.example/img/walrus.jpg",
    published=NOW - 120,
)
PLAIN = Item(key="https://publisher.example/?p=42", title="Budget day", link="https://publisher.example/budget/",
             categories=["News"], published=NOW - 7200)  # fmt: skip
XML_FORMATS = [docs.ghost_rss, docs.wordpress_rss, docs.substack_rss, docs.atom, docs.json_feed]


def parse(document: str, content_type: str = ""):
    return parse_feed(document.encode(), content_type, "https://publisher.example/feed")


@pytest.mark.parametrize("build", XML_FORMATS, ids=lambda f: f.__name__)
def test_each_format_gives_id_title_text_link_image_and_date(build):
    parsed = parse(build([WALRUS, PLAIN]))
    walrus, plain = parsed.entries
    assert walrus.key == WALRUS.key and plain.key == PLAIN.key
    assert walrus.title == WALRUS.title and walrus.link == WALRUS.link
    assert walrus.summary.startswith("The director said it was the hardest thing I\u2019ve filmed. Second & last.")
    assert (walrus.image or walrus.content_image) == WALRUS.image
    assert plain.image is None and plain.content_image is None
    assert walrus.published == pytest.approx(int(WALRUS.published), abs=1)
    assert parsed.title and parsed.warning is None


@pytest.mark.parametrize(
    ("build", "version"),
    [(docs.ghost_rss, "rss20"), (docs.atom, "atom10"), (docs.json_feed, "json"), (docs.rss1, "rss10"),
     (docs.rss091, "rss091u")],
)  # fmt: skip
def test_formats_are_recognised(build, version):
    assert parse(build([WALRUS])).format == version


def test_old_formats_fall_back_to_the_link_as_id():
    for build in (docs.rss1, docs.rss091):
        (entry,) = parse(build([WALRUS])).entries
        assert entry.key == WALRUS.link and entry.title == WALRUS.title


def test_categories_come_from_rss_atom_and_json_tags():
    assert parse(docs.wordpress_rss([WALRUS])).entries[0].categories == ("Animals", "TV and Film")
    assert parse(docs.json_feed([WALRUS])).entries[0].categories == ("Animals", "TV and Film")
    assert parse(docs.rss1([WALRUS])).entries[0].categories == ("Animals", "TV and Film")
    # Atom's term and label name the same category once.
    assert parse(docs.atom([WALRUS])).entries[0].categories == ("animals", "tv and film")


def test_wordpress_featured_image_is_found_in_the_content():
    (entry,) = parse(docs.wordpress_rss([WALRUS])).entries
    assert entry.image is None and entry.content_image == WALRUS.image  # only an <img> in content:encoded


def test_image_sources_in_order_of_preference():
    document = """<?xml version="1.0"?><rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/">
    <channel><title>t</title>
    <item><guid>a</guid><link>https://p.example/a</link><title>A</title>
      <media:content url="https://p.example/video.mp4" medium="video"/>
      <media:thumbnail url="https://p.example/thumb.jpg"/>
      <enclosure url="https://p.example/enc.jpg" type="image/jpeg" length="1"/></item>
    <item><guid>b</guid><link>https://p.example/b</link><title>B</title>
      <enclosure url="https://p.example/podcast.mp3" type="audio/mpeg" length="1"/>
      <enclosure url="https://p.example/cover.png" type="image/png" length="1"/></item>
    <item><guid>c</guid><link>https://p.example/c</link><title>C</title>
      <description>&lt;p&gt;Text &lt;img src="/relative.jpg"&gt;&lt;/p&gt;</description></item>
    </channel></rss>"""
    a, b, c = parse(document).entries
    assert a.image == "https://p.example/thumb.jpg"  # the video is no image; the thumbnail is
    assert b.image == "https://p.example/cover.png"
    assert c.image is None and c.content_image == "https://publisher.example/relative.jpg"  # resolved


def test_json_feed_details():
    document = json.dumps({
        "version": "https://jsonfeed.org/version/1",
        "title": "J",
        "items": [
            {"id": 7, "url": "/posts/7", "title": "Seven", "summary": "Plain summary.", "content_html": "<p>x</p>",
             "attachments": [{"url": "https://p.example/a.jpg", "mime_type": "image/jpeg"}],
             "date_modified": "2024-05-01T10:00:00+02:00"},
            {"url": "https://p.example/no-id", "content_text": "Only text", "banner_image": "https://p.example/b.jpg"},
            {"title": "no id, no url: dropped"},
            "not an object",
        ],
    })  # fmt: skip
    seven, no_id = parse(document, "application/feed+json").entries
    assert (seven.key, seven.link, seven.summary) == ("7", "https://publisher.example/posts/7", "Plain summary.")
    assert seven.image == "https://p.example/a.jpg"
    assert seven.published == 1714550400.0
    assert (no_id.key, no_id.summary) == ("https://p.example/no-id", "Only text")
    assert no_id.image == "https://p.example/b.jpg"


@pytest.mark.parametrize(
    ("document", "content_type"),
    [(docs.MALFORMED, "application/rss+xml"), (docs.HTML_PAGE, "text/html"), ('{"items": []}', "application/json"),
     ("{truncated", "application/feed+json"), ("", "application/rss+xml"), ("\x00\xff garbage", "")],
)  # fmt: skip
def test_unreadable_documents_are_malformed(document, content_type):
    with pytest.raises(FeedProblem) as caught:
        parse(document, content_type)
    assert caught.value.reason == "malformed"


def test_an_empty_feed_is_fine():
    parsed = parse(docs.ghost_rss([]))
    assert parsed.entries == () and parsed.format == "rss20"


def test_feedparser_never_reads_a_local_file_named_by_the_body():
    with pytest.raises(FeedProblem):
        parse("/etc/hostname")


def test_share_image_of_an_article_page():
    page = b"""<!doctype html><html><head><meta name="twitter:image" content="https://cdn.example/tw.jpg">
      <meta property="og:image" content="/img/og.jpg"><meta property="og:title" content="x"></head>
      <body><img src="https://cdn.example/inline.jpg"></body></html>"""
    assert share_image(page, "https://publisher.example/news/a/") == "https://publisher.example/img/og.jpg"
    assert share_image(b'<link rel="image_src" href="https://cdn.example/s.jpg">', "https://p.example/") == (
        "https://cdn.example/s.jpg"
    )
    assert share_image(b"<html><head><title>none</title></head></html>", "https://p.example/") is None


def test_html_to_text_keeps_words_apart_and_drops_scripts():
    text, image = html_text(
        "<div><h2>Head</h2><p>One&nbsp;&amp;<br>two</p><script>alert('x')</script><style>p{}</style>"
        "<ul><li>a</li><li>b</li></ul><img src='https://p.example/i.jpg'><img src='https://p.example/2.jpg'></div>"
    )
    assert text == "Head One & two a b"  # &nbsp; too becomes a plain space
    assert image == "https://p.example/i.jpg"


# -- entries to stories ------------------------------------------------------------------------------


def test_story_ids_are_guids_the_webhook_accepts_or_stable_escapes():
    assert story_id_for("walrus-our-planet") == "walrus-our-planet"
    assert story_id_for("tag:publisher.example,2024:1") == "tag:publisher.example_2C2024:1"
    assert story_id_for("https://publisher.example/?p=123") == "https://publisher.example/_3Fp_3D123"
    assert story_id_for("a_b") == "a_b" and story_id_for("a_b?") == "a_5Fb_3F"  # "_" escaped too, once escaping
    long = story_id_for("https://publisher.example/" + "ü" * 200)
    assert len(long) == 128 and long == story_id_for("https://publisher.example/" + "ü" * 200)
    for key in ("https://publisher.example/?p=123", "x" * 300, "ümlaut guid", "tag:a,b"):
        StoryData.model_validate(
            {"id": story_id_for(key), "title": "t", "url": "https://p.example", "topics": ["news"]},
            context={"topics": KNOWN},
        )


def test_topics_from_the_category_map_then_by_name_then_the_feeds_own():
    matcher = TopicMatcher(CATALOGUE, {"Wildlife": "animals", "TV": "tv-and-film"}, ["news"])
    assert matcher.topics_for(["wildlife", "Cooking"]) == ["animals"]
    assert matcher.topics_for(["Animals", "TV & Film", "tv-and-film"]) == ["animals", "tv-and-film"]
    assert matcher.topics_for(["SPORT "]) == ["sport"]
    assert matcher.topics_for(["Cooking"]) == ["news"]
    assert matcher.topics_for([]) == ["news"]
    assert TopicMatcher(CATALOGUE, {}, []).topics_for(["Cooking"]) == []


def test_entry_story_is_what_the_webhook_would_carry():
    (entry,) = parse(docs.ghost_rss([WALRUS])).entries
    story = entry_story(entry, TopicMatcher(CATALOGUE, {}, ["news"]), KNOWN)
    assert story == {
        "id": WALRUS.key.replace(",", "_2C"),
        "title": WALRUS.title,
        "body": entry.summary,
        "url": WALRUS.link,
        "image": WALRUS.image,
        "topics": ["animals", "tv-and-film"],
        "ttl": 14400,
        "urgency": "normal",
    }


def test_entry_story_cuts_long_text_and_drops_unusable_images():
    long = Item(key="long", title="T " * 400, link="https://p.example/long", summary="word " * 200,
                image="javascript:alert(1)", categories=["News"])  # fmt: skip
    (entry,) = parse(docs.ghost_rss([long])).entries
    story = entry_story(entry, TopicMatcher(CATALOGUE, {}, []), KNOWN)
    assert len(story["title"]) <= 300 and story["title"].endswith("…")
    assert len(story["body"]) <= 300 and story["body"].endswith("…")
    assert "image" not in story


@pytest.mark.parametrize(
    ("item", "why"),
    [(Item(key="a", title="A", link="ftp://p.example/a", categories=["News"]), "link"),
     (Item(key="b", title="B", link="https://p.example/" + "x" * 600, categories=["News"]), "link"),
     (Item(key="c", title="C", link="https://p.example/c", categories=["Cooking"]), "topic")],
)  # fmt: skip
def test_entries_that_cannot_be_stories_say_why(item, why):
    (entry,) = parse(docs.ghost_rss([item])).entries
    with pytest.raises(EntrySkipped, match=why):
        entry_story(entry, TopicMatcher(CATALOGUE, {}, []), KNOWN)
