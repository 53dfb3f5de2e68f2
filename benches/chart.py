#!/usr/bin/env python3
"""Draws the benchmark's results as an SVG bar chart: each workload's figure against its bar.

usage: benches/chart.py [RESULTS...] [-o OUT.svg] [--caption TEXT]
  RESULTS   files in the format benches/run.sh writes (default target/bench-results.txt); when
            several name the same workload, the last one wins (so a run of a few workloads can
            update an older full run)
  -o        where to write the SVG (default target/bench-chart.svg)
  --caption a line under the title (default: the results' first line: mode and date)

Why a chart: the bars have different directions and scales (W1 >= 0.85 x raw, W4 <= 1.5 x a SQL
fold, W5 >= 50 x faster, W10 <= 20 ms), so each bar is drawn as "how far past its bar": the
figure divided by the bar (or the bar by the figure, where lower is better). 1.0 is the bar;
right of it the bar is met. The true figure and the bar are written beside each row.
Python 3 standard library only (no matplotlib): it runs wherever the benchmark runs.
"""

import argparse
import html
import re
import sys

# drawn up to this many times the bar; beyond, the row is cut and marked
CAP = 3.0


def parse(path):
    """The rows of a results file: {id: (workload, figure, cmp, bar, result)} and its first line."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    first = lines[0] if lines else ""
    for line in lines:
        if not re.match(r"^W\d+\w*(:\w+)? ", line):
            continue
        t = line.split()
        # a last column after PASS/MISS (the instruction ratio, "instr") is not drawn
        if t and t[-1] not in ("PASS", "MISS"):
            t = t[:-1]
        # from the right: unit store events/s base base-ev/s ratio cmp bar result
        if len(t) < 11 or t[-3] not in (">=", "<="):
            continue
        result, bar, cmp, ratio, store = t[-1], float(t[-2]), t[-3], t[-4], t[-8]
        unit = t[-9]
        workload = line[len(t[0]):].strip()
        workload = workload[: workload.rfind(" " + unit + " ")].strip() if (" " + unit + " ") in workload else workload
        figure = float(store) if ratio == "-" else float(ratio)
        rows[t[0]] = (workload, figure, cmp, bar, result, unit if ratio == "-" and unit != "ratio" else "x")
    return rows, first


def order(wid):
    """W1 < W2 < … < W4 < W4n < … < W10 < W10:p99 < W11."""
    m = re.match(r"W(\d+)(\w*)(?::(\w+))?", wid)
    return (int(m.group(1)), m.group(2), m.group(3) or "")


def fmt(v):
    return f"{v:,.3g}" if v < 1000 else f"{v:,.0f}"


def svg(rows, title, caption):
    ids = sorted(rows, key=order)
    row_h, top, left, width, right = 26, 70, 330, 420, 230
    height = top + row_h * len(ids) + 50
    total_w = left + width + right
    x = lambda v: left + width * min(v, CAP) / CAP  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" '
        f'viewBox="0 0 {total_w} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{total_w}" height="{height}" fill="white"/>',
        f'<text x="{total_w / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="{total_w / 2}" y="42" text-anchor="middle" font-size="11" fill="#555">{html.escape(caption)}</text>',
    ]
    # grid: 0, 0.5, 1 (the bar), 1.5, … CAP
    for i in range(int(CAP * 2) + 1):
        v = i / 2
        color, w = ("#c0392b", 2) if v == 1 else ("#ddd", 1)
        out.append(f'<line x1="{x(v):.1f}" y1="{top - 8}" x2="{x(v):.1f}" y2="{top + row_h * len(ids)}" stroke="{color}" stroke-width="{w}"/>')
        label = "the bar" if v == 1 else f"{v:g}"
        out.append(f'<text x="{x(v):.1f}" y="{top + row_h * len(ids) + 16}" text-anchor="middle" fill="#555">{label}</text>')
    out.append(
        f'<text x="{left + width / 2}" y="{top + row_h * len(ids) + 34}" text-anchor="middle" fill="#555">'
        "figure ÷ bar (bar ÷ figure where lower is better): right of the red line the bar is met</text>"
    )
    for n, wid in enumerate(ids):
        workload, figure, cmp, bar, result, unit = rows[wid]
        score = figure / bar if cmp == ">=" else (bar / figure if figure > 0 else CAP)
        y = top + row_h * n
        color = "#2e8b57" if result == "PASS" else "#e67e22"
        name = f"{wid}  {workload}"
        if len(name) > 52:
            name = name[:51] + "…"
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{html.escape(name)}</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{x(score) - left:.1f}" height="{row_h - 8}" fill="{color}"/>')
        if score > CAP:
            out.append(f'<text x="{x(CAP) - 4:.1f}" y="{y + 15}" text-anchor="end" fill="white" font-weight="bold">{score:.0f}× ›</text>')
        sym = "≥" if cmp == ">=" else "≤"
        shown = f"{fmt(figure)}{'' if unit == 'x' else ' ' + unit} (bar {sym} {bar:g}{'' if unit == 'x' else ' ' + unit}) {result}"
        out.append(f'<text x="{left + width + 8}" y="{y + 15}">{html.escape(shown)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="*", default=["target/bench-results.txt"])
    p.add_argument("-o", "--out", default="target/bench-chart.svg")
    p.add_argument("--caption")
    a = p.parse_args()
    rows, first = {}, ""
    for path in a.results:
        r, first = parse(path)
        rows.update(r)
    if not rows:
        sys.exit(f"chart: no workload rows in {', '.join(a.results)}")
    caption = a.caption or first
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(svg(rows, "event_store benchmarks: each workload against its bar", caption))
    print(f"chart: {a.out} ({len(rows)} workloads)")


if __name__ == "__main__":
    main()
