"""The report a person reads: one self-contained HTML file (inline CSS, JS and SVG, no network).

Sections: summary (status, errors fp64 / fp32 / ONNX Runtime, parameters, FLOPs, time per
stage), before/after graphs (drawn in the browser from the report's graph data, rewritten
nodes highlighted, module scopes collapsible), per-layer error (plot and table), rewrite
log, refusals and the canonicality lint.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from .report import Report


def esc(value: object) -> str:
    """HTML-escaped text of ``value``."""
    return html.escape(str(value), quote=True)


def fmt_err(value: float | None) -> str:
    """An error as ``1.23e-14`` (``—`` when not measured)."""
    return "—" if value is None else f"{value:.3g}"


def fmt_count(value: int | None) -> str:
    """A count as ``11.7 M`` / ``1.82 G`` (``—`` when not measured)."""
    if value is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.4g} {unit}"
    return str(value)


def fmt_value(value: object) -> str:
    """A report value for a summary row: errors as ``1.23e-14``, counts as ``Conv ×20, Relu ×17``."""
    if isinstance(value, float):
        return fmt_err(value)
    if isinstance(value, dict):
        return ", ".join(f"{k} ×{v}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def status_of(report: Report) -> tuple[str, str]:
    """(CSS class, text) of the verification status."""
    if report.verified:
        return "ok", "VERIFIED"
    if report.failure:
        return "bad", "REFUSED"
    return "warn", "NOT VERIFIED"


def _change(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return f"{fmt_count(before)} → {fmt_count(after)}"
    delta = "" if not before else f" <span class=muted>({100.0 * (after - before) / before:+.2f} %)</span>"
    return f"{fmt_count(before)} → {fmt_count(after)}{delta}"


def _rows(items: list[list[str]], head: list[str], cls: str = "", row_cls: list[str] | None = None) -> str:
    """A table; cells are HTML already escaped by the caller."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = []
    for i, cells in enumerate(items):
        rc = f' class="{row_cls[i]}"' if row_cls and row_cls[i] else ""
        body.append(f"<tr{rc}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def summary_html(report: Report) -> str:
    """The summary cards: equivalence, size, time."""
    d = report.to_dict()
    cls, text = status_of(report)
    eq = [
        ["fp64 max abs error", fmt_err(report.max_abs_error_fp64)],
        ["fp64 max rel error", fmt_err(report.max_rel_error_fp64)],
        ["fp64 tolerance", fmt_err(report.tolerance_fp64)],
        ["fp32 artifact error", fmt_err(report.max_abs_error_fp32)],
        ["original's own fp32 error", fmt_err(report.reference_fp32_error)],
    ]
    eq += [[f"ONNX Runtime {k.removeprefix('onnx_').replace('_', ' ')}", esc(fmt_value(v))]
           for k, v in d.items() if k.startswith("onnx_") and v not in (None, "", {}, []) and d.get("onnx_path")]
    size = [
        ["parameters", _change(report.params_before, report.params_after or None)],  # 0: no artifact was built
        ["FLOPs", _change(report.flops_before, report.flops_after)],
        ["BatchNorm layers", f"{report.bn_before} → {report.bn_after}"],
        ["rewrites / refusals", f"{len(report.rewrites)} / {len(report.skipped)}"],
        ["lint", "canonical" if not report.lint else f"{len(report.lint)} items left"],
    ]
    total = sum(report.timings_s.values()) or 1.0
    bars = "".join(
        f'<tr><td>{esc(k)}</td><td class=num>{v:.2f} s</td><td class=barcell>'
        f'<div class=bar style="width:{100.0 * v / total:.1f}%"></div></td></tr>'
        for k, v in report.timings_s.items()
    )
    checks = "; ".join("×".join(str(v) for v in shape[0]) for shape in report.check_inputs) or "—"
    failure = f'<p class="failure">{esc(report.failure)}</p>' if report.failure else ""
    diverge = (f'<p class="failure">First diverging tensor: {esc(report.first_divergence)}</p>'
               if report.first_divergence else "")
    warns = "".join(f'<p class="warning">warning: {esc(w)}</p>' for w in report.warnings)
    return f"""
<header>
  <h1>canonc report: {esc(report.model)} <span id="status" class="badge {cls}">{text}</span></h1>
  <p class=muted>input {esc(report.input_shape)} · strategy {esc(report.strategy)} · checked on inputs {esc(checks)}</p>
  {failure}{diverge}{warns}
</header>
<section id="summary" class="cards">
  <div class=card><h3>Equivalence</h3>{_kv(eq)}</div>
  <div class=card><h3>Size</h3>{_kv(size)}</div>
  <div class=card><h3>Time per stage <span class=muted>({total:.2f} s)</span></h3>
    <table class=kv>{bars}</table></div>
</section>"""


def _kv(rows: list[list[str]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{k}</th><td class=num>{v}</td></tr>" for k, v in rows) + "</table>"


def error_chart(profile: list[dict[str, Any]], width: int = 1100, height: int = 200) -> str:
    """An inline SVG of log10 error per matched point (fp64, fp32, tolerance)."""
    if not profile:
        return ""
    pad_l, pad_r, pad_t, pad_b = 48, 12, 10, 22
    n = len(profile)

    def y_of(v: float) -> float:
        v = min(max(v, 1e-18), 1e18) if math.isfinite(v) else 1e18
        return math.log10(v)

    series = {k: [y_of(p[k]) for p in profile] for k in ("err_fp64", "err_fp32", "tolerance")}
    lo = math.floor(min(min(s) for s in series.values()))
    hi = math.ceil(max(max(s) for s in series.values()))
    hi = hi if hi > lo else lo + 1

    def xy(i: int, v: float) -> str:
        x = pad_l + (width - pad_l - pad_r) * (i / max(n - 1, 1))
        y = pad_t + (height - pad_t - pad_b) * (hi - v) / (hi - lo)
        return f"{x:.1f},{y:.1f}"

    grid = []
    step = max(1, (hi - lo) // 6)
    for e in range(lo, hi + 1, step):
        y = xy(0, e).split(",")[1]
        grid.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y}" y2="{y}" class="grid"/>'
                    f'<text x="{pad_l - 4}" y="{y}" class="tick" text-anchor="end" dy="3">1e{e}</text>')
    lines = []
    for key, cls in (("tolerance", "tol"), ("err_fp32", "e32"), ("err_fp64", "e64")):
        pts = " ".join(xy(i, v) for i, v in enumerate(series[key]))
        lines.append(f'<polyline class="{cls}" points="{pts}"><title>{key}</title></polyline>')
    marks = "".join(
        f'<circle cx="{xy(i, series["err_fp64"][i]).split(",")[0]}" cy="{xy(i, series["err_fp64"][i]).split(",")[1]}" '
        f'r="4" class="div"><title>{esc(p["node"])} diverges</title></circle>'
        for i, p in enumerate(profile) if p["diverges"]
    )
    legend = (f'<text x="60" y="{height - 4}" class="tick"><tspan class="l64">■ fp64 error</tspan>  '
              '<tspan class="l32">■ fp32 artifact error</tspan>  <tspan class="ltol">■ tolerance</tspan>  '
              '(log scale; x: matched tensors in execution order, output last)</text>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
            f'{"".join(grid)}{"".join(lines)}{marks}{legend}</svg>')


def profile_html(report: Report) -> str:
    """The per-layer error section: plot and one table row per matched tensor."""
    prof = report.error_profile
    if not prof:
        return '<section id="profile"><h2>Per-layer error</h2><p class=muted>not computed (run with profile=True)</p></section>'
    rows = [[str(i + 1), esc(p["node"]), esc(p["original"]), esc(p["kind"]),
             esc("×".join(map(str, p["shape"]))), fmt_err(p["max_abs"]), fmt_err(p["err_fp64"]),
             fmt_err(p["tolerance"]), fmt_err(p["err_fp32"]), fmt_err(p["ref_fp32"]),
             "DIVERGES" if p["diverges"] else "ok"] for i, p in enumerate(prof)]
    first = next((i for i, p in enumerate(prof) if p["diverges"]), None)
    row_cls = ["diverges first" if i == first else ("diverges" if p["diverges"] else "") for i, p in enumerate(prof)]
    verdict = (f'<p class="failure">First diverging tensor: {esc(report.first_divergence)}</p>' if first is not None
               else "<p>No matched tensor exceeds its tolerance.</p>")
    table = _rows(rows, ["#", "canonical node", "original node", "op", "shape", "max |y|", "fp64 error",
                         "tolerance", "fp32 error", "original fp32 error", "status"], "profile filterable", row_cls)
    return f"""
<section id="profile"><h2>Per-layer error <span class=muted>({len(prof)} matched tensors)</span></h2>
<p class=muted>Each canonical tensor is compared with the original tensor it must equal (matched through node
names, identical operations and their consumers). Errors are maxima over the gate's inputs; fp64 error:
canonized vs original in float64; fp32 error: the float32 artifact vs the float64 original; tolerance: the gate's
rule at that tensor. The last row is the model output.</p>
{verdict}{error_chart(prof)}
<input class="filter" data-table="profile" placeholder="filter rows…">{table}</section>"""


def log_html(report: Report) -> str:
    """Rewrite log, refusals and lint tables."""
    new = report.matched_nodes
    rw = [[str(i + 1), esc(e["rule"]), esc(e["node"]), esc(new.get(e["node"], "(removed)")), esc(e.get("detail", ""))]
          for i, e in enumerate(report.rewrites)]
    handled: dict[str, list[str]] = {}
    for e in report.rewrites:
        handled.setdefault(e["node"], []).append(e["rule"])
    sk = [[esc(e["rule"]), esc(e["node"]), esc(e["reason"]), esc(", ".join(dict.fromkeys(handled.get(e["node"], []))) or "—")]
          for e in report.skipped]
    li = [[esc(e["kind"]), esc(e["node"]), esc(e["reason"])] for e in report.lint]
    counts = ", ".join(f"{esc(k)} ×{v}" for k, v in sorted(report.rule_counts().items())) or "none"
    lint_body = (_rows(li, ["kind", "node", "reason"], "lint filterable") if li
                 else "<p class=ok-text>Canonical: nothing is left that the lint flags.</p>")
    refusals = _rows(sk, ["rule", "node", "reason", "later rewritten by"], "refusals filterable") if sk else "<p>No refusals.</p>"
    return f"""
<section id="rewrites"><h2>Rewrite log <span class=muted>({len(rw)}: {counts})</span></h2>
<input class="filter" data-table="rewrites" placeholder="filter rows…">
{_rows(rw, ["#", "rule", "original node", "new node", "detail"], "rewrites filterable")}</section>
<section id="refusals"><h2>Refusals <span class=muted>({len(sk)})</span></h2>{refusals}</section>
<section id="lint"><h2>Canonicality lint <span class=muted>({len(li)})</span></h2>{lint_body}</section>"""


def graphs_html(report: Report) -> str:
    """The before/after graph panels and their data (drawn by the inline script)."""
    if not report.graph_before:
        return '<section id="graphs"><h2>Graphs</h2><p class=muted>not computed (run with profile=True)</p></section>'
    notes: dict[str, list[str]] = {}
    for e in report.rewrites:
        notes.setdefault(e["node"], []).append(f"{e['rule']}: {e.get('detail', '')}")
    for e in report.skipped:
        notes.setdefault(e["node"], []).append(f"refused {e['rule']}: {e['reason']}")
    data = {"before": report.graph_before, "after": report.graph_after, "notes": notes}
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return f"""
<section id="graphs"><h2>Dataflow graphs: original → canonized</h2>
<div class="controls">Collapse by module scope: <button data-act="less">− fewer boxes</button>
<button data-act="more">+ more detail</button> <button data-act="all">expand all</button>
<span class=muted>· click a blue box to open it, click a node to close its scope · hover for details</span><br>
<span class=legend><i class="sw changed"></i>rewritten <i class="sw refused"></i>refused
<i class="sw group"></i>collapsed scope <i class="sw diverges"></i>first divergence</span></div>
<div class="panes"><div class="pane"><h3>original ({len(report.graph_before["nodes"])} nodes)</h3><div id="g-before"></div></div>
<div class="pane"><h3>canonized ({len(report.graph_after["nodes"])} nodes)</h3><div id="g-after"></div></div></div>
<script type="application/json" id="graph-data">{blob}</script></section>"""


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 24px 40px;color:#212529;background:#fff}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dee2e6;padding-bottom:4px}
h3{font-size:14px;margin:0 0 6px}.muted{color:#868e96;font-weight:normal}
.badge{font-size:14px;padding:3px 10px;border-radius:12px;color:#fff;vertical-align:middle}
.badge.ok{background:#2f9e44}.badge.bad{background:#e03131}.badge.warn{background:#f08c00}
.failure{color:#c92a2a;font-weight:600;margin:4px 0}.warning{color:#e67700;margin:2px 0}.ok-text{color:#2f9e44}
.cards{display:flex;gap:14px;flex-wrap:wrap}.card{border:1px solid #dee2e6;border-radius:8px;padding:10px 14px;flex:1;min-width:300px}
table{border-collapse:collapse;font-size:12.5px}td,th{padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
table.kv th{font-weight:normal;color:#495057}td.num{font-variant-numeric:tabular-nums}
table.filterable{width:100%}table.filterable thead th{position:sticky;top:0;background:#f1f3f5;border-bottom:1px solid #ced4da}
table.filterable tbody tr:nth-child(even){background:#f8f9fa}
table.profile td:nth-child(n+4){white-space:nowrap;overflow-wrap:normal}
tr.diverges td{background:#fff5f5;color:#c92a2a}tr.first td{background:#ffc9c9;font-weight:600}
.barcell{width:45%}.bar{height:10px;background:#74c0fc;border-radius:3px}
.filter{margin:4px 0 6px;padding:3px 6px;width:260px;border:1px solid #ced4da;border-radius:4px}
svg.chart{max-width:100%;height:auto;background:#fcfcfd;border:1px solid #e9ecef;border-radius:6px}
svg.chart .grid{stroke:#e9ecef}svg.chart .tick{font-size:10px;fill:#868e96}
svg.chart polyline{fill:none;stroke-width:1.6}.e64{stroke:#1c7ed6}.e32{stroke:#f59f00}.tol{stroke:#adb5bd;stroke-dasharray:4 3}
.l64{fill:#1c7ed6}.l32{fill:#f59f00}.ltol{fill:#adb5bd}svg.chart .div{fill:#e03131}
.controls{margin:6px 0;font-size:13px}.controls button{font-size:12px;padding:2px 8px;margin-right:2px}
.legend{margin-left:-10px;line-height:2}.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin:0 3px 0 10px;vertical-align:middle;border:1px solid}
.sw.changed{background:#ffe8cc;border-color:#e8590c}.sw.refused{background:#fff;border:2px dashed #c92a2a}
.sw.group{background:#e7f5ff;border-color:#1c7ed6}.sw.diverges{background:#ffc9c9;border-color:#c92a2a}
.panes{display:flex;gap:12px}.pane{flex:1;min-width:0;border:1px solid #dee2e6;border-radius:8px;padding:8px;max-height:640px;overflow:auto}
.pane svg{display:block;margin:0 auto}.pane svg text{font:11px ui-monospace,SFMono-Regular,Menlo,monospace;pointer-events:none}
.pane svg .n rect{fill:#f8f9fa;stroke:#adb5bd}.pane svg .n.group rect{fill:#e7f5ff;stroke:#1c7ed6}.pane svg .n.changed rect{fill:#ffe8cc;stroke:#e8590c}
.pane svg .n.refused rect{stroke:#c92a2a;stroke-width:2;stroke-dasharray:4 2}.pane svg .n.diverges rect{fill:#ffc9c9;stroke:#c92a2a;stroke-width:2}
.pane svg .n{cursor:pointer}
.pane svg path{fill:none;stroke:#909296;stroke-width:1;opacity:.7}.pane svg path.back{stroke-dasharray:3 3}
.pane svg .badge-c{fill:#e8590c}.pane svg .badge-r{fill:#c92a2a}.pane svg .badge-t{fill:#fff;font-size:10px}
"""

JS = r"""
(function(){
const D=JSON.parse(document.getElementById('graph-data').textContent);
const NS='http://www.w3.org/2000/svg', ROW=46, BOX=26, GAP=14, MAXV=110;
function prefixes(s){if(!s)return[];const p=s.split('.'),o=[];for(let i=1;i<=p.length;i++)o.push(p.slice(0,i).join('.'));return o;}
function prep(g){const size={};g.nodes.forEach(n=>prefixes(n.scope).forEach(p=>size[p]=(size[p]||0)+1));
 g.size=size;g.maxDepth=Math.max(0,...Object.keys(size).map(k=>k.split('.').length));g.open=new Set();return g;}
function rep(g,n){for(const p of prefixes(n.scope)){if(g.size[p]>=2&&!g.open.has(p))return 'g:'+p;}return n.id;}
function visibleCount(g){const s=new Set();g.nodes.forEach(n=>s.add(rep(g,n)));return s.size;}
function setLevel(g,L){g.open=new Set(Object.keys(g.size).filter(k=>k.split('.').length<=L));g.level=L;}
function el(t,a,p){const e=document.createElementNS(NS,t);for(const k in a)e.setAttribute(k,a[k]);if(p)p.appendChild(e);return e;}
function draw(g,host){
 const boxes=new Map(),order=[];
 g.nodes.forEach((n,i)=>{const r=rep(g,n);let b=boxes.get(r);
  if(!b){b={id:r,idx:order.length,members:[],group:r.startsWith('g:')};boxes.set(r,b);order.push(b);}b.members.push(n);});
 const edges=new Map();
 g.edges.forEach(([a,c])=>{const A=boxes.get(rep(g,g.nodes[a])),C=boxes.get(rep(g,g.nodes[c]));if(A!==C)edges.set(A.id+'>'+C.id,[A,C]);});
 order.forEach(b=>{b.preds=[];b.layer=0;});
 edges.forEach(([A,C])=>{if(A.idx<C.idx)C.preds.push(A);});
 order.forEach(b=>{b.preds.forEach(p=>{b.layer=Math.max(b.layer,p.layer+1);});});
 order.forEach(b=>{const n=b.members[0];
  if(b.group){const s=b.id.slice(2);b.label=s.split('.').pop()+'  ['+b.members.length+']';b.title=s+'\n'+b.members.length+' ops (click to open)';}
  else{b.label=n.label;b.title=n.id+'\n'+n.kind+(n.scope?'  in '+n.scope:'')+(n.shape.length?'\nshape '+n.shape.join('×'):'')+
   ((D.notes[n.id]||[]).map(s=>'\n'+s).join(''));}
  if(b.label.length>34)b.label=b.label.slice(0,15)+'…'+b.label.slice(-18);
  b.changed=b.members.filter(m=>m.changed).length;b.refused=b.members.filter(m=>m.refused).length;b.diverges=b.members.some(m=>m.diverges);
  b.w=Math.max(40,6.7*b.label.length+16+(b.group&&b.changed?22:0)+(b.group&&b.refused?22:0));});
 const layers=[];order.forEach(b=>{(layers[b.layer]=layers[b.layer]||[]).push(b);});
 function place(){layers.forEach(L=>{let w=L.reduce((s,b)=>s+b.w+GAP,-GAP),x=-w/2;L.forEach(b=>{b.x=x+b.w/2;x+=b.w+GAP;});});}
 place();
 for(let it=0;it<3;it++){layers.forEach((L,i)=>{if(!i)return;L.forEach(b=>{b.bc=b.preds.length?b.preds.reduce((s,p)=>s+p.x,0)/b.preds.length:b.x;});
  L.sort((a,c)=>a.bc-c.bc);});place();}
 let minx=Infinity,maxx=-Infinity;order.forEach(b=>{minx=Math.min(minx,b.x-b.w/2);maxx=Math.max(maxx,b.x+b.w/2);});
 const span=Math.max(1,...[...edges.values()].map(([A,C])=>C.layer-A.layer));
 const off=20-minx,W=maxx-minx+60+Math.min(span,30)*6,H=layers.length*ROW+20;
 host.innerHTML='';const svg=el('svg',{width:W,height:H,viewBox:`0 0 ${W} ${H}`},host);
 const eg=el('g',{},svg),ng=el('g',{},svg);
 edges.forEach(([A,C])=>{const x1=A.x+off,y1=A.layer*ROW+10+BOX,x2=C.x+off,y2=C.layer*ROW+10,d=C.layer-A.layer;
  let p;if(d===1)p=`M${x1},${y1} C${x1},${y1+12} ${x2},${y2-12} ${x2},${y2}`;
  else if(d>1){const bx=Math.max(x1,x2)+Math.max(A.w,C.w)/2+10+Math.min(d,30)*6;p=`M${x1},${y1} C${bx},${y1+ROW} ${bx},${y2-ROW} ${x2},${y2}`;}
  else{const bx=Math.min(x1,x2)-Math.max(A.w,C.w)/2-20;p=`M${x1},${y1} C${bx},${y1+ROW} ${bx},${y2-ROW} ${x2},${y2}`;}
  el('path',{d:p,class:d>0?'':'back'},eg);});
 order.forEach(b=>{const cls=['n'];if(b.group)cls.push('group');if(b.changed&&!b.group)cls.push('changed');
  if(b.refused&&!b.group)cls.push('refused');if(b.diverges)cls.push('diverges');
  const gg=el('g',{class:cls.join(' '),transform:`translate(${b.x+off-b.w/2},${b.layer*ROW+10})`,'data-id':b.id},ng);
  el('title',{},gg).textContent=b.title;el('rect',{width:b.w,height:BOX,rx:5},gg);
  const t=el('text',{x:8,y:17},gg);t.textContent=b.label;
  let bx=b.w-8;[[b.refused,'badge-r'],[b.changed,'badge-c']].forEach(([c,k])=>{if(!b.group||!c)return;bx-=10;
   el('circle',{cx:bx,cy:13,r:9,class:k},gg);const tt=el('text',{x:bx,y:16.5,'text-anchor':'middle',class:'badge-t'},gg);tt.textContent=c;bx-=12;});
  gg.addEventListener('click',()=>{if(b.group){g.open.add(b.id.slice(2));}else{
   const ps=prefixes(b.members[0].scope).filter(p=>g.size[p]>=2);if(!ps.length)return;g.open.delete(ps[ps.length-1]);}
   draw(g,host);});});
}
const G=[[prep(D.before),document.getElementById('g-before')],[prep(D.after),document.getElementById('g-after')]];
G.forEach(([g])=>{let L=g.maxDepth;for(;L>0;L--){setLevel(g,L);if(visibleCount(g)<=MAXV)break;}setLevel(g,L);
 g.nodes.filter(n=>n.diverges).forEach(n=>prefixes(n.scope).forEach(p=>g.open.add(p)));});
G.forEach(([g,h])=>{draw(g,h);const d=h.querySelector('g.diverges');  // show the first divergence
 if(d)h.parentElement.scrollTop=Math.max(0,d.transform.baseVal[0].matrix.f-160);});
document.querySelectorAll('.controls button').forEach(btn=>btn.addEventListener('click',()=>{
 G.forEach(([g,h])=>{const a=btn.dataset.act;setLevel(g,a==='all'?g.maxDepth:Math.max(0,Math.min(g.maxDepth,g.level+(a==='more'?1:-1))));draw(g,h);});}));
})();
"""

FILTER_JS = r"""
(function(){document.querySelectorAll('input.filter').forEach(inp=>{const t=document.querySelector('table.'+inp.dataset.table);
 inp.addEventListener('input',()=>{const q=inp.value.toLowerCase();t.querySelectorAll('tbody tr').forEach(r=>{
  r.style.display=r.textContent.toLowerCase().includes(q)?'':'none';});});});})();
"""


def to_html(report: Report) -> str:
    """The whole report as one self-contained HTML document."""
    graph_script = (f"<script>{JS}</script>" if report.graph_before else "") + f"<script>{FILTER_JS}</script>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>canonc report: {esc(report.model)}</title><style>{CSS}</style></head>
<body>
{summary_html(report)}
{graphs_html(report)}
{profile_html(report)}
{log_html(report)}
{graph_script}
</body></html>
"""
