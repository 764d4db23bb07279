"""The HTML part of an email: CSS inlined, and a plain-text version derived from it.

Why these two pieces, and why here:

- Gmail, Outlook and most webmail drop or rewrite ``<style>`` blocks, so a layout's CSS must end up
  in ``style=""`` attributes. `inline_css` does that with css-inline (MIT, Rust, wheels for every
  platform: no runtime download, no network — remote stylesheets are never fetched). ``@media``
  rules cannot be inlined; they stay in a ``<style>`` block for the clients that honour them.
- A multipart/alternative email needs a text part (spam filters score HTML-only mail, and some
  people read text). When a template has no written text part, `html_to_text` derives one with the
  standard library's `html.parser` — html2text is GPL, and what an email needs is small: visible
  text, paragraphs, list items, and every link kept as ``text (URL)`` so that the text version
  still works. Hidden elements (``display:none``, ``hidden``: the preheader), ``<head>``,
  ``<style>`` and ``<script>`` are left out.

Both are pure functions on text; errors are `ValueError`s that the caller turns into a
`TemplateError` naming the template.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import css_inline

__all__ = ["html_to_text", "inline_css"]

# Remote stylesheets are never loaded (rendering does no I/O); @media rules stay in a <style>.
_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


def inline_css(html: str) -> str:
    """`html` with the rules of its ``<style>`` blocks moved into ``style`` attributes."""
    try:
        return _INLINER.inline(html)
    except (css_inline.InlineError, ValueError) as exc:
        raise ValueError(f"the CSS could not be inlined: {exc}") from None


_VOID = frozenset(
    ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"]
)  # fmt: skip
_SKIPPED = frozenset({"head", "style", "script", "title", "template", "noscript"})
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
# Invisible characters that preheaders pad with: they carry nothing for a text reader.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u034f\u2060\ufeff\u00ad"))
_LINK_SCHEMES = ("http://", "https://", "mailto:", "tel:")


def html_to_text(html: str) -> str:
    """The visible text of `html`, one paragraph per block, links as ``text (URL)``."""
    parser = _TextMaker()
    parser.feed(html)
    parser.close()
    return parser.text()


class _TextMaker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._hidden: list[str] = []  # open elements since a hidden one began
        self._links: list[tuple[str | None, int]] = []  # (href, where its text starts in _out)
        self._pre = 0

    # -- parser callbacks ----------------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden:
            if tag not in _VOID:
                self._hidden.append(tag)
            return
        values = {name: value or "" for name, value in attrs}
        hidden = "hidden" in values or bool(_HIDDEN_STYLE.search(values.get("style", "")))
        if tag in _SKIPPED or hidden:
            if tag not in _VOID:
                self._hidden.append(tag)
            return
        if tag == "br":
            self._out.append("\n")
        elif tag == "img":
            alt = values.get("alt", "").strip()
            if alt:
                self._out.append(alt)
        elif tag == "li":
            self._out.append("\n\n- ")
        elif tag in _BLOCKS:
            self._out.append("\n\n")
        if tag == "pre":
            self._pre += 1
        if tag == "a":
            self._links.append((values.get("href", "").strip() or None, len(self._out)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._hidden:
            if tag in self._hidden:  # close it and whatever was left open inside it
                while self._hidden.pop() != tag:
                    pass
            return
        if tag == "a" and self._links:
            href, start = self._links.pop()
            self._end_link(href, start)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in _BLOCKS and tag != "li":
            self._out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        data = data.translate(_INVISIBLE).replace("\xa0", " ")
        self._out.append(data if self._pre else re.sub(r"\s+", " ", data))

    # -- result --------------------------------------------------------------------------------

    def _end_link(self, href: str | None, start: int) -> None:
        if not href or not href.lower().startswith(_LINK_SCHEMES):
            return  # an anchor, javascript: or no target: only its text counts
        label = " ".join("".join(self._out[start:]).split())
        shown = href.removeprefix("mailto:")
        if not label:
            self._out.append(href)
        elif label not in (href, shown):
            self._out.append(f" ({href})")

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self._out).split("\n")]
        text = "\n".join(lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
