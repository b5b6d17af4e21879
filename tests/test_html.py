"""`make html` pages need no network: MathJax from a local copy, no script or stylesheet from another host."""

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import nbformat

from privloc.tools.html import export, remote_references


class Sources(HTMLParser):
    """Every URL a page would fetch by itself: script src, link href, img/iframe src."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        key = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        if key and attrs.get(key):
            self.urls.append(attrs[key])


def fetched(page: Path) -> list[str]:
    parser = Sources()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.urls


def notebook_with_math_and_a_widget(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("The objective $$\\mathcal L = L_{pii} + \\lambda_{keep} L_{keep}$$ and $m_i$."),
        nbformat.v4.new_code_cell("print(1)", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n"),
            # What a tqdm progress bar leaves in an executed notebook.
            nbformat.v4.new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                             "version_minor": 0},
                "text/plain": "localise: 100%|##########| 150/150"}),
        ]),
    ]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                            "version_minor": 0}}
    nbformat.write(nb, str(path))
    return path


def test_exported_pages_load_nothing_from_the_network(tmp_path):
    source = notebook_with_math_and_a_widget(tmp_path / "eq.ipynb")
    (page,) = export([source], tmp_path / "html")
    urls = fetched(page)
    assert urls, "the page should at least load MathJax"
    remote = [u for u in urls if urlparse(u).scheme in ("http", "https") or u.startswith("//")]
    assert not remote, remote
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""import\(\s*["'](https?:)?//""", text), "a dynamic import from another host"
    assert "unpkg.com" not in text and "cdnjs" not in text and "require.min.js" not in text
    mathjax = [u for u in urls if "MathJax.js" in u]
    assert len(mathjax) == 1
    assert (page.parent / urlparse(mathjax[0]).path).is_file(), "MathJax must be copied beside the pages"
    assert (page.parent / "mathjax" / "fonts" / "HTML-CSS" / "STIX-Web").is_dir()
    # The equation is left for MathJax to typeset, and the progress bar keeps its text.
    assert "\\mathcal L" in text and "150/150" in text


def test_the_cdn_check_notices_a_remote_script():
    assert remote_references('<script src="https://cdn.example.org/x.js"></script>')
    assert remote_references('<link rel="stylesheet" href="//cdn.example.org/x.css">')
    assert remote_references('const m = (await import("https://cdn.example.org/m.mjs")).default;')
    assert not remote_references('<script src="mathjax/MathJax.js?config=TeX"></script>')
