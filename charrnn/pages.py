"""What charrnn's one-file pages (`viz`, `export`) share: their data as JSON that no text can end
the script with, and text made safe to stand in their HTML."""

from __future__ import annotations

import json


def embedded_json(data: object) -> str:
    """`data` as JSON to inline in a <script> block. Every `<` (only ever inside its strings,
    where \\u003c reads the same) is written \\u003c, so no `</script>` or `<!--` from a
    vocabulary, a text or a title can end or bend the script."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def escape_html(text: str) -> str:
    """`text` as it stands in HTML, attributes included."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
