// Shared by the browser scenarios: reads the environment, launches Debian's chromium once through
// a pinned playwright-core (installed by scripts/test.sh into ~/.cache/offload/browser), signs
// in through the form, and polls with deadlines. Plain ESM, no build step.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** The variable `name`, or exit 2 naming it (the Rust test sets them all). */
export function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (tests/tests/browser.rs sets it; see scripts/test.sh)`);
    process.exit(2);
  }
  return value;
}

/** The inputs every scenario shares. */
export function settings() {
  return {
    base: required('OFFLOAD_BROWSER_BASE').replace(/\/$/, ''),
    token: required('OFFLOAD_BROWSER_TOKEN'),
    shots: required('OFFLOAD_BROWSER_SCREENSHOTS'),
    chromium: required('OFFLOAD_CHROMIUM'),
    driver: required('OFFLOAD_BROWSER_DRIVER'),
    // One bound for every wait in the page: a job's outcome, a navigation, an element.
    waitMs: Number(process.env.OFFLOAD_BROWSER_WAIT_MS || 30000),
  };
}

/** Launches one headless chromium and a fresh context; returns { browser, page }. */
export async function launch(s) {
  const require = createRequire(join(s.driver, 'package.json'));
  const { chromium } = require('playwright-core');
  const args = ['--headless=new', '--disable-gpu', '--disable-dev-shm-usage'];
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
  const browser = await chromium.launch({ executablePath: s.chromium, headless: true, args });
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  context.setDefaultTimeout(s.waitMs);
  context.setDefaultNavigationTimeout(s.waitMs);
  const page = await context.newPage();
  // The page's own errors are part of the output: a broken page fails loudly, not silently.
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  page.on('console', (m) => {
    // The pages have no favicon: Chromium's request for one is not the page's error.
    if (m.type() === 'error' && !m.location().url.endsWith('/favicon.ico')) {
      console.log(`console error: ${m.text()} (${m.location().url})`);
    }
  });
  page.on('response', (r) => { if (r.status() >= 400) console.log(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`); });
  mkdirSync(s.shots, { recursive: true });
  return { browser, page };
}

/** Screenshots the whole page as `<shots>/<name>.png` and prints the path. */
export async function shot(s, page, name) {
  const path = join(s.shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/** Throws `message` unless `condition`. */
export function check(condition, message) {
  if (!condition) throw new Error(message);
}

/**
 * Opens `/` and signs in with the token through the sign-in form; checks the 303 to `/` that
 * sets the session cookie and that the dashboard's overview is shown.
 */
export async function signIn(s, page) {
  await page.goto(`${s.base}/`);
  await page.locator('input[name="token"]').waitFor();
  await shot(s, page, '01-sign-in');
  await page.fill('input[name="token"]', s.token);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${s.base}/session` && r.request().method() === 'POST'),
    page.click('form[action="/session"] button[type="submit"]'),
  ]);
  check(response.status() === 303, `POST /session answered ${response.status()}, not 303`);
  await page.waitForURL(`${s.base}/`);
  // The dashboard's overview, with its navigation.
  await page.locator('nav[aria-label="Main"] a[href="/ui/jobs"]').waitFor();
  const cookies = await page.context().cookies(s.base);
  const session = cookies.find((c) => c.name === 'offload_session');
  check(session, `no offload_session cookie after signing in: ${JSON.stringify(cookies)}`);
  check(session.httpOnly, 'the session cookie is not HttpOnly');
  console.log('signed in: offload_session cookie set (HttpOnly)');
}

/**
 * Clicks `button` inside a form posting to /jobs and checks the 303 to `/jobs/<id>`; returns the
 * job page's URL once the browser is there.
 */
export async function submitTo303(s, page, button) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${s.base}/jobs` && r.request().method() === 'POST'),
    page.click(button),
  ]);
  const location = response.headers()['location'] || '';
  check(
    response.status() === 303 && /^\/jobs\/[0-9a-f-]{36}$/.test(location),
    `POST /jobs answered ${response.status()} (Location ${JSON.stringify(location)}), not a 303 to /jobs/<id>: ${await response.text().catch(() => '')}`,
  );
  const url = `${s.base}${location}`;
  await page.waitForURL(url);
  console.log(`submitted: 303 to ${location}`);
  return url;
}

/**
 * Waits (the page follows the job live, or reloads without JavaScript) until `#status` reads `status`; fails
 * early with the page's text if the job ended otherwise.
 */
export async function waitForStatus(s, page, status) {
  const deadline = Date.now() + s.waitMs;
  const terminal = ['succeeded', 'dead', 'cancelled'];
  let last = '';
  while (Date.now() < deadline) {
    // A reload (a job that ends, a redirect) may replace the document between two reads: a failed read is retried.
    last = (await page.locator('#status').textContent({ timeout: 2000 }).catch(() => last)) || '';
    last = last.trim();
    if (last === status) return;
    if (terminal.includes(last)) {
      throw new Error(`the job ended ${last}, not ${status}: ${await page.locator('body').innerText()}`);
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`the job page still shows ${JSON.stringify(last)}, not ${status}, after ${s.waitMs} ms`);
}

/** Runs `scenario(s, page)` in one browser; exits 0 on success, 1 with the error otherwise. */
export async function run(name, scenario) {
  const s = settings();
  const started = Date.now();
  let browser;
  try {
    const launched = await launch(s);
    browser = launched.browser;
    console.log(`${name}: chromium ${browser.version()} launched in ${Date.now() - started} ms`);
    await scenario(s, launched.page);
    console.log(`${name}: passed in ${Date.now() - started} ms`);
  } catch (e) {
    console.error(`${name}: FAILED: ${e && e.stack ? e.stack : e}`);
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
}
