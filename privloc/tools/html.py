"""`make html`: executed notebooks as HTML pages that need no network, equations included.

nbconvert's pages load MathJax and require.js from CDNs, so offline every equation stays raw TeX. Here
MathJax 2.7 comes from the copy that jupyter-server-mathjax ships, placed beside the pages; require.js,
mermaid and the widget manager are left out (the notebooks use none of them: their only widgets are
progress bars, whose text fallback is kept).

    python -m privloc.tools.html --out build/default/html build/default/*.ipynb
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

MATHJAX_DIR = "mathjax"
# The one configuration jupyter-server-mathjax ships (TeX input, HTML-CSS output, AMS macros), and Safe mode
# as in nbconvert's default.
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# A template of our own on top of JupyterLab's: the same page without the blocks that load remote scripts, and
# MathJax told to use the STIX web fonts, the only ones the local copy has (it would look for TeX fonts first
# and fall back to whatever serif font the system has).
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});
</script>
{{ super() }}
{%- endblock html_head_js_mathjax -%}
"""
_REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
_IMPORT = re.compile(r"""\bimport\s*\(\s*["'](?:https?:)?//""")


def mathjax_source() -> Path:
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def _strip_widgets(nb) -> None:
    """Progress-bar widgets need the remote widget manager; their outputs keep a text/plain fallback."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
        if cell.get("outputs"):
            cell["outputs"] = [o for o in cell["outputs"] if o.get("output_type") not in ("display_data",)
                               or o.get("data")]


def exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    html = HTMLExporter(extra_loaders=[DictLoader({"privloc_offline.html.j2": _TEMPLATE})])
    html.template_file = "privloc_offline.html.j2"
    html.mathjax_url = f"{MATHJAX_DIR}/MathJax.js?config={MATHJAX_CONFIG}"
    return html


def remote_references(page: str) -> list[str]:
    """Every tag or dynamic import in `page` that would fetch something from another host."""
    return [m.group(0) for m in _REMOTE.finditer(page)] + [m.group(0) for m in _IMPORT.finditer(page)]


def export(notebooks, out: str | Path) -> list[Path]:
    """Write one page per notebook to `out`, with MathJax copied to `out/mathjax` (once)."""
    import nbformat

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MATHJAX_DIR / "MathJax.js").is_file():
        shutil.copytree(mathjax_source(), out / MATHJAX_DIR, dirs_exist_ok=True)
    html, pages = exporter(), []
    for path in map(Path, notebooks):
        nb = nbformat.read(str(path), as_version=4)
        _strip_widgets(nb)
        body, _ = html.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
        remote = remote_references(body)
        if remote:
            raise RuntimeError(f"{path.name}: the page would load {remote[0]!r} from the network")
        page = out / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m privloc.tools.html", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="executed notebooks")
    parser.add_argument("--out", required=True, help="folder of the pages")
    args = parser.parse_args(argv)
    for page in export(args.notebooks, args.out):
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
