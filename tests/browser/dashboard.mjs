// Browser scenario 3, the dashboard: sign in as an admin, check every page with axe-core (no
// serious or critical finding) and screenshot it (wide and phone width), submit a job from the
// form the submit page made from `sleep`'s schema and watch it go live to `succeeded` without a
// reload, filter and search the jobs page, cancel a running job from its page, bulk-redrive the
// dead jobs the Rust test made (after the confirmation that counts them) and see them succeed,
// pause a queue (a job submitted meanwhile waits) and resume it, pause and resume a schedule, find every action in the audit list; then sign in with a `read`
// key and find no action offered, and an action posted anyway refused.
// Run by tests/tests/browser.rs with OFFLOAD_BROWSER_BASE, OFFLOAD_BROWSER_TOKEN (admin),
// OFFLOAD_BROWSER_READ_TOKEN, OFFLOAD_BROWSER_DEAD (how many dead jobs it made),
// OFFLOAD_BROWSER_REDRIVEN (one of them),
// OFFLOAD_BROWSER_SCHEDULE, OFFLOAD_BROWSER_SCREENSHOTS, OFFLOAD_CHROMIUM, OFFLOAD_BROWSER_DRIVER.
import { join } from 'node:path';
import { check, required, run, shot, signIn, submitTo303, waitForStatus } from './lib.mjs';

/** Runs axe-core (pinned, from the driver's node_modules) on the page; fails on a serious or critical finding. */
async function accessible(s, page, name) {
  await page.addScriptTag({ path: join(s.driver, 'node_modules/axe-core/axe.min.js') });
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  const serious = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(serious.length === 0, `axe found serious issues on ${name}: ${JSON.stringify(serious, null, 1)}`);
  console.log(`axe on ${name}: no serious issue (${found.length} minor: ${found.map((v) => v.id).join(', ') || 'none'})`);
}

/** Opens `path`, checks it with axe and screenshots it as `name`. */
async function visit(s, page, path, name) {
  const response = await page.goto(`${s.base}${path}`);
  check(response.status() === 200, `GET ${path} answered ${response.status()}`);
  await accessible(s, page, path);
  await shot(s, page, name);
}

/** Polls `read()` until `ok(value)`, reloading the page between reads; returns the value. */
async function until(s, page, what, read, ok) {
  const deadline = Date.now() + s.waitMs;
  let last;
  while (Date.now() < deadline) {
    last = await read();
    if (ok(last)) return last;
    await page.waitForTimeout(500);
    await page.reload();
  }
  throw new Error(`${what}: still ${JSON.stringify(last)} after ${s.waitMs} ms`);
}

/** Tabs through the page from the top: the skip link comes first, then the navigation. */
async function keyboard(s, page) {
  await page.goto(`${s.base}/ui/jobs`);
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  check(first === 'Skip to content', `the first Tab stop is ${JSON.stringify(first)}, not the skip link`);
  await page.keyboard.press('Tab');
  const second = await page.evaluate(() => document.activeElement && document.activeElement.getAttribute('href'));
  check(second === '/', `the second Tab stop is ${JSON.stringify(second)}, not the navigation`);
  console.log('keyboard: skip link, then the navigation');
}

