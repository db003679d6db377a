// Nozzle console: the little JavaScript the server-rendered pages need.
// Every state change goes through fetch with the session's CSRF token in a
// header; creations also carry a form token, so a double-clicked submit
// creates once. No framework, no build step.
(function () {
  'use strict';

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || '';

  function newToken() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  // errorMessage turns an API answer into a sentence for the page.
  async function errorMessage(res) {
    // The session ended (signed out elsewhere, expired, cookie gone): say
    // what to do, not the API's "sign in" error.
    if (res.status === 401) return 'Your session has ended. Reload the page and sign in again.';
    let msg = '';
    try {
      const j = await res.json();
      msg = j && j.error && j.error.message;
    } catch (_) { /* not JSON */ }
    // a server error: its request id, for the operator's log
    const id = res.status >= 500 ? res.headers.get('X-Request-Id') : '';
    if (msg) return msg + (id ? ' (request id ' + id + ')' : '');
    if (res.status === 413) return 'The upload is too large.';
    return 'The request failed (HTTP ' + res.status + ')' + (id ? ', request id ' + id : '') + '. Please try again.';
  }

  async function api(method, url, body, formToken) {
    const headers = { 'X-CSRF-Token': csrf(), Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (formToken) headers['X-Form-Token'] = formToken;
    let res;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
    } catch (_) {
      throw new Error('Could not reach the server. Check your connection and try again.');
    }
    if (!res.ok) {
      const e = new Error(await errorMessage(res));
      e.status = res.status;
      throw e;
    }
    const ct = res.headers.get('Content-Type') || '';
    return ct.includes('json') ? res.json() : null;
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  // ----- dialogs -----
  function showSecret(title, text, value) {
    const d = $('#secret-dialog');
    $('#secret-title').textContent = title;
    $('#secret-text').textContent = text;
    $('#secret-value').textContent = value;
    $('#secret-status').textContent = '';
    // Escape before the secret was copied asks once more: it is never
    // shown again
    let warned = false;
    const onCancel = (ev) => {
      if (warned || /Copied/.test($('#secret-status').textContent)) return;
      ev.preventDefault();
      warned = true;
      $('#secret-status').textContent = 'Not copied yet: it is not shown again. Press Escape again or Done to close.';
    };
    d.addEventListener('cancel', onCancel);
    d.addEventListener('close', () => { d.removeEventListener('cancel', onCancel); location.reload(); }, { once: true });
    d.showModal();
  }

  // confirmAction asks before run; the button that runs it says what it
  // does ("Revoke key"), not only "Confirm"
  function confirmAction(text, run, label) {
    const d = $('#confirm-dialog');
    const ok = $('#confirm-ok');
    const err = $('#confirm-error');
    $('#confirm-text').textContent = text;
    err.textContent = '';
    const fresh = ok.cloneNode(true);
    fresh.textContent = label || 'Confirm';
    ok.replaceWith(fresh);
    fresh.addEventListener('click', async () => {
      busy(fresh, true);
      try {
        await run();
        d.close();
      } catch (e) {
        // Already gone (another tab, another user): show the list as it is.
        if (e.status === 404) { d.close(); location.reload(); return; }
        err.textContent = e.message;
      } finally {
        busy(fresh, false);
      }
    });
    d.showModal();
  }

  // ----- copy buttons -----
  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      const ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.appendChild(ta);
      ta.select();
      const ok = document.execCommand && document.execCommand('copy');
      ta.remove();
      return !!ok;
    }
  }

  document.addEventListener('click', async (ev) => {
    const btn = ev.target.closest('[data-copy]');
    if (!btn) return;
    const src = document.getElementById(btn.dataset.copy);
    if (!src) return;
    const ok = await copyText(src.textContent);
    const label = btn.textContent;
    btn.textContent = ok ? 'Copied' : 'Press Ctrl+C';
    const status = $('#secret-status');
    if (status && btn.closest('dialog')) status.textContent = ok ? 'Copied to the clipboard.' : 'Select the text and copy it.';
    setTimeout(() => { btn.textContent = label; }, 1600);
  });

  // ----- JSON forms (data-api) -----
  function formBody(form) {
    const body = {};
    for (const el of form.elements) {
      if (!el.name || el.disabled || el.type === 'submit') continue;
      if (el.type === 'checkbox') {
        if (!Array.isArray(body[el.name])) body[el.name] = [];
        if (el.checked) body[el.name].push(el.value);
        continue;
      }
      // a password is taken as typed: trimmed, it would not be the one
      // the sign-in form (which sends it whole) is given later
      const v = el.type === 'password' ? el.value : el.value.trim();
      if (v === '') continue;
      body[el.name] = el.dataset.type === 'number' ? Number(v) : el.dataset.type === 'boolean' ? v === 'true' : v;
    }
    return body;
  }

  function succeed(el, res) {
    const how = el.dataset.success || 'reload';
    if (how === 'secret') {
      const value = res && res[el.dataset.secretField];
      if (value) {
        showSecret(el.dataset.secretTitle || 'Copy it now', el.dataset.secretText || 'It is shown only once.', value);
        return;
      }
    }
    location.reload();
  }

  for (const form of $$('form[data-api]')) {
    form.dataset.token = newToken();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const err = $('.form-error', form);
      const btn = $('button[type=submit]', form);
      if (err) err.textContent = '';
      if (!form.reportValidity()) return;
      if (btn && btn.disabled) return;
      busy(btn, true);
      try {
        const res = await api(form.dataset.method || 'POST', form.dataset.api, formBody(form), form.dataset.token);
        form.dataset.token = newToken();
        succeed(form, res);
      } catch (e) {
        if (err) err.textContent = e.message;
      } finally {
        busy(btn, false);
      }
    });
  }

  // Plain forms posted once: the button is disabled while the page loads.
  for (const form of $$('form[data-once]')) {
    form.addEventListener('submit', (ev) => {
      const btn = $('button[type=submit]', form);
      if (btn && btn.disabled) { ev.preventDefault(); return; }
      setTimeout(() => busy(btn, true), 0);
    });
  }

  // A one-time confirmation (a password changed): focused, so that it
  // is read out and the next Tab goes on from it.
  const flash = $('[data-flash]');
  if (flash) flash.focus();

  // ----- action buttons (data-method + data-url, optional data-confirm) -----
  document.addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-url][data-method]');
    if (!btn) return;
    const body = btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined;
    const token = btn.dataset.token || (btn.dataset.token = newToken());
    const run = async () => {
      const res = await api(btn.dataset.method, btn.dataset.url, body, token);
      succeed(btn, res);
    };
    if (btn.dataset.confirm) {
      confirmAction(btn.dataset.confirm, run, btn.dataset.confirmLabel);
      return;
    }
    busy(btn, true);
    run().catch((e) => { alert(e.message); }).finally(() => busy(btn, false));
  });

  // ----- a new batch: upload its requests, then create it -----
  const batchForm = $('#batch-form');
  if (batchForm) {
    const err = $('#batch-error');
    const input = $('#batch-file');
    const limit = Number(batchForm.dataset.uploadLimit || 0);
    let token = newToken(); // one batch per submission, whatever the clicks
    batchForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      const btn = $('#batch-button');
      if (btn.disabled) return;
      const f = input.files && input.files[0];
      if (!f) { err.textContent = 'Choose the file of requests first: a .jsonl file, one request a line.'; input.focus(); return; }
      if (f.size === 0) { err.textContent = 'This file is empty: it needs one request a line.'; return; }
      if (limit && f.size > limit) { err.textContent = 'This file is ' + sizeText(f.size) + ', more than the upload limit of ' + sizeText(limit) + '.'; return; }
      const fd = new FormData();
      fd.append('purpose', 'batch');
      fd.append('file', f, f.name);
      const bar = $('#batch-bar');
      const pct = $('#batch-pct');
      $('#batch-progress').hidden = false;
      bar.value = 0;
      pct.textContent = '0%';
      busy(btn, true);
      let file = null;
      try {
        file = await uploadForm('/console/api/files', fd, (p) => { bar.value = p; pct.textContent = p + '%'; });
        await api('POST', '/console/api/batches', { input_file_id: file.id, endpoint: $('#batch-endpoint').value, completion_window: '24h' }, token);
        location.reload(); // the button stays busy until the list shows the batch
      } catch (e) {
        err.textContent = e.message;
        // the batch was not created: its file is of no use
        if (file) api('DELETE', '/console/api/files/' + encodeURIComponent(file.id)).catch(() => {});
        token = newToken();
        busy(btn, false);
        $('#batch-progress').hidden = true;
      }
    });
  }

  // ----- the Batches page while a batch runs -----
  // Reads the batches every few seconds: a row's progress and counts
  // change in place; a status that changed reloads the page, which then
  // shows the batch's files and actions (not while a dialog is open).
  const liveBatches = $('[data-batches-live]');
  if (liveBatches) {
    const group = (n) => Number(n || 0).toLocaleString('en-US');
    const poll = async () => {
      let list = null;
      try {
        list = await api('GET', liveBatches.dataset.batchesLive);
      } catch (_) { /* try again at the next tick */ }
      let changed = false;
      for (const b of (list && list.data) || []) {
        const row = $('tr[data-batch="' + CSS.escape(b.id) + '"]', liveBatches);
        if (!row) continue;
        if (b.status !== row.dataset.status) changed = true;
        const c = b.request_counts || {};
        const pct = c.total ? Math.floor(((c.completed || 0) + (c.failed || 0)) * 100 / c.total) : 0;
        const bar = $('[data-field=progress]', row);
        bar.value = pct;
        bar.setAttribute('aria-label', b.id + ': ' + pct + '% of its requests answered');
        $('[data-field=counts]', row).textContent = group(c.completed) + ' done' + (c.failed ? ', ' + group(c.failed) + ' failed' : '') + ' of ' + group(c.total);
      }
      if (changed && !$('dialog[open]')) {
        location.reload();
        return;
      }
      setTimeout(poll, 2000);
    };
    setTimeout(poll, 2000);
  }

  // ----- tabs -----
  for (const box of $$('[data-tabs]')) {
    const tabs = $$('[role=tab]', box);
    const select = (tab) => {
      for (const t of tabs) {
        const on = t === tab;
        t.setAttribute('aria-selected', on ? 'true' : 'false');
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
      }
    };
    tabs.forEach((t, i) => {
      t.addEventListener('click', () => select(t));
      t.addEventListener('keydown', (ev) => {
        const d = ev.key === 'ArrowRight' ? 1 : ev.key === 'ArrowLeft' ? -1 : 0;
        if (!d) return;
        const next = tabs[(i + d + tabs.length) % tabs.length];
        select(next);
        next.focus();
      });
    });
  }

  // ----- period filters -----
  for (const sel of $$('select[data-period]')) {
    const sync = () => { for (const f of $$('[data-custom-dates]', sel.form)) f.hidden = sel.value !== 'custom'; };
    sel.addEventListener('change', sync);
  }

  // ----- charts (uPlot) -----
  const palette = ['#3540b8', '#16a394', '#e07a1f', '#b3261e'];
  const fmt = {
    tokens: (v) => v >= 1e6 ? (v / 1e6).toFixed(1) + 'M' : v >= 1e3 ? (v / 1e3).toFixed(1) + 'k' : String(Math.round(v)),
    // two significant figures below a cent, in plain decimals (an axis
    // must not read "$5e-7")
    usd: (v) => {
      if (v === 0) return '$0';
      const a = Math.abs(v), sign = v < 0 ? '−' : '';
      if (a >= 0.01) return sign + '$' + a.toFixed(2);
      const d = Math.min(12, 1 - Math.floor(Math.log10(a)));
      return sign + '$' + a.toFixed(d).replace(/0+$/, '');
    },
    // ticks of a small range keep their digits: 0.2%, 0.05s, never a row of 0s
    percent: (v) => fmt.small(v) + '%',
    seconds: (v) => v >= 3600 ? (v / 3600).toFixed(1) + 'h' : v >= 60 ? (v / 60).toFixed(0) + 'm' : fmt.small(v) + 's',
    small: (v) => v === 0 || Math.abs(v) >= 10 ? String(Math.round(v)) : String(+v.toPrecision(2)),
    count: (v) => String(Math.round(v)),
  };

  function drawChart(box) {
    const spec = JSON.parse(box.nextElementSibling.textContent);
    const f = fmt[spec.unit] || fmt.count;
    const n = spec.series.length;
    // Stacked bars: each series is drawn as its running total.
    const data = [spec.x];
    let acc = spec.x.map(() => 0);
    for (const s of spec.series) {
      const vals = spec.stacked ? s.values.map((v, i) => (acc[i] += v)) : s.values;
      data.push(vals.slice());
    }
    const span = spec.x.length > 1 ? spec.x[spec.x.length - 1] - spec.x[0] : 0;
    const bars = spec.kind === 'bars' && uPlot.paths && uPlot.paths.bars;
    const pad = spec.kind === 'bars' ? (spec.step === 'hour' ? 3600 : 86400) / 2 : 0;
    const series = [{ label: spec.step === 'hour' ? 'Hour' : 'Day', value: (u, v) => v == null ? '' : new Date(v * 1000).toISOString().slice(0, spec.step === 'hour' ? 16 : 10).replace('T', ' ') }];
    spec.series.forEach((s, i) => {
      const color = palette[i % palette.length];
      series.push({
        label: s.label,
        stroke: color,
        fill: spec.kind === 'bars' ? color : color + '22',
        width: spec.kind === 'bars' ? 0 : 2,
        paths: bars ? bars({ size: [0.7, 48], align: 0 }) : undefined,
        points: { show: spec.kind !== 'bars' && spec.x.length < 60 },
        value: (u, v, si, di) => di == null ? '' : f(spec.series[i].values[di]),
      });
    });
    // Stacked: draw the top series first so each bar shows its segments.
    if (spec.stacked) series.splice(1, n, ...series.slice(1).reverse());
    if (spec.stacked) data.splice(1, n, ...data.slice(1).reverse());
    const opts = {
      width: Math.max(240, box.clientWidth),
      height: 240,
      series,
      // Bars are centred on their day or hour: half a step more at each
      // end, or the first and the last (today's) bars are cut in half. (A
      // lone bar: uPlot's own range of a single time spans years.)
      scales: { x: { time: true, range: pad ? (u, min, max) => spec.x.length === 1 ? [spec.x[0] - pad, spec.x[0] + pad] : [min - pad, max + pad] : undefined }, y: { range: (u, min, max) => [0, spec.unit === 'percent' ? 100 : (max > 0 ? max * 1.1 : 1)] } },
      axes: [
        { stroke: '#575c68', grid: { show: false }, values: (u, vals) => vals.map((v) => {
          const iso = new Date(v * 1000).toISOString();
          // Days: dates, at midnight only (a short period has ticks between
          // them). Hours over more than two days: dates at midnight, else times.
          if (spec.step !== 'hour') return iso.slice(11, 16) === '00:00' ? iso.slice(5, 10) : '';
          if (span > 2 * 86400 && iso.slice(11, 16) === '00:00') return iso.slice(5, 10);
          return iso.slice(11, 16);
        }) },
        { stroke: '#575c68', grid: { stroke: '#e6e8ec' }, values: (u, vals) => vals.map(f),
          incrs: spec.unit === 'seconds' ? [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400] : undefined,
          size: (u, vals) => vals ? Math.max(40, 18 + 8 * Math.max(...vals.map((v) => String(v).length))) : 40 },
      ],
      legend: { live: true },
      cursor: { points: { show: false } },
      // The legend names the series; while the pointer is on the plot it
      // also reads the day's or hour's values (console.css).
      hooks: { setCursor: [(u) => box.classList.toggle('chart-pointing', u.cursor.idx != null)] },
    };
    const plot = new uPlot(opts, data, box);
    if (window.ResizeObserver) {
      new ResizeObserver(() => plot.setSize({ width: Math.max(240, box.clientWidth), height: 240 })).observe(box);
    }
  }

  if ($$('[data-chart]').length) {
    if (window.uPlot) {
      for (const box of $$('[data-chart]')) {
        try { drawChart(box); } catch (e) { box.textContent = 'The chart could not be drawn.'; }
      }
    }
  }

  const sizeText = (n) => n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + ' GiB' : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + ' MiB' :
      n >= 1024 ? (n / 1024).toFixed(1) + ' KiB' : n + ' B';

  // uploadForm posts the form data fd to url with the CSRF token, telling
  // progress(0..100) as it goes; it resolves with the answer's JSON, or
  // rejects with an Error that says in plain words what went wrong.
  function uploadForm(url, fd, progress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', url);
      xhr.setRequestHeader('X-CSRF-Token', csrf());
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) progress(Math.floor((e.loaded / e.total) * 100));
      });
      xhr.addEventListener('load', () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) { resolve(body); return; }
        const id = xhr.status >= 500 ? xhr.getResponseHeader('X-Request-Id') : '';
        reject(new Error(xhr.status === 401 ? 'Your session has ended. Reload the page and sign in again.' :
          ((body && body.error && body.error.message) ||
          (xhr.status === 413 ? 'The upload is too large.' : 'The upload failed (HTTP ' + xhr.status + ').')) + (id ? ' (request id ' + id + ')' : '')));
      });
      xhr.addEventListener('error', () => reject(new Error('The upload was interrupted. Check your connection and try again.')));
      xhr.send(fd);
    });
  }

  // ----- adapter upload -----
  const upload = $('#upload-form');
  if (upload) {
    const drop = $('#dropzone');
    const list = $('#file-list');
    const nameInput = $('#adapter-name');
    const err = $('#upload-error');
    const okMsg = $('#upload-ok');
    const limit = Number(upload.dataset.uploadLimit || 0);
    // the tenant's adapter storage: used and quota (no quota: no data)
    const quota = Number(upload.dataset.storageQuota || 0);
    const used = Number(upload.dataset.storageUsed || 0);
    let chosen = null; // {config, weights} or {archive}
    let refused = ''; // why the files last chosen cannot be uploaded

    const isArchive = (f) => /\.(tar\.gz|tgz|zip)$/i.test(f.name);
    const suggestName = (s) => s.replace(/\.(tar\.gz|tgz|zip)$/i, '').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);

    function choose(files, folderName) {
      err.textContent = '';
      okMsg.textContent = '';
      list.textContent = '';
      chosen = null;
      refused = '';
      files = Array.from(files);
      const archive = files.find(isArchive);
      const config = files.find((f) => f.name === 'adapter_config.json');
      const weights = files.find((f) => f.name === 'adapter_model.safetensors');
      if (archive && files.length === 1) {
        chosen = { archive };
        if (!nameInput.value) nameInput.value = suggestName(archive.name);
      } else if (config && weights) {
        chosen = { config, weights };
        if (!nameInput.value && folderName) nameInput.value = suggestName(folderName);
      } else {
        const names = files.map((f) => f.name).slice(0, 5).join(', ');
        refused = err.textContent = 'These files are not a PEFT adapter' + (names ? ' (' + names + ')' : '') +
          ': choose the adapter folder, its two files adapter_config.json and adapter_model.safetensors, or one .tar.gz or .zip of the folder.';
        return;
      }
      const total = Object.values(chosen).reduce((n, f) => n + f.size, 0);
      for (const f of Object.values(chosen)) {
        const li = document.createElement('li');
        li.textContent = '✓ ' + f.name + ' (' + sizeText(f.size) + ')';
        list.appendChild(li);
      }
      if (limit && total > limit) {
        refused = err.textContent = 'These files are ' + sizeText(total) + ', more than the upload limit of ' + sizeText(limit) + '.';
        chosen = null;
        return;
      }
      // An adapter takes the size of its two files; the server refuses an
      // archive larger than what is free (with a little room for the
      // upload's framing) before receiving it.
      const free = Math.max(0, quota - used);
      if (quota && total > free + (chosen.archive ? 64 << 10 : 0)) {
        refused = err.textContent = (free === 0 ?
          'Your adapters already fill this organization\'s ' + sizeText(quota) + ' of adapter storage.' :
          'These files are ' + sizeText(total) + ', more than the ' + sizeText(free) + ' left of this organization\'s ' + sizeText(quota) + ' adapter storage.') +
          ' Delete adapters you no longer need, or ask your operator for more.';
        chosen = null;
      }
    }

    // Reads a dropped folder's top-level files.
    async function dropped(dt) {
      const items = Array.from(dt.items || []).map((it) => it.webkitGetAsEntry && it.webkitGetAsEntry()).filter(Boolean);
      if (items.length === 1 && items[0].isDirectory) {
        const dir = items[0];
        const entries = await new Promise((res, rej) => dir.createReader().readEntries(res, rej));
        const files = await Promise.all(entries.filter((e) => e.isFile).map((e) => new Promise((res, rej) => e.file(res, rej))));
        return choose(files, dir.name);
      }
      choose(dt.files);
    }

    // a drop that misses the zone must not make the browser open the
    // file (and leave the console)
    for (const type of ['dragover', 'drop']) document.addEventListener(type, (ev) => { if (!drop.contains(ev.target)) ev.preventDefault(); });
    drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (ev) => { ev.preventDefault(); drop.classList.remove('over'); dropped(ev.dataTransfer); });
    // A click anywhere in the box chooses files; keyboards and screen
    // readers use its two buttons (the box itself is no button: it holds
    // them).
    drop.addEventListener('click', (ev) => { if (!ev.target.closest('label, input')) $('#pick-files').click(); });
    $('#pick-files').addEventListener('change', (ev) => choose(ev.target.files));
    $('#pick-folder').addEventListener('change', (ev) => {
      const files = Array.from(ev.target.files).filter((f) => (f.webkitRelativePath || f.name).split('/').length <= 2);
      const folder = (ev.target.files[0] && (ev.target.files[0].webkitRelativePath || '').split('/')[0]) || '';
      choose(files, folder);
    });

    upload.addEventListener('submit', (ev) => {
      ev.preventDefault();
      err.textContent = '';
      okMsg.textContent = '';
      const btn = $('#upload-button');
      if (btn.disabled) return;
      // Files refused when chosen: say why again, not that none were chosen.
      if (!chosen) { err.textContent = refused || 'Choose the adapter files first: drag the folder into the box, or use the buttons.'; return; }
      if (!nameInput.reportValidity()) return;
      const fd = new FormData();
      fd.append('name', nameInput.value.trim());
      if (chosen.archive) fd.append('archive', chosen.archive, chosen.archive.name);
      else {
        fd.append('adapter_config.json', chosen.config, 'adapter_config.json');
        fd.append('adapter_model.safetensors', chosen.weights, 'adapter_model.safetensors');
      }
      const bar = $('#upload-bar');
      const pct = $('#upload-pct');
      $('#upload-progress').hidden = false;
      bar.value = 0;
      pct.textContent = '0%';
      busy(btn, true);
      uploadForm('/console/api/adapters', fd, (p) => { bar.value = p; pct.textContent = p + '%'; }).then((body) => {
        // The button stays busy until the page reloads: a second click
        // would upload the same files again.
        bar.value = 100;
        pct.textContent = '100%';
        const w = (body.warnings || []).length;
        okMsg.textContent = 'Uploaded ' + body.name + ' (rank ' + body.rank + ')' +
          (w ? ', with ' + w + (w === 1 ? ' warning' : ' warnings') + ' shown in the list' : '') + '. Loading the list…';
        setTimeout(() => location.reload(), 600);
      }, (e) => {
        busy(btn, false);
        $('#upload-progress').hidden = true;
        err.textContent = e.message;
      });
    });
  }

  // ----- playground -----
  const chat = $('#chat-form');
  if (chat) {
    const box = chat.closest('[data-prompt-price]');
    const pp = Number(box.dataset.promptPrice || 0);
    const cp = Number(box.dataset.completionPrice || 0);
    // cached prompt tokens (usage.prompt_tokens_details.cached_tokens)
    // have their own price; a page without it charges them the prompt's
    const kp = box.dataset.cachedPromptPrice === undefined ? pp : Number(box.dataset.cachedPromptPrice);
    const transcript = $('#transcript');
    const input = $('#chat-input');
    const err = $('#chat-error');
    const send = $('#chat-send');
    const stop = $('#chat-stop');
    let history = [];
    let controller = null;
    let conversation = 0; // New chat starts another: a late answer of the last one stays out of it

    function bubble(role, text) {
      $('#chat-empty') && $('#chat-empty').remove();
      const div = document.createElement('div');
      div.className = 'msg msg-' + role;
      const r = document.createElement('p');
      r.className = 'msg-role';
      r.textContent = role === 'user' ? 'You' : 'Model';
      const t = document.createElement('p');
      t.className = 'msg-text';
      t.textContent = text;
      div.append(r, t);
      transcript.appendChild(div);
      transcript.scrollTop = transcript.scrollHeight;
      return div;
    }

    // thoughtsOf returns the reply's Thoughts block: a reasoning model's
    // delta.reasoning_content, streamed before the answer, as text in a
    // <details> open while the model thinks. It is made at the first
    // thought, so an answer without thoughts has none; inside the
    // transcript (role=log) it is announced as the answer is.
    function thoughtsOf(reply) {
      let d = $('.msg-thoughts', reply);
      if (d) return d;
      d = document.createElement('details');
      d.className = 'msg-thoughts';
      d.open = true;
      const s = document.createElement('summary');
      s.textContent = 'Thoughts';
      const t = document.createElement('p');
      t.className = 'msg-thoughts-text';
      d.append(s, t);
      reply.insertBefore(d, $('.msg-text', reply));
      return d;
    }

    // an answer's cost, written as the pages write amounts (formatUSD):
    // three significant figures below a dollar, at least the cents, then
    // cents, never an exponent; so it reads as the usage page's rows do
    function money(v) {
      if (!(v > 0)) return '$0.00';
      if (v < 1e-9) return '<$0.000000001';
      if (v < 1) {
        const s = v.toFixed(Math.max(2, 2 - Math.floor(Math.log10(v))));
        const t = s.replace(/0+$/, '');
        return '$' + (t.length >= 4 ? t : s.slice(0, 4));
      }
      const s = v.toFixed(2);
      return '$' + (v < 100 ? s : s.replace(/\B(?=(\d{3})+(?!\d))/g, ','));
    }
    // what the ledger charged for the request with id (null: not known)
    async function charged(id) {
      try {
        const u = await fetch('/console/api/usage/requests/' + encodeURIComponent(id || ''));
        if (u.ok) return await u.json();
      } catch (_) { /* not known */ }
      return null;
    }

    function showEmpty() {
      transcript.innerHTML = '<p class="empty-chat muted" id="chat-empty">Your conversation appears here.</p>';
    }

    $('#chat-clear').addEventListener('click', () => {
      // an answer still streaming is stopped: it belongs to the chat
      // being cleared, and would go on being generated and charged
      conversation++;
      if (controller) controller.abort();
      history = [];
      showEmpty();
      err.textContent = '';
      input.focus();
    });
    stop.addEventListener('click', () => controller && controller.abort());
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); chat.requestSubmit(); }
    });

    chat.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      const text = input.value.trim();
      if (!text || send.disabled) return;
      const system = $('#chat-system').value.trim();
      const conv = conversation;
      const current = () => conv === conversation;
      history.push({ role: 'user', content: text });
      const asked = bubble('user', text);
      input.value = '';
      const reply = bubble('assistant', '');
      reply.setAttribute('aria-busy', 'true');
      const out = $('.msg-text', reply);
      const messages = (system ? [{ role: 'system', content: system }] : []).concat(history);
      const body = {
        model: $('#chat-model').value,
        messages,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: Number($('#chat-max').value) || 64,
        temperature: Number($('#chat-temp').value) || 0,
      };
      busy(send, true);
      stop.hidden = false;
      controller = new AbortController();
      let answer = '';
      let thought = '';
      let usage = null;
      let finish = '';
      let reqId = '';
      try {
        const res = await fetch('/console/api/chat/completions', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf(), Accept: 'text/event-stream' },
          body: JSON.stringify(body),
          signal: controller.signal,
        });
        reqId = res.headers.get('X-Request-Id') || '';
        if (!res.ok) throw new Error(await errorMessage(res));
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const event = buf.slice(0, i);
            buf = buf.slice(i + 2);
            for (const line of event.split('\n')) {
              if (!line.startsWith('data:')) continue;
              const data = line.slice(5).trim();
              if (data === '[DONE]') continue;
              const j = JSON.parse(data);
              if (j.error) throw new Error(j.error.message);
              if (j.usage) usage = j.usage;
              for (const ch of j.choices || []) {
                if (ch.delta && ch.delta.reasoning_content) {
                  thought += ch.delta.reasoning_content;
                  $('.msg-thoughts-text', thoughtsOf(reply)).textContent = thought;
                }
                if (ch.delta && ch.delta.content) {
                  // the answer starts: its thoughts fold away (still there to open)
                  if (!answer && thought) thoughtsOf(reply).open = false;
                  answer += ch.delta.content;
                  out.textContent = answer;
                }
                if (ch.finish_reason) finish = ch.finish_reason;
              }
              transcript.scrollTop = transcript.scrollHeight;
            }
          }
        }
        if (current()) history.push({ role: 'assistant', content: answer });
        if (usage) {
          // The charge the ledger recorded (prices may have changed since
          // the page loaded); the page's prices only if it cannot be read.
          const cached = Math.min((usage.prompt_tokens_details && usage.prompt_tokens_details.cached_tokens) || 0, usage.prompt_tokens);
          let cost = ((usage.prompt_tokens - cached) * pp + cached * kp + usage.completion_tokens * cp) / 1e6;
          const rec = await charged(reqId);
          if (rec) cost = rec.charged_usd;
          const meta = document.createElement('p');
          meta.className = 'msg-meta';
          meta.setAttribute('data-testid', 'answer-usage');
          meta.textContent = usage.prompt_tokens + ' prompt + ' + usage.completion_tokens + ' completion tokens · ' + money(cost) +
            (cached > 0 ? ' · ' + cached + ' prompt tokens cached' : '') +
            (finish === 'length' ? ' · stopped at max tokens' : '');
          reply.appendChild(meta);
        }
      } catch (e) {
        if (e.name === 'AbortError') {
          // stopped by the user: not an error; the tokens produced until
          // then are charged, and the ledger has them once the server has
          // seen the stream go
          out.textContent = answer;
          if (answer && current()) history.push({ role: 'assistant', content: answer });
          const meta = document.createElement('p');
          meta.className = 'msg-meta';
          meta.setAttribute('data-testid', 'answer-usage');
          meta.textContent = 'Stopped';
          reply.appendChild(meta);
          for (let i = 0; i < 5 && reqId && current(); i++) {
            await new Promise((r) => setTimeout(r, 200 * (i + 1)));
            const rec = await charged(reqId);
            if (rec) {
              meta.textContent = 'Stopped · ' + rec.prompt_tokens + ' prompt + ' + rec.completion_tokens + ' completion tokens · ' + money(rec.charged_usd);
              break;
            }
          }
        } else {
          reply.classList.add('msg-error');
          if (!current()) {
            // the chat was cleared meanwhile: nothing to show
          } else if (!answer) {
            // nothing was answered: the message goes back to the box, to
            // be sent again, and leaves the conversation
            reply.remove();
            asked.remove();
            history.pop();
            input.value = text;
            if (!$('.msg', transcript)) showEmpty();
          } else {
            history.push({ role: 'assistant', content: answer });
          }
          if (current()) err.textContent = e.message;
        }
      } finally {
        reply.removeAttribute('aria-busy');
        busy(send, false);
        stop.hidden = true;
        controller = null;
      }
    });
  }
})();
