"""The table of issue 17 from one run's results (bench/compare.py): six rows, each target met or
missed by Relay after. A column is left out when its server was not run."""

from __future__ import annotations

from typing import Any

COLUMNS = [
    ("direct", "direct"),
    ("floor", "stack floor²"),
    ("Relay before", "Relay before"),
    ("Relay", "Relay after"),
]
DASH = "—"


def _added(section: dict[str, Any], name: str) -> float | None:
    if name not in section:
        return None
    return float(section[name]["p50_ms"] - section["direct"]["p50_ms"])


def _ms(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f} ms"


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each row: its label, a cell per server name, its target and Relay after's figure."""
    c1, c16 = r["c1"], r["c16"]
    cores = r["machine"]["cores"]

    def added_row(label: str, section: dict[str, Any], target: float) -> dict[str, Any]:
        cells = {n: _ms(_added(section, n)) for n in section if n != "direct"}
        cells["direct"] = f"0 (p50 {section['direct']['p50_ms']:.2f} ms)"
        after = _added(section, "Relay")
        ok = after is not None and after <= target
        return {"label": label, "cells": cells, "target": f"≤ {target:g} ms", "ok": ok}

    def throughput(n: str) -> str:
        return f"{c1[n]['rps']:,.0f} → {c16[n]['rps']:,.0f} req/s"

    per_core = r["per_core_c16"]
    burst = r["burst_500"]
    held = r["held"]
    out = [
        added_row("added latency, one request at a time, p50 (c=1)", c1, 1.0),
        {
            "label": "non-streaming throughput, one worker, c=1 → c=16",
            "cells": {n: throughput(n) for n in c1},
            "target": "≥ 1,200 req/s at c=16",
            "ok": c16["Relay"]["rps"] >= 1200,
        },
        {
            "label": f"… one worker per core ({cores} workers), c=16",
            "cells": {
                "direct": f"{c16['direct']['rps']:,.0f} req/s",
                **{n: f"{v['rps']:,.0f} req/s" for n, v in per_core.items()},
            },
            "target": DASH,
            "ok": None,
        },
        added_row(
            "added first-token time, 16 concurrent streams, a new connection each, p50",
            r["first_token_16"],
            1.0,
        ),
        {
            "label": "500 streams opened within 0.5 s: first token p50 / p90",
            "cells": {
                n: f"{v['p50_ms']:.1f} / {v['p90_ms']:.1f} ms"
                + ("" if v["streams"] == 500 else f" ({v['streams']}/500)")
                for n, v in burst.items()
            },
            "target": "≤ 50 ms (p50)",
            "ok": burst["Relay"]["p50_ms"] <= 50 and burst["Relay"]["streams"] == 500,
        },
        {
            "label": f"{r['held_streams']:,} streams held by one worker: its RSS",
            "cells": {
                "direct": f"{r['held_fake_rss_mb']:.0f} MB (whole fake)",
                **{
                    n: f"{v['rss_mb']:.0f} MB"
                    + ("" if v["streams"] == r["held_streams"] else f" ({v['streams']} held)")
                    for n, v in held.items()
                },
            },
            "target": "≤ 120 MB",
            "ok": held["Relay"]["rss_mb"] <= 120 and held["Relay"]["streams"] == r["held_streams"],
        },
        added_row("cache hit, added over direct, p50 (c=1)", r["cache_hit_c1"], 0.5),
    ]
    return out


def render(r: dict[str, Any]) -> str:
    """The table in Markdown, with its footnotes."""
    columns = [(n, title) for n, title in COLUMNS if n in r["c1"]]
    litellm = "LiteLLM" in r["c1"]
    if litellm:
        columns.append(("LiteLLM", "LiteLLM"))
    head = ["", *(title for _, title in columns), "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows(r):
        cells = [row["cells"].get(n, DASH + ("¹" if n == "LiteLLM" else "")) for n, _ in columns]
        met = DASH if row["ok"] is None else ("yes" if row["ok"] else "**no**")
        lines.append("| " + " | ".join([row["label"], *cells, row["target"], met]) + " |")
    if litellm:
        lines.append(
            "\n¹ not run against LiteLLM: its proxy takes ~25 ms of CPU a request, so hundreds of "
            "streams at once, a worker per core or its reply cache (not configured here) would "
            "take minutes and measure its queue."
        )
    if "floor" in r["c1"]:
        lines.append(
            "\n² bench/floor_app.py: Flask under the same gunicorn gevent worker, parsing the "
            "body, calling the upstream with urllib3 and rendering the reply (a stored one for "
            "the cache-hit row), with none of Relay's work: the least this stack adds."
        )
    return "\n".join(lines)


def cpu_note(r: dict[str, Any]) -> str:
    """Relay's worker CPU per request in rows 1-2: less noisy than their latency and req/s."""
    parts = []
    for level in ("c1", "c16"):
        cpu = {n: r[level][n]["cpu_us"] for n in ("Relay before", "Relay") if n in r[level]}
        text = ", ".join(
            f"{'before' if 'before' in n else 'after'} {us:,.0f} µs" for n, us in cpu.items()
        )
        if len(cpu) == 2:
            text += f" ({cpu['Relay'] / cpu['Relay before']:.2f}×)"
        parts.append(f"c={level[1:]}: {text}")
    return "\nRelay's worker CPU per request (less noisy than the rows): " + "; ".join(parts)