await run('dashboard', async (s, page) => {
  const readToken = required('OFFLOAD_BROWSER_READ_TOKEN');
  const dead = Number(required('OFFLOAD_BROWSER_DEAD'));
  const schedule = required('OFFLOAD_BROWSER_SCHEDULE');
  const redriven = required('OFFLOAD_BROWSER_REDRIVEN');
  await signIn(s, page);
  await accessible(s, page, '/');
  await shot(s, page, '01-overview');
  const queues = await page.locator('#live table tbody tr').count();
  check(queues > 0, 'the overview lists no queue');

  // The live section arrives over the event stream without a reload.
  await page.evaluate(() => { window.offloadSamePage = true; });
  const firstRead = await page.locator('#live').innerText();
  await page.waitForFunction((before) => document.getElementById('live').innerText !== before, firstRead, { timeout: s.waitMs });
  check(await page.evaluate(() => window.offloadSamePage === true), 'the overview reloaded instead of following its stream');
  console.log('overview: the live section changed without a reload');

  // Submit from the form made from sleep's schema; the job page follows it live to succeeded.
  await visit(s, page, '/ui/submit', '02-submit');
  const sleep = page.locator('form[data-kind="sleep"]');
  await sleep.locator('input[name="payload.ms"]').fill('1500');
  const jobUrl = await submitTo303(s, page, 'form[data-kind="sleep"] button[type="submit"]');
  await page.evaluate(() => { window.offloadSamePage = true; });
  await waitForStatus(s, page, 'running');
  await accessible(s, page, 'a running job');
  await shot(s, page, '03-job-running');
  check(await page.evaluate(() => window.offloadSamePage === true), 'the job page reloaded before the job ended');
  await waitForStatus(s, page, 'succeeded');
  check(page.url() === jobUrl, `the browser left the job page for ${page.url()}`);
  const timeline = await page.locator('.timeline').innerText();
  check(/submitted/.test(timeline) && /attempt 1 succeeded on /.test(timeline), `the timeline does not tell the job's story: ${timeline}`);
  await shot(s, page, '04-job-succeeded');
  const id = jobUrl.split('/').pop();
  console.log(`submitted from the generated form: ${id} succeeded, followed live`);

  // Filter and search.
  await visit(s, page, '/ui/jobs', '05-jobs');
  await page.selectOption('#f-kind', 'sleep');
  await page.selectOption('#f-status', 'succeeded');
  await page.fill('#f-q', '"ms":1500');
  await Promise.all([page.waitForURL(/\/ui\/jobs\?/), page.click('form.filters button[type="submit"]')]);
  const rows = await page.locator('#jobs tbody tr').allInnerTexts();
  check(rows.length === 1 && rows[0].includes(id.slice(-12)), `the search found ${JSON.stringify(rows)}, not only ${id}`);
  await shot(s, page, '06-jobs-searched');
  await page.fill('#f-q', 'no job says this');
  await Promise.all([page.waitForURL(/q=no/), page.click('form.filters button[type="submit"]')]);
  check((await page.locator('#jobs tbody tr').count()) === 0, 'a search for nothing found jobs');
  const bad = await page.goto(`${s.base}/ui/jobs?from=yesterday`);
  check(bad.status() === 422, `a bad time answered ${bad.status()}, not 422`);
  check(/2026-12-07T06:30|date and time/.test(await page.locator('[role="alert"]').innerText()), 'a bad time is not explained');
  console.log('jobs: filtered by kind and status, searched, nothing found for nonsense, a bad time explained');

  // Cancel a running job from its page.
  await page.goto(`${s.base}/ui/submit`);
  await sleep.locator('input[name="payload.ms"]').fill('60000');
  const longUrl = await submitTo303(s, page, 'form[data-kind="sleep"] button[type="submit"]');
  await waitForStatus(s, page, 'running');
  await Promise.all([page.waitForURL(longUrl), page.click('form[action$="/cancel"] button')]);
  await waitForStatus(s, page, 'cancelled');
  await shot(s, page, '07-job-cancelled');
  console.log('cancelled a running job from its page');

  // Dead letters: the group, the confirmation with its count, the redrive, then all succeed.
  await visit(s, page, '/ui/dead', '08-dead');
  const group = await page.locator('#groups tbody tr').first().innerText();
  check(group.startsWith(String(dead)), `the first dead-letter group is ${JSON.stringify(group)}, not ${dead} jobs`);
  await page.locator('#groups tbody tr').first().locator('a').click();
  await page.waitForURL(/\/ui\/dead\?reason=/);
  await Promise.all([page.waitForURL(/\/ui\/dead\/confirm/), page.click('button[value="redrive"]')]);
  await accessible(s, page, 'the confirmation');
  const confirm = await page.locator('#confirm-count').innerText();
  check(confirm.includes(`redrive ${dead} dead jobs`), `the confirmation says ${JSON.stringify(confirm)}`);
  await shot(s, page, '09-dead-confirm');
  await Promise.all([page.waitForURL(/\/ui\/dead\?done=/), page.click('form[action="/ui/dead/redrive"] button[type="submit"]')]);
  const flash = await page.locator('.flash').innerText();
  check(flash.includes(`redrove ${dead} dead jobs`), `after the redrive the page says ${JSON.stringify(flash)}`);
  await shot(s, page, '10-dead-redriven');
  await page.goto(`${s.base}/ui/jobs?status=dead`);
  await until(s, page, 'the redriven jobs to leave dead', () => page.locator('#jobs tbody tr').count(), (n) => n === 0);
  console.log(`redrove ${dead} dead jobs after a confirmation; none is dead any more`);
  // A redriven job's page tells every attempt: the first dead-lettered with its reason, the
  // redrive, the second's success.
  await page.goto(`${s.base}/jobs/${redriven}`);
  await waitForStatus(s, page, 'succeeded');
  const history = await page.locator('.timeline').innerText();
  for (const step of [/attempt 1 ended dead-lettered on /, /attempt 2 queued to run again/, /attempt 2 succeeded on /]) {
    check(step.test(history), `the redriven job's timeline lacks ${step}: ${history}`);
  }
  check((await page.locator('.timeline pre.error').count()) === 1, `the first attempt's error is not shown: ${history}`);
  await accessible(s, page, 'a redriven job');
  await shot(s, page, '10a-job-history');
  console.log('a redriven job\'s timeline shows both attempts, the first one\'s error and the redrive');

  // A queue paused: its workers cancel their consumers (the broker counts none), a job
  // submitted meanwhile waits queued; resumed, the job runs.
  await visit(s, page, '/ui/queues', '11-queues');
  await Promise.all([page.waitForURL(/done=/), page.click('button[aria-label="Pause default"]')]);
  check((await page.locator('.flash').innerText()).includes('queue default paused'), 'no word that the queue paused');
  const consumersOf = async () => (await page.locator('#queues tbody tr', { hasText: 'noop, sleep' }).locator('td').nth(4).innerText()).trim();
  await until(s, page, 'the default queue to have no consumer', consumersOf, (n) => n === '0');
  await shot(s, page, '12-queue-paused');
  await page.goto(`${s.base}/ui/submit`);
  await sleep.locator('input[name="payload.ms"]').fill('10');
  const waitingUrl = await submitTo303(s, page, 'form[data-kind="sleep"] button[type="submit"]');
  check((await page.locator('#status').innerText()).trim() === 'queued', 'a job of a paused queue did not wait queued');
  await page.goto(`${s.base}/ui/queues`);
  await Promise.all([page.waitForURL(/done=/), page.click('button[aria-label="Resume default"]')]);
  await page.goto(waitingUrl);
  await waitForStatus(s, page, 'succeeded');
  console.log('paused the default queue (no consumer left, a new job waited queued), resumed it (the job ran)');

  // A schedule paused and resumed.
  await visit(s, page, '/ui/schedules', '13-schedules');
  await Promise.all([page.waitForURL(/done=/), page.click(`button[aria-label="Pause ${schedule}"]`)]);
  check((await page.locator('#schedules').innerText()).includes('paused'), 'the schedule does not show paused');
  await Promise.all([page.waitForURL(/done=/), page.click(`button[aria-label="Resume ${schedule}"]`)]);
  check((await page.locator('#schedules').innerText()).includes('active'), 'the schedule does not show active');
  console.log('paused and resumed a schedule');

  await visit(s, page, '/ui/workers', '14-workers');
  check((await page.locator('#workers tbody tr').count()) > 0, 'no live worker listed');
  await visit(s, page, '/ui/audit', '15-audit');
  const audit = await page.locator('#audit').innerText();
  for (const action of ['POST /ui/dead/redrive', 'POST /ui/jobs/{id}/cancel', 'POST /ui/schedules/{name}/{action}', 'POST /ui/queues/{queue}/{action}']) {
    check(audit.includes(action), `the audit list has no ${action}: ${audit}`);
  }
  check(audit.includes('dashboard-admin'), 'the audit list does not name the key');
  console.log('audit: every action listed with the key');
  await keyboard(s, page);

  // A phone's width: the navigation wraps, tables scroll inside their box.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [path, name] of [['/', '16-phone-overview'], ['/ui/jobs', '17-phone-jobs'], ['/ui/dead', '18-phone-dead']]) {
    await page.goto(`${s.base}${path}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${path} is ${overflow} px wider than a phone`);
    await shot(s, page, name);
  }
  console.log('phone width: no page wider than the screen');

  // A read key: the pages, no actions; an action posted anyway is refused.
  await page.setViewportSize({ width: 1000, height: 800 });
  await page.context().clearCookies();
  await signIn({ ...s, token: readToken }, page);
  await page.goto(`${s.base}/ui/dead`);
  check((await page.locator('button[value="redrive"]').count()) === 0, 'a read key is offered a redrive');
  await shot(s, page, '19-read-only-dead');
  await page.goto(`${s.base}/ui/schedules`);
  check((await page.locator('#schedules button').count()) === 0, 'a read key is offered schedule buttons');
  const refused = await page.evaluate(async () => (await fetch('/ui/dead/redrive', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'kind=' })).status);
  check(refused === 403, `a read key's redrive answered ${refused}, not 403`);
  console.log('read key: no actions offered; a posted one is refused with 403');
});
