// Browser scenario 2: sign in, upload a photo through the submit page's form of
// `image.thumbnail`, made from its payload schema (multipart: the file, `payload.width`, `payload.format`), follow the 303 to the job's page,
// wait until its `<img class="artifact">` has loaded, then fetch that image in the page (with the
// session cookie) and decode it: it must be an image of the requested width and format.
// Inputs as upload.mjs, plus OFFLOAD_BROWSER_PHOTO (a photo to upload; without it the script
// draws a 320×240 JPEG in the page and keeps it as <screenshots>/photo.jpg),
// OFFLOAD_BROWSER_THUMB_WIDTH (default 64), OFFLOAD_BROWSER_THUMB_HEIGHT (the height to expect;
// unchecked without it) and OFFLOAD_BROWSER_THUMB_FORMAT (default: png if the
// form offers it, else its first format).
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { check, run, shot, signIn, submitTo303 } from './lib.mjs';

const MIME = { png: 'image/png', jpeg: 'image/jpeg', jpg: 'image/jpeg', webp: 'image/webp', gif: 'image/gif' };

/** The photo to upload, as Playwright's file payload. */
async function photo(s, page) {
  const path = process.env.OFFLOAD_BROWSER_PHOTO;
  if (path) {
    const ext = path.split('.').pop().toLowerCase();
    return { name: basename(path), mimeType: MIME[ext] || 'application/octet-stream', buffer: readFileSync(path) };
  }
  // A photo-like picture (gradients, shapes) drawn and JPEG-encoded by Chromium itself.
  const dataUrl = await page.evaluate(() => {
    const canvas = document.createElement('canvas');
    canvas.width = 320;
    canvas.height = 240;
    const g = canvas.getContext('2d');
    const sky = g.createLinearGradient(0, 0, 0, 240);
    sky.addColorStop(0, '#3a7bd5');
    sky.addColorStop(1, '#f5d76e');
    g.fillStyle = sky;
    g.fillRect(0, 0, 320, 240);
    g.fillStyle = '#2e7d32';
    g.beginPath();
    g.moveTo(0, 240); g.lineTo(110, 120); g.lineTo(200, 200); g.lineTo(260, 140); g.lineTo(320, 240);
    g.fill();
    g.fillStyle = '#fff59d';
    g.beginPath();
    g.arc(250, 60, 28, 0, 2 * Math.PI);
    g.fill();
    return canvas.toDataURL('image/jpeg', 0.9);
  });
  const buffer = Buffer.from(dataUrl.split(',')[1], 'base64');
  const kept = join(s.shots, 'photo.jpg');
  writeFileSync(kept, buffer);
  console.log(`photo: drawn in the page, kept as ${kept} (320×240 JPEG)`);
  return { name: 'photo.jpg', mimeType: 'image/jpeg', buffer };
}

/** Polls the job page until its artifact image has loaded; fails early if the job ended badly. */
async function waitForArtifact(s, page) {
  const deadline = Date.now() + s.waitMs;
  let last = {};
  while (Date.now() < deadline) {
    // The page refreshes itself until the job has finished: a read across a reload is retried.
    last = await page
      .evaluate(() => {
        const img = document.querySelector('img.artifact');
        const status = document.querySelector('#status');
        return {
          status: status ? status.textContent.trim() : null,
          src: img ? img.currentSrc || img.src : null,
          loaded: Boolean(img && img.complete && img.naturalWidth > 0),
          broken: Boolean(img && img.complete && img.naturalWidth === 0),
        };
      })
      .catch(() => last);
    if (last.loaded) return last;
    if (last.status === 'dead' || last.status === 'cancelled') {
      throw new Error(`the job ended ${last.status}: ${await page.locator('body').innerText()}`);
    }
    if (last.broken && last.status === 'succeeded') {
      throw new Error(`the artifact image ${last.src} did not load (naturalWidth 0)`);
    }
    await page.waitForTimeout(200);
  }
  throw new Error(`no loaded <img class="artifact"> after ${s.waitMs} ms: ${JSON.stringify(last)}`);
}

await run('thumbnail', async (s, page) => {
  const width = Number(process.env.OFFLOAD_BROWSER_THUMB_WIDTH || 64);
  await signIn(s, page);
  await page.goto(`${s.base}/ui/submit`);
  // The form the submit page made from image.thumbnail's payload schema.
  const form = page.locator('form[data-kind="image.thumbnail"]');
  check((await form.count()) === 1, 'the submit page has no image.thumbnail form (is the thumbnail kind registered?)');
  const enctype = await form.getAttribute('enctype');
  check(enctype === 'multipart/form-data', `the image.thumbnail form has enctype ${JSON.stringify(enctype)}, not multipart/form-data`);
  await form.locator('input[type="file"]').setInputFiles(await photo(s, page));
  await form.locator('input[name="payload.width"]').fill(String(width));
  const formats = await form.locator('select[name="payload.format"] option').evaluateAll((os) => os.map((o) => o.value));
  const format = process.env.OFFLOAD_BROWSER_THUMB_FORMAT || (formats.includes('png') ? 'png' : formats[0]);
  check(formats.includes(format), `payload.format offers ${JSON.stringify(formats)}, not ${format}`);
  await form.locator('select[name="payload.format"]').selectOption(format);
  await shot(s, page, '02-thumbnail-form');
  await submitTo303(s, page, 'form[data-kind="image.thumbnail"] [type="submit"]');
  await shot(s, page, '03-job-submitted');
  const artifact = await waitForArtifact(s, page);
  console.log(`artifact loaded: ${artifact.src}`);
  // Fetched again in the page, so with the session cookie, and decoded by the browser.
  const got = await page.evaluate(async (src) => {
    const response = await fetch(src, { credentials: 'same-origin' });
    const type = response.headers.get('content-type') || '';
    if (!response.ok) return { status: response.status, type, error: await response.text() };
    const bitmap = await createImageBitmap(await response.blob());
    return { status: response.status, type, width: bitmap.width, height: bitmap.height };
  }, artifact.src);
  console.log(`artifact fetched: ${JSON.stringify(got)}`);
  check(got.status === 200, `GET ${artifact.src} answered ${got.status}: ${got.error}`);
  check(got.width === width, `the thumbnail is ${got.width} px wide, not the requested ${width}`);
  check(got.height > 0, `the thumbnail has height ${got.height}`);
  if (process.env.OFFLOAD_BROWSER_THUMB_HEIGHT) {
    const height = Number(process.env.OFFLOAD_BROWSER_THUMB_HEIGHT);
    check(got.height === height, `the thumbnail is ${got.height} px high, not the expected ${height}`);
  }
  if (MIME[format]) {
    check(got.type.startsWith(MIME[format]), `the thumbnail is ${got.type}, not ${MIME[format]} (format ${format})`);
  }
  await shot(s, page, '04-thumbnail');
});
