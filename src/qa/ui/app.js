// Penumbra QA case page: slice viewer with U-Net and threshold outlines, mask correction with a
// brush and an eraser, and the review decisions. Every UI string comes from the server's table.
(function () {
  'use strict';

  const data = JSON.parse(document.getElementById('qa-data').textContent);
  const S = data.strings;
  const caseId = data.case_id;
  const root = document.getElementById('case');

  // Colours: filled = the mask being edited, outlines = the two sources.
  const FILL = { 1: [40, 200, 80, 90], 2: [255, 40, 40, 110] };
  const UNET_OUTLINE = { 1: [60, 255, 100, 255], 2: [255, 60, 60, 255] };
  const THRESHOLD_OUTLINE = { 1: [60, 220, 255, 255], 2: [255, 80, 255, 255] };
  const DISPLAY_SIZE = 384;

  const view = {
    info: null,
    slice: 0,
    tool: null,
    brush: 3,
    paintLabel: 2,
    scale: 1,
    labels: new Map(),
    edits: new Map(),
    dirty: new Set(),
    images: new Map(),
    painting: false,
    busy: false,
  };

  function element(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === 'text') node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.appendChild(child);
    return node;
  }

  async function api(method, path, body) {
    const options = { method, credentials: 'same-origin', headers: {} };
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (response.status === 204) return null;
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(json.error || response.status + ' ' + response.statusText);
    return json;
  }

  function decodeRle(rle) {
    const out = new Uint8Array(rle.width * rle.height);
    let position = 0;
    for (const [value, count] of rle.runs) {
      out.fill(value, position, position + count);
      position += count;
    }
    return out;
  }

  function encodeRle(values, width, height) {
    const runs = [];
    for (const value of values) {
      const last = runs[runs.length - 1];
      if (last && last[0] === value) last[1] += 1;
      else runs.push([value, 1]);
    }
    return { width, height, runs };
  }

  function setStatus(text) {
    document.getElementById('status').textContent = text;
  }

  function button(id, text, onClick, extraClass) {
    const node = element('button', { id, type: 'button', text, class: extraClass || '' });
    node.addEventListener('click', onClick);
    return node;
  }

  function buildLayout() {
    const info = view.info;
    const sliceLabel = element('span', { id: 'slice-label' });
    const size = element('input', { id: 'brush-size', type: 'range', min: '1', max: '15', value: String(view.brush) });
    size.addEventListener('input', () => { view.brush = Number(size.value); });
    const labelSelect = element('select', { id: 'paint-label' }, [
      element('option', { value: '2', text: S.core }),
      element('option', { value: '1', text: S.penumbra }),
    ]);
    labelSelect.addEventListener('change', () => { view.paintLabel = Number(labelSelect.value); });

    const toolbar = element('div', { class: 'toolbar' }, [
      button('accept', S.accept + ' (A)', () => decide('accept'), 'accept'),
      button('reject', S.reject + ' (R)', () => decide('reject'), 'reject'),
      button('accept-threshold', S.accept_threshold + ' (T)', () => decide('accept_threshold')),
      element('span', { text: '|' }),
      element('strong', { text: S.correct_mask + ':' }),
      button('tool-brush', S.brush + ' (B)', () => selectTool('brush')),
      button('tool-eraser', S.eraser + ' (E)', () => selectTool('eraser')),
      element('label', { text: S.brush_size + ' ' }, [size]),
      element('label', { text: S.paint_label + ' ' }, [labelSelect]),
      button('save', S.save + ' (S)', save),
    ]);
    const navigation = element('div', { class: 'toolbar' }, [
      button('slice-prev', '◀', () => showSlice(view.slice - 1)),
      sliceLabel,
      button('slice-next', '▶', () => showSlice(view.slice + 1)),
    ]);

    view.scale = Math.max(1, Math.floor(DISPLAY_SIZE / Math.max(info.width, info.height)));
    const viewer = element('div', { class: 'viewer' }, ['cbf', 'tmax'].map((map) => {
      const canvas = element('canvas', {
        id: 'canvas-' + map,
        width: String(info.width * view.scale),
        height: String(info.height * view.scale),
      });
      attachPainting(canvas);
      return element('figure', {}, [canvas, element('figcaption', { text: map === 'cbf' ? 'CBF' : 'Tmax' })]);
    }));

    const legend = element('p', { class: 'legend' });
    const legendItems = [
      [UNET_OUTLINE[2], S.unet + ' – ' + S.core], [UNET_OUTLINE[1], S.unet + ' – ' + S.penumbra],
      [THRESHOLD_OUTLINE[2], S.threshold + ' – ' + S.core], [THRESHOLD_OUTLINE[1], S.threshold + ' – ' + S.penumbra],
    ];
    for (const [colour, text] of legendItems) {
      const swatch = element('span');
      swatch.style.background = 'rgb(' + colour.slice(0, 3).join(',') + ')';
      legend.appendChild(swatch);
      legend.appendChild(document.createTextNode(text));
    }

    root.replaceChildren(
      toolbar, navigation, element('p', { id: 'status', class: 'status', role: 'status' }),
      viewer, legend, element('p', { class: 'shortcuts', text: S.shortcuts }),
      element('div', { class: 'panels' }, [volumePanel(info), componentPanel(info), auditPanel()]),
    );
  }

  // Formats a number with the page language's decimal separator.
  function decimal(value, digits) {
    return value.toLocaleString(data.lang, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function row(cells) {
    return element('tr', {}, cells.map((text) => element('td', { text: String(text) })));
  }

  function volumePanel(info) {
    const volumes = info.volumes;
    const table = element('table', { id: 'volumes' }, [
      element('tr', {}, ['', S.core, S.hypoperfused].map((text) => element('th', { text }))),
      row([S.unet, decimal(volumes.unet.core_ml, 1), decimal(volumes.unet.hypoperfused_ml, 1)]),
      row([S.threshold, decimal(volumes.threshold.core_ml, 1), decimal(volumes.threshold.hypoperfused_ml, 1)]),
    ]);
    return element('section', {}, [
      element('h2', { text: S.volumes }), table,
      element('p', { text: S.model_version + ': ' + info.model_version }),
      element('p', { text: S.state + ': ' + (S['state_' + info.state] || info.state) }),
    ]);
  }

  function componentPanel(info) {
    const confidence = info.confidence;
    const headline = S.confidence + ': ' + decimal(confidence.score, 2) + (confidence.assessable ? '' : ' (' + S.not_assessable + ')');
    const rows = Object.entries(confidence.components).map(([name, value]) => row([S['component_' + name] || name, decimal(value, 2)]));
    const reasons = element('ul', { id: 'reasons' }, confidence.reasons.map((text) => element('li', { text })));
    return element('section', {}, [
      element('h2', { text: headline }), element('h3', { text: S.components }),
      element('table', { id: 'components' }, rows), element('h3', { text: S.reasons }), reasons,
    ]);
  }

  function auditPanel() {
    const list = element('ol', { id: 'audit' });
    api('GET', '/api/cases/' + caseId + '/audit').then((json) => {
      for (const entry of json.entries) {
        const transition = (entry.from_state ? entry.from_state + ' → ' : '') + entry.to_state;
        const note = entry.note ? ' (' + entry.note + ')' : '';
        const at = new Date(entry.at).toLocaleString(data.lang);
        list.appendChild(element('li', { text: at + ' ' + entry.who + ': ' + entry.what + ', ' + transition + note }));
      }
    }).catch((error) => setStatus(error.message));
    return element('section', {}, [element('h2', { text: S.audit_log }), list]);
  }

  function loadImage(map, slice) {
    const key = map + ':' + slice;
    if (!view.images.has(key)) {
      view.images.set(key, new Promise((resolve, reject) => {
        const image = new Image();
        image.onload = () => resolve(image);
        image.onerror = () => reject(new Error('image ' + key + ' failed to load'));
        image.src = '/api/cases/' + caseId + '/image/' + map + '/' + slice;
      }));
    }
    return view.images.get(key);
  }

  async function loadLabels(slice) {
    if (!view.labels.has(slice)) {
      const json = await api('GET', '/api/cases/' + caseId + '/labels/' + slice);
      const labels = { unet: decodeRle(json.unet), threshold: decodeRle(json.threshold) };
      view.labels.set(slice, labels);
      if (!view.edits.has(slice)) {
        view.edits.set(slice, json.corrected ? decodeRle(json.corrected) : labels.unet.slice());
      }
    }
    return view.labels.get(slice);
  }

  async function showSlice(slice) {
    const info = view.info;
    if (slice < 0 || slice >= info.slices) return;
    view.slice = slice;
    document.getElementById('slice-label').textContent = S.slice + ' ' + (slice + 1) + ' / ' + info.slices;
    try {
      await Promise.all([loadLabels(slice), loadImage('cbf', slice), loadImage('tmax', slice)]);
      if (view.slice === slice) await draw();
    } catch (error) {
      setStatus(error.message);
    }
  }

  function isEdge(values, width, height, x, y, member) {
    const index = y * width + x;
    if (!member(values[index])) return false;
    if (x === 0 || y === 0 || x === width - 1 || y === height - 1) return true;
    return !member(values[index - 1]) || !member(values[index + 1]) ||
      !member(values[index - width]) || !member(values[index + width]);
  }

  function paintPixel(pixels, canvasWidth, x, y, colour) {
    const scale = view.scale;
    for (let dy = 0; dy < scale; dy++) {
      for (let dx = 0; dx < scale; dx++) {
        const offset = ((y * scale + dy) * canvasWidth + (x * scale + dx)) * 4;
        const alpha = colour[3] / 255;
        for (let c = 0; c < 3; c++) pixels[offset + c] = pixels[offset + c] * (1 - alpha) + colour[c] * alpha;
      }
    }
  }

  function drawOutline(pixels, canvasWidth, values, colours) {
    const { width, height } = view.info;
    const members = { 1: (v) => v > 0, 2: (v) => v === 2 };
    for (const label of [1, 2]) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          if (isEdge(values, width, height, x, y, members[label])) paintPixel(pixels, canvasWidth, x, y, colours[label]);
        }
      }
    }
  }

  async function draw() {
    const slice = view.slice;
    const labels = view.labels.get(slice);
    const edit = view.edits.get(slice);
    if (!labels || !edit) return;
    const { width, height } = view.info;
    for (const map of ['cbf', 'tmax']) {
      const image = await loadImage(map, slice);
      const canvas = document.getElementById('canvas-' + map);
      const context = canvas.getContext('2d');
      context.imageSmoothingEnabled = false;
      context.drawImage(image, 0, 0, canvas.width, canvas.height);
      const frame = context.getImageData(0, 0, canvas.width, canvas.height);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const value = edit[y * width + x];
          if (value > 0) paintPixel(frame.data, canvas.width, x, y, FILL[value]);
        }
      }
      drawOutline(frame.data, canvas.width, labels.threshold, THRESHOLD_OUTLINE);
      drawOutline(frame.data, canvas.width, labels.unet, UNET_OUTLINE);
      context.putImageData(frame, 0, 0);
    }
  }

  function selectTool(tool) {
    view.tool = view.tool === tool ? null : tool;
    document.getElementById('tool-brush').classList.toggle('active', view.tool === 'brush');
    document.getElementById('tool-eraser').classList.toggle('active', view.tool === 'eraser');
  }

  function paintAt(canvas, event) {
    const rect = canvas.getBoundingClientRect();
    const { width, height } = view.info;
    const cx = Math.floor(((event.clientX - rect.left) / rect.width) * width);
    const cy = Math.floor(((event.clientY - rect.top) / rect.height) * height);
    const edit = view.edits.get(view.slice);
    if (!edit) return;
    const value = view.tool === 'eraser' ? 0 : view.paintLabel;
    const radius = view.brush - 1;
    for (let y = Math.max(0, cy - radius); y <= Math.min(height - 1, cy + radius); y++) {
      for (let x = Math.max(0, cx - radius); x <= Math.min(width - 1, cx + radius); x++) {
        if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= radius * radius) edit[y * width + x] = value;
      }
    }
    view.dirty.add(view.slice);
  }

  function attachPainting(canvas) {
    canvas.addEventListener('pointerdown', (event) => {
      if (!view.tool) return;
      view.painting = true;
      canvas.setPointerCapture(event.pointerId);
      paintAt(canvas, event);
      draw();
    });
    canvas.addEventListener('pointermove', (event) => {
      if (!view.painting) return;
      paintAt(canvas, event);
      draw();
    });
    const stop = () => { view.painting = false; };
    canvas.addEventListener('pointerup', stop);
    canvas.addEventListener('pointercancel', stop);
  }

  async function decide(action) {
    if (view.busy) return;
    view.busy = true;
    try {
      await api('POST', '/api/cases/' + caseId + '/decision', { action });
      view.dirty.clear();
      setStatus(S.decided);
      window.location.href = '/';
    } catch (error) {
      setStatus(S.decision_failed + ': ' + error.message);
    } finally {
      view.busy = false;
    }
  }

  async function save() {
    if (view.busy) return;
    view.busy = true;
    const { width, height } = view.info;
    try {
      for (const slice of Array.from(view.dirty).sort((a, b) => a - b)) {
        await api('PUT', '/api/cases/' + caseId + '/mask/' + slice, encodeRle(view.edits.get(slice), width, height));
        view.dirty.delete(slice);
      }
      await api('POST', '/api/cases/' + caseId + '/decision', { action: 'correct' });
      setStatus(S.saved);
      window.location.href = '/';
    } catch (error) {
      setStatus(S.decision_failed + ': ' + error.message);
    } finally {
      view.busy = false;
    }
  }

  function onKey(event) {
    const tag = event.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA' || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      a: () => decide('accept'),
      r: () => decide('reject'),
      t: () => decide('accept_threshold'),
      b: () => selectTool('brush'),
      e: () => selectTool('eraser'),
      s: save,
      ArrowLeft: () => showSlice(view.slice - 1),
      ArrowDown: () => showSlice(view.slice - 1),
      ArrowRight: () => showSlice(view.slice + 1),
      ArrowUp: () => showSlice(view.slice + 1),
      '[': () => { view.brush = Math.max(1, view.brush - 1); document.getElementById('brush-size').value = view.brush; },
      ']': () => { view.brush = Math.min(15, view.brush + 1); document.getElementById('brush-size').value = view.brush; },
    };
    const handler = actions[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    if (handler) {
      event.preventDefault();
      handler();
    }
  }

  window.addEventListener('beforeunload', (event) => {
    if (view.dirty.size > 0) {
      event.preventDefault();
      event.returnValue = '';
    }
  });

  api('GET', '/api/cases/' + caseId).then((info) => {
    view.info = info;
    buildLayout();
    document.addEventListener('keydown', onKey);
    return showSlice(Math.floor(info.slices / 2));
  }).catch((error) => {
    root.textContent = error.message;
  });
})();
