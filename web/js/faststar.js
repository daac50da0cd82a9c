// FastSTAR for ComfyUI: the keep-ratio chart on the FastSTAR node and the run statistics on the
// STAR sampler. The numbers come from the pack's routes (/faststar/presets, /faststar/estimate),
// which use the engine's FLOP model; this file only draws them.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const FASTSTAR_NODE = "InfinityStarFastSTAR";
const SAMPLER_NODE = "InfinityStarSampler";
const MODEL_LOADER_NODE = "InfinityStarModelLoader";
const CUSTOM_PRESET = "custom";
const CHART_HEIGHT = 150;
const UPDATE_DELAY_MS = 150;
// Sampler settings the chart assumes when no sampler is connected.
const DEFAULT_SCHEDULE = { resolution: "720p", frames: 81, aspect_ratio: "auto" };

let presetsPromise = null;

function loadPresets() {
  if (!presetsPromise) {
    presetsPromise = api.fetchApi("/faststar/presets").then((response) => response.json());
  }
  return presetsPromise;
}

function widget(node, name) {
  return node.widgets?.find((item) => item.name === name);
}

function knobValues(node) {
  const values = {};
  for (const item of node.widgets ?? []) {
    if (item.name !== "preset" && item.type !== "faststar_chart") values[item.name] = item.value;
  }
  return values;
}

// The first STAR sampler that the FastSTAR node's output reaches, directly or through other nodes.
function downstreamSampler(node, seen = new Set()) {
  if (seen.has(node.id)) return null;
  seen.add(node.id);
  for (const output of node.outputs ?? []) {
    for (const linkId of output.links ?? []) {
      const link = app.graph.links[linkId] ?? app.graph.links.get?.(linkId);
      const target = link && app.graph.getNodeById(link.target_id);
      if (!target) continue;
      if (target.comfyClass === SAMPLER_NODE) return target;
      const found = downstreamSampler(target, seen);
      if (found) return found;
    }
  }
  return null;
}

// The model_name of the model loader that feeds the FastSTAR node, directly or through other nodes.
function upstreamModelName(node, seen = new Set()) {
  if (!node || seen.has(node.id)) return null;
  seen.add(node.id);
  if (node.comfyClass === MODEL_LOADER_NODE) return widget(node, "model_name")?.value ?? null;
  const input = node.inputs?.find((item) => item.name === "model");
  if (input?.link == null) return null;
  const link = app.graph.links[input.link] ?? app.graph.links.get?.(input.link);
  return link ? upstreamModelName(app.graph.getNodeById(link.origin_id), seen) : null;
}

// The schedule the chart estimates. The route picks the demo schedule when model_name is the demo model.
function scheduleFor(node) {
  const model_name = upstreamModelName(node);
  const sampler = downstreamSampler(node);
  if (!sampler) return { ...DEFAULT_SCHEDULE, model_name };
  const resolution = widget(sampler, "resolution")?.value ?? "auto";
  return {
    resolution: resolution === "auto" ? DEFAULT_SCHEDULE.resolution : resolution,
    frames: widget(sampler, "frames")?.value ?? DEFAULT_SCHEDULE.frames,
    aspect_ratio: widget(sampler, "aspect_ratio")?.value ?? "auto",
    model_name,
  };
}

function drawChart(canvas, state) {
  const context = canvas.getContext("2d");
  const width = canvas.width;
  const height = canvas.height;
  context.clearRect(0, 0, width, height);
  context.fillStyle = "#1e1e1e";
  context.fillRect(0, 0, width, height);
  context.font = "12px sans-serif";

  if (state.error) {
    context.fillStyle = "#e88";
    context.fillText(state.error.slice(0, 80), 6, 16);
    return;
  }
  const scales = state.scales;
  const top = 22;
  const bottom = height - 16;
  const barWidth = Math.max(2, (width - 12) / Math.max(1, scales.length));
  scales.forEach((scale, index) => {
    const barHeight = (bottom - top) * scale.keep_ratio;
    const x = 6 + index * barWidth;
    let color = scale.clip === 0 ? "#4a6a8a" : "#4a8a6a"; // image clip blue, video clips green
    if (scale.keep_ratio < 1) color = "#e0a030"; // pruned scales orange
    context.fillStyle = color;
    context.fillRect(x, bottom - barHeight, Math.max(1, barWidth - 1), barHeight);
  });
  context.fillStyle = "#ddd";
  const frames = state.schedule.frames;
  context.fillText(
    `est. speedup ${state.speedup.toFixed(2)}x (FLOP model, ${state.preset}, ${frames} frames)`,
    6,
    14,
  );
  context.fillStyle = "#999";
  context.fillText("keep ratio per scale (orange: pruned)", 6, height - 3);
}

