"""The cross-run view of a results root: `index.html` (one card per run: its best configuration,
its claims' verdict counts, headline figure, first findings and a link to its report) and
`summary.png` (one panel per run: its headline figure, titled with its best configuration)."""

from __future__ import annotations

import html
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.style import CSS, img  # noqa: E402
from analysis.verdicts import VERDICTS  # noqa: E402


def verdict_text(counts: dict[str, int] | None) -> str:
    """'claims: 3 reproduced, 0 contradicted, 1 inconclusive', or 'claims: none declared'."""
    if not counts or not sum(counts.values()):
        return "claims: none declared"
    return "claims: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)


def index_table(entries: list[dict], root: Path) -> pd.DataFrame:
    """One row per run: what index.html and summary.png show."""
    rows = []
    for e in entries:
        rep = Path(e["html"])
        rows.append(
            {
                "study": e["study"],
                "name": e["name"],
                "trials": e["trials"],
                "best": e["best"],
                "claims": verdict_text(e.get("claims")),
                "headline": e["headline"][0] if e.get("headline") else None,
                "report": Path(os.path.relpath(rep, root)).as_posix(),
            }
        )
    return pd.DataFrame(rows)


def _layout(entries: list[dict], images: list) -> list[list[int]]:
    """Rows of panels: two runs side by side, a wide headline figure (width > 2 x height) alone."""
    rows, pending = [], []
    for i, im in enumerate(images):
        if im is not None and im.shape[1] > 2 * im.shape[0]:
            if pending:
                rows.append(pending)
                pending = []
            rows.append([i])
        else:
            pending.append(i)
            if len(pending) == 2:
                rows.append(pending)
                pending = []
    return rows + ([pending] if pending else [])


def summary_figure(entries: list[dict], width: float = 16.0) -> Figure:
    """One panel per run: its headline figure, with the run and its best configuration above it."""
    images = [
        mpimg.imread(io.BytesIO(e["headline"][1]), format="png") if e.get("headline") and e["headline"][1] else None
        for e in entries
    ]
    rows = _layout(entries, images)
    title_in = 0.7  # inches of panel title per row

    def height(row):
        w = (
            width
            if len(row) == 1 and images[row[0]] is not None and images[row[0]].shape[1] > 2 * images[row[0]].shape[0]
            else width / 2
        )
        return max((images[i].shape[0] / images[i].shape[1] * w if images[i] is not None else 1.0) for i in row)

    heights = [height(r) + title_in for r in rows]
    fig = plt.figure(figsize=(width, sum(heights) + 0.6))
    gs = fig.add_gridspec(
        len(rows),
        2,
        height_ratios=heights,
        hspace=0.0,
        wspace=0.02,
        top=1 - 0.6 / (sum(heights) + 0.6),
        bottom=0.0,
        left=0.0,
        right=1.0,
    )
    for k, row in enumerate(rows):
        for j, i in enumerate(row):
            wide = len(row) == 1 and images[i] is not None and images[i].shape[1] > 2 * images[i].shape[0]
            ax = fig.add_subplot(gs[k, :] if wide else gs[k, j])
            ax.axis("off")
            if images[i] is not None:
                ax.imshow(images[i])
            e = entries[i]
            ax.set_title(
                f"{e['study']} / {e['name']} ({e['trials']} trials)\nbest: {e['best']}", fontsize=12, fontweight="bold"
            )
    fig.suptitle("Study runs: the headline figure of each", fontsize=14, y=1 - 0.2 / (sum(heights) + 0.6))
    return fig


def index_html(entries: list[dict], root: Path) -> str:
    """The page: a table of the runs, then one card per run."""
    t = index_table(entries, root)
    head = "".join(f"<th>{c}</th>" for c in ("run", "trials", "best configuration", "claims", "report"))
    rows = "".join(
        f"<tr><td>{html.escape(r.study)} / {html.escape(r.name)}</td><td>{r.trials}</td>"
        f"<td style='text-align:left'>{html.escape(r.best)}</td>"
        f"<td style='text-align:left'>{html.escape(r.claims.removeprefix('claims: '))}</td>"
        f"<td><a href='{html.escape(r.report)}'>report</a></td></tr>"
        for r in t.itertuples()
    )
    cards = []
    for e, r in zip(entries, t.itertuples()):
        picture = img(e["headline"][1], e["headline"][0]) if e.get("headline") and e["headline"][1] else ""
        found = "".join(f"<li>{html.escape(f)}</li>" for f in e.get("findings", [])[:3])
        cards.append(
            f"<div class='card'><h2>{html.escape(r.study)} / {html.escape(r.name)}</h2>"
            f"<p>best: {html.escape(r.best)}</p><p class='claims'>{html.escape(r.claims)}</p>"
            f"{picture}<ul>{found}</ul>"
            f"<p><a href='{html.escape(r.report)}'>full report</a></p></div>"
        )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Study runs</title><style>{CSS}</style>"
        f"</head><body><h1>Study runs</h1><table><tr>{head}</tr>{rows}</table>{''.join(cards)}</body></html>"
    )
