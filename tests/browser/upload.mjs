// Browser scenario 1: sign in with a token through the form, submit a `noop` job from the submit
// page's JSON form, follow the 303 to the job's page and wait until it shows `succeeded`.
// Screenshots of each page go to OFFLOAD_BROWSER_SCREENSHOTS.
// Run by tests/tests/browser.rs: `node tests/browser/upload.mjs` with OFFLOAD_BROWSER_BASE,
// OFFLOAD_BROWSER_TOKEN, OFFLOAD_BROWSER_SCREENSHOTS, OFFLOAD_CHROMIUM, OFFLOAD_BROWSER_DRIVER.
import { check, run, shot, signIn, submitTo303, waitForStatus } from './lib.mjs';

/** A token that is no key gets the sign-in form again, with a 401 and an alert saying why. */
async function refusesABadToken(s, page) {
  await page.goto(`${s.base}/`);
  await page.fill('input[name="token"]', 'ofl_not-a-key');
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${s.base}/session` && r.request().method() === 'POST'),
    page.click('form[action="/session"] button[type="submit"]'),
  ]);
  check(response.status() === 401, `a bad token got ${response.status()}, not 401`);
  const alert = (await page.locator('[role="alert"]').textContent()) || '';
  check(/not a valid API key/.test(alert), `no alert for a bad token: ${JSON.stringify(alert)}`);
  const cookies = await page.context().cookies(s.base);
  check(!cookies.some((c) => c.name === 'offload_session'), 'a bad token got a session cookie');
  await shot(s, page, '00-bad-token');
  console.log('a bad token: 401, the form again with an alert, no cookie');
}

await run('upload', async (s, page) => {
  await refusesABadToken(s, page);
  await signIn(s, page);
  await page.goto(`${s.base}/ui/submit`);
  const form = page.locator('#kind-json form');
  const kinds = await form.locator('select[name="kind"] option').allTextContents();
  check(kinds.includes('noop'), `the submit page does not offer the kind noop: ${JSON.stringify(kinds)}`);
  await form.locator('select[name="kind"]').selectOption('noop');
  await form.locator('textarea[name="payload"]').fill('{"from": "the browser suite"}');
  await shot(s, page, '02-home');
  const url = await submitTo303(s, page, '#kind-json button[type="submit"]');
  await shot(s, page, '03-job-submitted');
  await waitForStatus(s, page, 'succeeded');
  // noop returns its payload: the job page shows it as the result.
  const body = await page.locator('body').innerText();
  check(body.includes('the browser suite'), `the job page does not show noop's result: ${body}`);
  check(page.url() === url, `the browser left the job page for ${page.url()}`);
  await shot(s, page, '04-job-succeeded');

  // A long job: the page follows it live (no reload) with its progress, and cancels it.
  await page.goto(`${s.base}/ui/submit`);
  await form.locator('select[name="kind"]').selectOption('sleep');
  await form.locator('textarea[name="payload"]').fill('{"ms": 60000}');
  const long = await submitTo303(s, page, '#kind-json button[type="submit"]');
  await waitForStatus(s, page, 'running');
  await page.evaluate(() => { window.offloadSamePage = true; });
  const readProgress = async () => ((await page.locator('#progress').textContent()) || '').trim();
  const first = await readProgress();
  let later = first;
  const until = Date.now() + s.waitMs;
  while (later === first && Date.now() < until) {
    await page.waitForTimeout(200);
    later = await readProgress();
  }
  check(later !== first && later.includes('%'), `the progress did not move: ${JSON.stringify(first)} then ${JSON.stringify(later)}`);
  check(await page.evaluate(() => window.offloadSamePage === true), 'the page reloaded instead of following the job');
  console.log(`live progress without a reload: ${JSON.stringify(first)} then ${JSON.stringify(later)}`);
  await shot(s, page, '05-job-running');
  const [cancelled] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/cancel') && r.request().method() === 'POST'),
    page.click('form[action$="/cancel"] button[type="submit"]'),
  ]);
  check(cancelled.status() === 303, `cancel answered ${cancelled.status()}, not a 303 to the job page`);
  await page.waitForURL(long);
  await waitForStatus(s, page, 'cancelled');
  const text = await page.locator('body').innerText();
  check(text.includes('cancelled by browser-user'), `the page does not say who cancelled it: ${text}`);
  check((await page.locator('form[action$="/cancel"]').count()) === 0, 'a finished job still offers Cancel');
  await shot(s, page, '06-job-cancelled');
  console.log('cancelled from the job page: 303, then cancelled by browser-user');
});
