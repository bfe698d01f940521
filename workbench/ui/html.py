"""HTML fragments for the app. Every model string passes through ``esc`` (html.escape) or through
pandas' escaping ``to_html(escape=True)`` before it is put on the page."""

from __future__ import annotations

import html


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def kv_table(rows, title: str | None = None) -> str:
    """A two-column table from (key, value) pairs; both sides escaped."""
    head = f"<h4 style='margin:4px 0'>{esc(title)}</h4>" if title else ""
    body = "".join(f"<tr><th style='text-align:left;padding-right:12px'>{esc(k)}</th><td>{esc(v)}</td></tr>"
                   for k, v in rows)
    return f"{head}<table class='wb-kv'>{body}</table>"


def df_html(df, max_rows: int = 60, title: str | None = None, floatfmt: str = "{:.4g}") -> str:
    """A DataFrame as an escaped HTML table, truncated to ``max_rows`` with a note."""
    head = f"<h4 style='margin:4px 0'>{esc(title)}</h4>" if title else ""
    if df is None or len(df) == 0:
        return head + "<i>(empty)</i>"
    shown = df.head(max_rows)
    table = shown.to_html(index=False, escape=True, border=0, classes="wb-table",
                          float_format=lambda x: floatfmt.format(x))
    more = f"<div style='color:#666'>… {len(df) - max_rows} more rows</div>" if len(df) > max_rows else ""
    return head + table + more


def error_html(exc: BaseException) -> str:
    return f"<div style='color:#b00;white-space:pre-wrap'>{esc(type(exc).__name__)}: {esc(exc)}</div>"


def note_html(text: str, color: str = "#444") -> str:
    return f"<div style='color:{color}'>{esc(text)}</div>"


STYLE = """<style>
.wb-table { border-collapse: collapse; font-size: 12px; }
.wb-table th, .wb-table td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
.wb-kv th, .wb-kv td { font-size: 12px; padding: 1px 6px; vertical-align: top; }
</style>"""
