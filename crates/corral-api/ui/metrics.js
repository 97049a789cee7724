// Live usage graphs: GET /1.0/metrics (Prometheus's text format) every few seconds, turned
// into per-instance CPU, memory and network sparklines drawn as inline SVG.

import { getText } from "./api.js";

const POLL_MS = 5000;
/** Points kept per graph: five minutes at one every five seconds. */
const KEEP = 60;
const SVG = "http://www.w3.org/2000/svg";

/** One sample line: `name{labels} value` (the API always writes labels). */
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** The samples of `text` as {name, labels, value}, comments skipped. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, raw] of match[2].matchAll(LABEL)) {
      labels[key] = raw.replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** Per instance, while it runs (usage exists only then): CPU seconds, memory and nic bytes. */
function perInstance(samples) {
  const instances = new Map();
  const entry = (name) => {
    // No nic sample at all (an instance without nics) stays null, unlike zero bytes.
    if (!instances.has(name)) instances.set(name, { nicBytes: null });
    return instances.get(name);
  };
  for (const { name, labels, value } of samples) {
    if (!labels.name) continue;
    const instance = entry(labels.name);
    if (name === "corral_instance_cpu_seconds_total") instance.cpuSeconds = value;
    else if (name === "corral_instance_memory_bytes") instance.memoryBytes = value;
    else if (/^corral_instance_nic_(receive|transmit)_bytes_total$/.test(name)) {
      instance.nicBytes = (instance.nicBytes ?? 0) + value;
    }
  }
  return instances;
}

export function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** A polyline of `values` (the oldest left) scaled into a 120×28 box, zero at the bottom. */
function sparkline(values) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 120 28");
  svg.setAttribute("class", "sparkline");
  const finite = values.filter(Number.isFinite);
  if (finite.length > 1) {
    const max = Math.max(...finite, 1e-9);
    const step = 120 / (values.length - 1);
    const point = (v, i) => `${(i * step).toFixed(1)},${(27 - (v / max) * 25).toFixed(1)}`;
    const points = values
      .map((v, i) => (Number.isFinite(v) ? point(v, i) : null))
      .filter(Boolean)
      .join(" ");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points);
    svg.append(line);
  }
  return svg;
}

/** Polls the metrics and draws the graphs of the running instances into `element`. */
export class UsageGraphs {
  constructor(element) {
    this.element = element;
    this.history = new Map(); // name -> { last, cpu: [], memory: [], network: [] }
    this.timer = null;
  }

  start() {
    this.poll();
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  async poll() {
    let samples;
    try {
      samples = parseMetrics(await getText("/1.0/metrics"));
    } catch (err) {
      this.showError(err.message);
      return;
    }
    const now = performance.now() / 1000;
    const running = new Set();
    for (const [name, current] of perInstance(samples)) {
      if (current.memoryBytes === undefined && current.cpuSeconds === undefined) continue;
      running.add(name);
      const history = this.history.get(name) ?? { cpu: [], memory: [], network: [] };
      const last = history.last;
      const rate = (a, b) => (last && a !== undefined && b != null && a >= b ? (a - b) / (now - last.at) : NaN);
      push(history.cpu, rate(current.cpuSeconds, last?.cpuSeconds) * 100);
      push(history.memory, current.memoryBytes ?? NaN);
      push(history.network, current.nicBytes === null ? NaN : rate(current.nicBytes, last?.nicBytes));
      history.last = { at: now, cpuSeconds: current.cpuSeconds, nicBytes: current.nicBytes, hasNic: current.nicBytes !== null };
      this.history.set(name, history);
    }
    // A stopped instance's graphs go; a new run starts them afresh.
    for (const name of this.history.keys()) {
      if (!running.has(name)) this.history.delete(name);
    }
    this.render();
  }

  showError(sentence) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = `cannot read the metrics: ${sentence}`;
    this.element.replaceChildren(p);
  }

  render() {
    const cards = [];
    for (const [name, history] of [...this.history].sort(([a], [b]) => a.localeCompare(b))) {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.metrics = name;
      const title = document.createElement("h3");
      title.textContent = name;
      card.append(title);
      const lastOf = (values) => values[values.length - 1];
      const rows = [
        ["cpu", "CPU", history.cpu, (v) => `${v.toFixed(1)} %`],
        ["memory", "Memory", history.memory, formatBytes],
        ["network", "Network", history.network, (v) => `${formatBytes(v)}/s`],
      ];
      for (const [key, label, values, format] of rows) {
        const row = document.createElement("div");
        row.className = "series";
        row.dataset.series = key;
        const caption = document.createElement("span");
        caption.textContent = label;
        const value = document.createElement("span");
        value.className = "value";
        const latest = lastOf(values);
        if (Number.isFinite(latest)) value.textContent = format(latest);
        else if (key === "network" && !history.last.hasNic) value.textContent = "no nic";
        else value.textContent = "…";
        row.append(caption, sparkline(values), value);
        card.append(row);
      }
      cards.push(card);
    }
    if (cards.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No instance is running.";
      cards.push(p);
    }
    this.element.replaceChildren(...cards);
  }
}

function push(values, value) {
  values.push(value);
  if (values.length > KEEP) values.shift();
}