async function updateChart(node) {
  const chart = node.faststarChart;
  const schedule = scheduleFor(node);
  const body = { preset: widget(node, "preset")?.value, knobs: knobValues(node), ...schedule };
  const request = (chart.requestId = (chart.requestId ?? 0) + 1);
  let state;
  try {
    const response = await api.fetchApi("/faststar/estimate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const payload = await response.json();
    state = response.ok
      ? {
          schedule,
          preset: payload.preset,
          speedup: payload.speedup,
          scales: payload.scales,
          keepRatios: payload.scales.map((s) => s.keep_ratio),
        }
      : { schedule, error: payload.error ?? `estimate failed (${response.status})` };
  } catch (error) {
    state = { schedule, error: String(error) };
  }
  if (request !== chart.requestId) return; // a newer request is on its way
  Object.assign(chart, state, { updates: (chart.updates ?? 0) + 1 });
  drawChart(chart.canvas, chart);
  node.setDirtyCanvas?.(true, true);
}

function scheduleUpdate(node) {
  if (!node.faststarChart) return;
  clearTimeout(node.faststarChart.timer);
  node.faststarChart.timer = setTimeout(() => updateChart(node), UPDATE_DELAY_MS);
}

async function applyPreset(node, name) {
  const presets = await loadPresets();
  const values = presets[name];
  if (!values) return;
  node.faststarChart.applyingPreset = true;
  for (const [key, value] of Object.entries(values)) {
    const item = widget(node, key);
    if (item) item.value = value;
  }
  node.faststarChart.applyingPreset = false;
}

function onKnobChanged(node, item) {
  if (item.name === "preset") {
    if (item.value !== CUSTOM_PRESET) applyPreset(node, item.value).then(() => scheduleUpdate(node));
    else scheduleUpdate(node);
    return;
  }
  const preset = widget(node, "preset");
  if (preset && preset.value !== CUSTOM_PRESET && !node.faststarChart.applyingPreset) {
    preset.value = CUSTOM_PRESET; // an edited knob no longer matches the named preset
  }
  scheduleUpdate(node);
}

function setUpFastStarNode(node) {
  const container = document.createElement("div");
  const canvas = document.createElement("canvas");
  canvas.width = 320;
  canvas.height = CHART_HEIGHT;
  canvas.style.width = "100%";
  canvas.style.height = `${CHART_HEIGHT}px`;
  canvas.dataset.faststarChart = "1";
  container.appendChild(canvas);
  node.addDOMWidget("faststar_chart", "faststar_chart", container, {
    serialize: false,
    getMinHeight: () => CHART_HEIGHT + 10,
  });
  node.faststarChart = { canvas, updates: 0 };

  for (const item of node.widgets ?? []) {
    if (item.type === "faststar_chart") continue;
    const original = item.callback;
    item.callback = function (...args) {
      const result = original?.apply(this, args);
      onKnobChanged(node, item);
      return result;
    };
  }
  scheduleUpdate(node);
}

function refreshUpstreamCharts(sampler) {
  for (const node of app.graph._nodes ?? []) {
    if (node.comfyClass === FASTSTAR_NODE && downstreamSampler(node) === sampler) scheduleUpdate(node);
  }
}

// A model loader's choice sets the schedule (the demo model has its own), so every chart refreshes.
function setUpModelLoaderNode(node) {
  const item = widget(node, "model_name");
  if (!item) return;
  const original = item.callback;
  item.callback = function (...args) {
    const result = original?.apply(this, args);
    for (const other of app.graph._nodes ?? []) {
      if (other.comfyClass === FASTSTAR_NODE) scheduleUpdate(other);
    }
    return result;
  };
}

function statisticsText(stats) {
  return [
    `time ${stats.seconds.toFixed(1)} s`,
    `tokens refined ${stats.tokens_refined.toLocaleString()} of ${stats.tokens.toLocaleString()}` +
      ` (${(100 * stats.refined_fraction).toFixed(1)} %)`,
    `est. speedup ${stats.estimated_speedup.toFixed(2)}x (FLOP model), pruning ${stats.pruning}`,
  ].join("\n");
}

function setUpSamplerNode(node) {
  const display = document.createElement("pre");
  display.style.cssText = "margin:0;padding:4px;font-size:11px;white-space:pre-wrap;color:#ccc;";
  display.textContent = "last run: none yet";
  display.dataset.faststarStats = "1";
  node.addDOMWidget("faststar_stats", "faststar_stats", display, { serialize: false, getMinHeight: () => 56 });
  node.faststarStatsDisplay = display;

  for (const item of node.widgets ?? []) {
    if (!["resolution", "frames", "aspect_ratio"].includes(item.name)) continue;
    const original = item.callback;
    item.callback = function (...args) {
      const result = original?.apply(this, args);
      refreshUpstreamCharts(node);
      return result;
    };
  }
}

app.registerExtension({
  name: "faststar.comfyui",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === FASTSTAR_NODE) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        setUpFastStarNode(this);
        return result;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const result = onConfigure?.apply(this, arguments);
        scheduleUpdate(this);
        return result;
      };
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function () {
        const result = onConnectionsChange?.apply(this, arguments);
        scheduleUpdate(this);
        return result;
      };
    }

    if (nodeData.name === MODEL_LOADER_NODE) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        setUpModelLoaderNode(this);
        return result;
      };
    }

    if (nodeData.name === SAMPLER_NODE) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        setUpSamplerNode(this);
        return result;
      };
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const result = onExecuted?.apply(this, arguments);
        const stats = output?.faststar_stats?.[0];
        if (stats) {
          this.faststarStats = stats;
          this.faststarStatsDisplay.textContent = statisticsText(stats);
        }
        return result;
      };
    }
  },
});
