// A small SVG line chart for the dashboard: no chart library, a few hundred bytes of code.

export interface Series {
  name: string;
  color: string;
  values: (number | null)[];
}

/** Upper bound for the y axis: a "nice" number above every value (at least `floor`). */
export function niceMax(values: (number | null)[], floor = 1): number {
  const max = Math.max(floor, ...values.filter((v): v is number => v !== null && Number.isFinite(v)));
  const p = Math.pow(10, Math.floor(Math.log10(max)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** SVG path data for `values` over `n` slots in a `w`×`h` box; gaps (null) break the line. */
export function linePath(values: (number | null)[], n: number, w: number, h: number, max: number): string {
  const step = n > 1 ? w / (n - 1) : 0;
  const offset = n - values.length;
  let d = "";
  let pen = false;
  values.forEach((v, i) => {
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    const x = (offset + i) * step;
    const y = h - (Math.min(v, max) / max) * h;
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  });
  return d;
}

/** A y-axis label: no trailing zeros. */
export function axisLabel(v: number): string {
  return String(Number(v.toFixed(2)));
}

const NS = "http://www.w3.org/2000/svg";

function el(name: string, attrs: Record<string, string | number>): SVGElement {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

/** An event on the timeline: at value index `at` of the series (a failover, a re-route). */
export interface Mark {
  at: number;
  label: string;
}

/** A chart of `series` over the last `slots` seconds with a y axis in `unit`, and `marks`
 * as dashed vertical lines (hover shows what happened). */
export function lineChart(series: Series[], slots: number, unit: string, floor = 1, marks: Mark[] = []): SVGSVGElement {
  const W = 520;
  const H = 150;
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const w = W - pad.l - pad.r;
  const h = H - pad.t - pad.b;
  const max = niceMax(series.flatMap((s) => s.values), floor);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" }) as SVGSVGElement;
  const DIV = 5;
  for (let i = 0; i <= DIV; i++) {
    const y = pad.t + (h * i) / DIV;
    svg.appendChild(el("line", { x1: pad.l, x2: W - pad.r, y1: y, y2: y, class: "grid" }));
    const label = el("text", { x: pad.l - 6, y: y + 4, class: "axis", "text-anchor": "end" });
    label.textContent = `${axisLabel(max * (1 - i / DIV))}${i === 0 ? ` ${unit}` : ""}`;
    svg.appendChild(label);
  }
  const g = el("g", { transform: `translate(${pad.l},${pad.t})` });
  for (const s of series) {
    g.appendChild(el("path", { d: linePath(s.values, slots, w, h, max), stroke: s.color, class: "line" }));
  }
  const len = series[0]?.values.length ?? 0;
  const step = slots > 1 ? w / (slots - 1) : 0;
  for (const m of marks) {
    const x = (slots - len + m.at) * step;
    if (x < 0 || x > w) continue;
    const line = el("line", { x1: x, x2: x, y1: 0, y2: h, class: "mark", "data-testid": "chart-mark" });
    const title = el("title", {});
    title.textContent = m.label;
    line.appendChild(title);
    g.appendChild(line);
  }
  svg.appendChild(g);
  const t = el("text", { x: W - pad.r, y: H - 4, class: "axis", "text-anchor": "end" });
  t.textContent = `${slots} s`;
  svg.appendChild(t);
  return svg;
}
