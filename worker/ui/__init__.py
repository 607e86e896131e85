"""The operator's dashboard at /ui on the web process (issue 19).

`auth` (basic auth, CSRF), `stats` (pure arithmetic), `rollup` (the summary table,
kept by beat), `queries` (what each page reads), `charts` (inline SVG, drawn on
the server: no chart library, nothing fetched), `routes` (the pages and actions),
`templates/` and `static/` (Jinja2 templates, one stylesheet, one small script).
"""
