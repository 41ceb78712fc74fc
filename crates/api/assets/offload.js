// The dashboard's one script, served by the API at /assets/offload.<hash>.js. Every page works
// without it; with it, pages follow their data live: the overview over Server-Sent Events
// (falling back to polling), a job over its own event stream.
(() => {
  'use strict';
  const live = document.body.dataset.live;
  const show = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };

  // The overview: `GET /ui/live` sends the live section as HTML every few seconds.
  const overview = () => {
    const target = document.getElementById('live');
    if (!target) return;
    // Not while the keyboard is inside it: replacing it would lose the focus.
    const replace = (html) => { if (!target.contains(document.activeElement)) target.innerHTML = html; };
    let polling = null;
    const poll = () => {
      fetch('/ui/live?fragment=1', { headers: { accept: 'text/html' }, credentials: 'same-origin' })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error(String(r.status)))))
        .then(replace)
        .catch(() => {});
    };
    const source = new EventSource('/ui/live');
    source.addEventListener('overview', (e) => replace(e.data));
    source.onerror = () => {
      // The stream ended or cannot start (a proxy that buffers, a replica restarting):
      // read the same fragment every 5 s instead.
      if (source.readyState === EventSource.CLOSED && polling === null) {
        polling = setInterval(poll, 5000);
      }
    };
  };

  // A job: its event stream (`GET /jobs/{id}/events`); reloads once it has finished.
  const job = () => {
    const source = new EventSource(location.pathname + '/events');
    source.addEventListener('job', (e) => {
      const j = JSON.parse(e.data);
      show('status', j.status);
      const status = document.getElementById('status');
      if (status) status.className = 'status s-' + j.status;
      show('attempt', j.attempt + ' of ' + j.max_attempts);
      show('worker', j.worker || '–');
      show('error', j.error || '–');
      show('progress', j.progress ? Math.round(j.progress.fraction * 100) + ' %' + (j.progress.message ? ' – ' + j.progress.message : '') : '–');
      show('heartbeat', j.heartbeat_at || '–');
      show('json', JSON.stringify(j, null, 2));
    });
    const reload = () => { source.close(); location.reload(); };
    source.addEventListener('end', reload);
    source.addEventListener('gone', reload);
  };

  if (live === 'overview') overview();
  if (live === 'job') job();
})();
