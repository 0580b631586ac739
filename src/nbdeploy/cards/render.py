"""The model card as sections of paragraphs and tables, written out as Markdown (also the
text form) or as self-contained HTML (no script, no external URL).

>>> md = markdown(sections(facts))   # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from nbdeploy.cards.gather import CardFacts
from nbdeploy.reprs import esc, fmt

__all__ = ["Section", "html", "markdown", "sections"]

HEADLINE = ("accuracy", "f1", "roc_auc", "log_loss", "brier", "ece", "rmse", "mae", "r2")
TOP = 5


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    collapsed: bool = False  # long tables: <details> in HTML


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _interval(pair: Any) -> str:
    return f"[{fmt(pair[0])}, {fmt(pair[1])}]" if isinstance(pair, list) and len(pair) == 2 else "-"


def _overview(f: CardFacts) -> Section:
    use = f.intended_use or f"Not stated: add it with %deploy card {f.ref} --intended-use TEXT."
    s = Section("Overview", [f.description or "No description was given at registration."])
    s.tables.append((["", ""], [["intended use", use], ["task", f.task or "unknown"], ["registered", f.created],
                               ["aliases", " ".join(f"@{a}" for a in f.aliases) or "none"]]))  # fmt: skip
    return s


def _training(f: CardFacts) -> list[Section]:
    out = [Section("Lineage", tables=[(["", ""], [[k, v] for k, v in f.lineage])] if f.lineage else [],
                   paragraphs=[] if f.lineage else ["No lineage was recorded."])]  # fmt: skip
    p = f.profile
    data = Section("Training data", collapsed=True)
    if p is None:
        data.paragraphs.append("No training-data profile: the version was registered without data.")
    else:
        data.paragraphs.append(f"{p.get('rows')} rows, {len(p.get('columns', []))} columns; fingerprint "
                               f"{p.get('fingerprint', '-')}.")  # fmt: skip
        rows = []
        for c in p.get("columns", []):
            if c.get("kind") == "numeric":
                what = f"mean {fmt(c.get('mean'))}, sd {fmt(c.get('std'))}, "
                what += f"range {fmt(c.get('min'))} to {fmt(c.get('max'))}"
            else:
                top = sorted((c.get("frequencies") or {}).items(), key=lambda kv: -kv[1])[:3]
                what = ", ".join(f"{k} {v:.0%}" for k, v in top)
            rows.append([str(c.get("name")), str(c.get("kind")), f"{c.get('missing', 0):.1%}", what])
        data.tables.append((["column", "kind", "missing", "summary"], rows))
    out.append(data)
    if f.training_metrics:
        metrics = [[k, fmt(v)] for k, v in sorted(f.training_metrics.items())]
        out.append(Section("Training metrics", ["On the training data: optimistic by construction."],
                           [(["metric", "value"], metrics)]))  # fmt: skip
    return out


def _validation(f: CardFacts) -> list[Section]:
    v = f.validation
    if v is None:
        return [Section("Validation", [f"Never validated: run %deploy validate {f.ref} --data X --target Y."])]
    if v.get("unreadable"):
        gone = f"The latest validation's report ({f.validation_uri or '-'}) cannot be read: its run was deleted "
        return [Section("Validation", [gone + "or its file damaged. Validate the version again."])]
    head = (f"Latest validation: {str(v.get('verdict', '?')).upper()} on {v.get('rows')} rows, {v.get('created')}; "
            f"baseline {v.get('baseline') or 'none'}; report {f.validation_uri or '-'}.")  # fmt: skip
    s = Section("Validation", [head])
    gates = [[g.get("gate", ""), str(g.get("status")), fmt(g.get("actual")), fmt(g.get("threshold"))]
             for g in v.get("gates", [])]  # fmt: skip
    if gates:
        s.tables.append((["gate", "result", "value", "threshold"], gates))
    metrics = v.get("metrics", {})
    rows = [[m, fmt(d.get("value")), _interval(d.get("ci")), fmt(d.get("baseline")), _interval(d.get("delta_ci"))]
            for m, d in metrics.items() if m in HEADLINE]  # fmt: skip
    if rows:
        s.tables.append((["metric", "value", "95% CI", "baseline", "delta 95% CI"], rows))
    out = [s, *_slices(v), *_explain(v)]
    return out


def _slices(v: dict[str, Any]) -> list[Section]:
    s = Section("Slices and weak segments")
    for t in v.get("slices", []):
        if t.get("weakest") is not None:
            w = t["slices"][t["weakest"]]
            s.paragraphs.append(f"By {t['column']}: weakest slice {w['label']} ({w['rows']} rows), "
                                f"{t['metric']} {fmt(w['metrics'].get(t['metric']))}.")  # fmt: skip
    weak = v.get("weak_segments") or {}
    found = weak.get("found", [])
    if weak.get("searched"):
        s.paragraphs.append(f"Weak segments: {weak['searched']} of one or two features searched, "
                            f"{len(found) or 'none'} markedly worse than the rest.")  # fmt: skip
    if found:
        s.tables.append((["segment", "rows", "metric", "95% CI", "overall"],
                         [[g["where"], str(g["rows"]), f"{g['metric']} {fmt(g['value'])}",
                           _interval([g["low"], g["high"]]), fmt(g["overall"])] for g in found]))  # fmt: skip
    return [s] if s.paragraphs or s.tables else []


def _explain(v: dict[str, Any]) -> list[Section]:
    e = v.get("explain")
    if not e or not e.get("importances"):
        return []
    s = Section("Explanations", [f"Permutation importance ({e['score']} when shuffled; {e['rows']} rows, "
                                 f"{e['repeats']} shuffles):"])  # fmt: skip
    s.tables.append((["feature", "importance", "95% interval"],
                     [[i["feature"], fmt(i["mean"]), _interval([i["low"], i["high"]])]
                      for i in e["importances"][:TOP]]))  # fmt: skip
    if e.get("shap"):
        top = ", ".join(f"{x['feature']} {fmt(x['mean_abs'])}" for x in e["shap"]["features"][:TOP])
        s.paragraphs.append(f"TreeSHAP, mean |value| on {e['shap']['rows']} rows: {top}.")
    s.paragraphs += [f"Warning: {w}" for w in e.get("warnings", [])]
    return [s]


def _capacity(f: CardFacts) -> list[Section]:
    t = f.loadtest
    if not t:
        return []
    best = t.get("best")
    capacity = (f"capacity {fmt(best['rps'])} req/s at {best['connections']} connections"
                if best else "no level within the gates")  # fmt: skip
    head = f"Latest load test: {str(t.get('status', '?')).upper()}, {_time(t['when'])}; {capacity}; "
    s = Section("Capacity", [head + f"peak server memory {fmt(t.get('peak_rss_mb'))} MB (run {t.get('run_id')})."])
    s.tables.append((["connections", "req/s", "p50 ms", "p99 ms", "errors", "CPU s / 1k predictions"],
                     [[str(lv["connections"]), fmt(lv.get("rps")), fmt(lv.get("p50_ms")), fmt(lv.get("p99_ms")),
                       f"{100 * (lv.get('error_rate') or 0):.2f}%", fmt(lv.get("cpu_s_per_1k"))]
                      for lv in t.get("levels", [])]))  # fmt: skip
    gates = [[g["gate"], "pass" if g["passed"] else "FAIL", fmt(g.get("value"))] for g in t.get("gates", [])]
    if gates:
        s.tables.append((["gate", "result", "measured"], gates))
    return [s]


def _history(f: CardFacts) -> Section:
    rows = [[_time(e["ts"]), str(e["event"]), str(e.get("detail", ""))] for e in f.history]
    return Section("History", ["Every validation, promotion, deployment, update, rollback and experiment of "
                               "this version, oldest first."], [(["time", "event", "detail"], rows)])  # fmt: skip


def sections(f: CardFacts) -> list[Section]:
    return [_overview(f), *_training(f), *_validation(f), *_capacity(f), _history(f)]


def _md(text: str) -> str:
    """Text as Markdown shows it, on one line: no HTML tag a viewer would render (``<`` that
    opens one is escaped; ``ece<=0.05`` stays as it is) and no line that starts a section."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text).replace("\n", " ")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|")


def markdown(f: CardFacts, parts: Sequence[Section]) -> str:
    lines = [f"# Model card: {_md(f.ref)}", ""]
    for s in parts:
        lines += [f"## {s.title}", ""]
        for p in s.paragraphs:
            lines += [_md(p), ""]
        for header, rows in s.tables:
            lines.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            lines.append("|" + " --- |" * len(header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def html(parts: Sequence[Section]) -> str:
    out = []
    for s in parts:
        body = "".join(f"<p>{esc(p)}</p>" for p in s.paragraphs)
        for header, rows in s.tables:
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
            table = f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"
            body += f"<details><summary>{len(rows)} rows</summary>{table}</details>" if s.collapsed else table
        out.append(f"<h4>{esc(s.title)}</h4>{body}")
    return "".join(out)
