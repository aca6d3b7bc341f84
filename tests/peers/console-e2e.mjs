// The admin console in headless Chromium, as a person uses it (issue 21 item 9), run by
// tests/tests/console_e2e.rs: puppeteer-core drives the system's Chromium through the
// DevTools protocol. Usage: node console-e2e.mjs CONFIG.json, where the test writes
//   {base, chromium, noSandbox, axe, shots, out, admin: {username, password},
//    viewer: {username, password}, js: {monitor, update, reason},
//    nojs: {monitor, update, reason}, provider, live: {monitor, port}, pages: [...]}.
// It signs in, finds the down monitor on the overview, acknowledges its incident, posts
// an update, resolves it, sends a test notification, creates and expires a silence,
// signs out; the same core actions again with JavaScript off; a viewer sees no
// Acknowledge button and is refused by the server. The open overview follows a monitor
// that comes up (its target, `live.port`, starts listening here) without a reload, and a
// session ended from outside (API logout with its cookie) lands on the sign-in page
// saying so, and signing in again returns to the page asked for. Then every console page is audited
// in light and dark, at phone and desktop width: axe-core, console errors, CSP
// violations, sideways scrolling, a screenshot each. What it found is written to `out`
// as JSON for the test to check; a step that cannot be done fails the script (exit 1).

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
// puppeteer-core from the test peers' node_modules (NODE_PATH does not apply to ES
// modules, so it is required from the folder the test names).
const require = createRequire(join(config.nodeModules, 'noop.js'));
const puppeteer = require('puppeteer-core');

const base = config.base.replace(/\/$/, '');
const result = { steps: [], audits: [], screenshots: [], problems: [] };
const STEP_TIMEOUT = 30000;

function step(what) {
  result.steps.push(what);
  console.error(`console-e2e: ${what}`);
}

/** Fails the run with `what` (and the page's URL and text for a look). */
async function fail(page, what) {
  let where = '';
  if (page) {
    const text = await page.evaluate(() => document.body ? document.body.innerText : '').catch(() => '');
    where = `\n  at ${page.url()}\n  page text: ${text.slice(0, 1500)}`;
  }
  throw new Error(`${what}${where}`);
}

/** The button (or submit input) whose text is `text`, inside `scope` (a selector). */
async function button(page, text, scope = 'body') {
  const handle = await page.evaluateHandle((scope, text) => {
    for (const root of document.querySelectorAll(scope)) {
      for (const b of root.querySelectorAll('button, input[type=submit]')) {
        // Its text, which may go on for screen readers ("Send test <span>through
        // e2e/hook</span>").
        const label = (b.tagName === 'INPUT' ? b.value : b.textContent).trim().replace(/\s+/g, ' ');
        if (label === text || label.startsWith(`${text} `)) return b;
      }
    }
    return null;
  }, scope, text);
  return handle.asElement();
}

/** Clicks and waits for the page that follows (a form's 303 or a link). */
async function clickAndWait(page, el) {
  await Promise.all([
    page.waitForNavigation({ waitUntil: 'load', timeout: STEP_TIMEOUT }),
    el.click(),
  ]);
}

async function clickButton(page, text, scope = 'body') {
  const b = await button(page, text, scope);
  if (!b) await fail(page, `no "${text}" button in ${scope}`);
  await clickAndWait(page, b);
}

async function flash(page) {
  return page.$eval('p.flash[role=status]', (p) => p.textContent.trim()).catch(() => null);
}

async function expectFlash(page, after) {
  const f = await flash(page);
  if (!f) await fail(page, `no flash message (p.flash[role=status]) after ${after}`);
  return f;
}

/** A fresh page in a context of its own, signed in from `start` (a console path): the
 *  sign-in page comes first and leads back to `start` (its `next=`). */
async function signIn(browser, who, { javascript = true, start = '/admin/' } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.on('dialog', (d) => d.accept());
  await page.setJavaScriptEnabled(javascript);
  await page.setViewport({ width: 1366, height: 900 });
  const res = await page.goto(`${base}${start}`, { waitUntil: 'load' });
  if (!page.url().startsWith(`${base}/admin/login`)) {
    await fail(page, `GET ${start} without a session should land on /admin/login (status ${res.status()})`);
  }
  const next = new URL(page.url()).searchParams.get('next');
  if (start !== '/admin/' && next !== start) {
    await fail(page, `the login page reached from ${start} should carry next=${start}, not ${next}`);
  }
  await page.type('input[name=username]', who.username);
  await page.type('input[name=password]', who.password);
  await clickButton(page, 'Sign in');
  const landed = new URL(page.url()).pathname;
  if (landed !== start && !(start === '/admin/' && landed === '/admin/monitors')) {
    await fail(page, `signing in as ${who.username} from ${start} landed on ${landed}`);
  }
  return { context, page };
}

/** The overview filtered on state=down through its filter form, then the monitor's
 *  detail page through its row's link. */
async function findDownMonitor(page, monitor) {
  const field = await page.$('form [name=state]');
  if (!field) await fail(page, 'the overview has no filter field named state');
  // Filters folded away in a <details> are opened first, as a person would.
  const summary = await field.evaluateHandle((f) => {
    const d = f.closest('details');
    return d && !d.open ? d.querySelector('summary') : null;
  });
  if (summary.asElement()) await summary.asElement().click();
  const tag = await field.evaluate((e) => e.tagName);
  if (tag === 'SELECT') {
    await page.select('form [name=state]', 'down');
  } else {
    await field.click({ clickCount: 3 });
    await field.type('down');
  }
  // The filter form's own submit button.
  const submit = await field.evaluateHandle((f) => f.form.querySelector('button, input[type=submit]'));
  if (!submit.asElement()) await fail(page, 'the filter form has no submit button');
  await clickAndWait(page, submit.asElement());
  if (new URL(page.url()).searchParams.get('state') !== 'down') {
    await fail(page, 'the filter form did not ask for state=down');
  }
  const rows = await page.$$eval('tr[data-monitor]', (rs) => rs.map((r) => [r.dataset.monitor, r.dataset.state]));
  if (!rows.some(([k, s]) => k === monitor && s === 'down')) {
    await fail(page, `${monitor} is not listed as down: ${JSON.stringify(rows)}`);
  }
  const others = rows.filter(([, s]) => s !== 'down');
  if (others.length) await fail(page, `state=down lists monitors in other states: ${JSON.stringify(others)}`);
  const counts = await page.$('#counts');
  if (!counts) await fail(page, 'the overview has no #counts');
  const link = await page.$(`tr[data-monitor="${monitor}"] a[href]`);
  if (!link) await fail(page, `the row of ${monitor} has no link`);
  await clickAndWait(page, link);
  const [ns, name] = monitor.split('/');
  if (new URL(page.url()).pathname !== `/admin/monitors/${ns}/${name}`) {
    await fail(page, `the row's link should open /admin/monitors/${ns}/${name}`);
  }
}

/** From the detail page, the open incident; returns its id. */
async function openIncident(page) {
  const links = await page.$$('#main a[href^="/admin/incidents/"]');
  if (!links.length) await fail(page, 'the monitor detail lists no incident link');
  await clickAndWait(page, links[0]);
  const m = new URL(page.url()).pathname.match(/^\/admin\/incidents\/(\d+)$/);
  if (!m) await fail(page, 'the incident link did not open /admin/incidents/{id}');
  return Number(m[1]);
}

/** Acknowledge, update (with the preview when JavaScript is on), resolve. */
async function handleIncident(page, id, update, javascript) {
  await clickButton(page, 'Acknowledge');
  await expectFlash(page, 'Acknowledge');
  if (await button(page, 'Acknowledge')) await fail(page, 'the Acknowledge button is still shown after acknowledging');
  const message = await page.$(`form[action="/admin/incidents/${id}/updates"] [name=message]`);
  if (!message) await fail(page, `no message field in the form posting to /admin/incidents/${id}/updates`);
  await message.type(update);
  const updatesForm = `form[action="/admin/incidents/${id}/updates"]`;
  if (javascript) {
    await page.waitForFunction(
      (text) => (document.querySelector('#update-preview') || {}).textContent?.includes(text),
      { timeout: STEP_TIMEOUT }, update,
    ).catch(() => fail(page, `#update-preview never showed "${update}"`));
  } else {
    // Without JavaScript the preview is the form sent with preview=1: the page again,
    // the preview filled and the message kept, nothing posted yet.
    const preview = await page.$(`${updatesForm} button[name=preview]`);
    if (!preview) await fail(page, 'without JavaScript the update form offers no preview button (name=preview)');
    await clickAndWait(page, preview);
    const shown = await page.$eval('#update-preview', (p) => p.textContent).catch(() => '');
    if (!shown.includes(update)) await fail(page, `the server-side preview does not show "${update}"`);
    const posted = await page.$eval('#updates', (u) => u.textContent).catch(() => '');
    if (posted.includes(update)) await fail(page, 'the preview posted the update');
    const kept = await page.$eval(`${updatesForm} [name=message]`, (f) => f.value).catch(() => '');
    if (kept !== update) await fail(page, `the preview did not keep the message (${JSON.stringify(kept)})`);
  }
  await clickButton(page, 'Post update', updatesForm);
  await expectFlash(page, 'Post update');
  const listed = await page.$eval('#updates', (u) => u.textContent).catch(() => '');
  if (!listed.includes(update)) await fail(page, `#updates does not list "${update}"`);
  await clickButton(page, 'Resolve');
  await expectFlash(page, 'Resolve');
  if (await button(page, 'Resolve')) await fail(page, 'the Resolve button is still shown after resolving');
}

/** Creates a silence of `monitor` (its preview checked), then expires it; the silence's
 *  key. */
async function silence(page, monitor, reason, javascript) {
  const nav = await page.$('nav a[href="/admin/silences"]');
  if (!nav) await fail(page, 'the nav has no link to /admin/silences');
  await clickAndWait(page, nav);
  const before = new Set(await page.$$eval('tr[data-silence]', (rs) => rs.map((r) => r.dataset.silence)));
  const [ns, name] = monitor.split('/');
  const form = 'form[action="/admin/silences"]';
  const fill = async () => {
    const field = async (n) => {
      const f = await page.$(`${form} [name=${n}]`);
      if (!f) await fail(page, `the silence form has no field ${n}`);
      return f;
    };
    const namespace = await field('namespace');
    if (await namespace.evaluate((e) => e.tagName) === 'SELECT') {
      const chosen = await page.select(`${form} [name=namespace]`, ns);
      if (!chosen.length) await fail(page, `the silence form's namespace offers no option ${ns}`);
    } else {
      await namespace.click({ clickCount: 3 });
      await namespace.type(ns);
    }
    for (const [n, v] of [['monitor', name], ['duration', '30'], ['reason', reason]]) {
      const f = await field(n);
      if (await f.evaluate((e) => e.tagName) === 'SELECT') {
        const chosen = await page.select(`${form} [name=${n}]`, v);
        if (!chosen.length) await fail(page, `the silence form's ${n} offers no option ${v}`);
      } else {
        await f.click({ clickCount: 3 });
        await f.type(v);
      }
    }
  };
  await fill();
  if (javascript) {
    await page.waitForFunction(
      (m) => (document.querySelector('#silence-preview') || {}).textContent?.includes(m),
      { timeout: STEP_TIMEOUT }, monitor,
    ).catch(() => fail(page, `#silence-preview never listed ${monitor}`));
  } else {
    // Without JavaScript the preview is the form submitted with preview=1.
    const preview = await page.$(`${form} button[name=preview]`);
    if (!preview) await fail(page, 'without JavaScript the silence form offers no preview button (name=preview)');
    await clickAndWait(page, preview);
    const text = await page.$eval('#silence-preview', (p) => p.textContent).catch(() => '');
    if (!text.includes(monitor)) await fail(page, `the server-side preview does not list ${monitor}`);
    // The form keeps what was typed; fill it again if it came back empty.
    const kept = await page.$eval(`${form} [name=reason]`, (f) => f.value).catch(() => '');
    if (kept !== reason) await fill();
  }
  await clickButton(page, 'Create silence', form);
  await expectFlash(page, 'Create silence');
  const after = await page.$$eval('tr[data-silence]', (rs) => rs.map((r) => r.dataset.silence));
  const created = after.filter((k) => !before.has(k));
  if (created.length !== 1) await fail(page, `one new silence row expected, found ${JSON.stringify(created)}`);
  const key = created[0];
  await clickButton(page, 'Expire', `tr[data-silence="${key}"]`);
  await expectFlash(page, 'Expire');
  return key;
}

async function sendTest(page, provider) {
  const nav = await page.$('nav a[href="/admin/notifications"]');
  if (!nav) await fail(page, 'the nav has no link to /admin/notifications');
  await clickAndWait(page, nav);
  await clickButton(page, 'Send test', `section[data-provider="${provider}"]`);
  await expectFlash(page, 'Send test');
}

async function signOut(page) {
  await clickButton(page, 'Sign out');
  if (new URL(page.url()).pathname !== '/admin/login') await fail(page, 'Sign out should land on /admin/login');
  // The session is gone: the overview asks for a sign-in again.
  await page.goto(`${base}/admin/`, { waitUntil: 'load' });
  if (new URL(page.url()).pathname !== '/admin/login') await fail(page, 'after signing out, /admin/ still answers');
}

/** The counts of `#counts` by state (`data-count` → number). */
async function counts(page) {
  return page.$$eval('#counts [data-count]', (els) => Object.fromEntries(
    els.map((e) => [e.dataset.count, Number(e.textContent.trim())])));
}

/** The overview open with JavaScript on: `live.monitor` is down; its target starts
 *  answering (an HTTP server on `live.port` started here); console.js's polling changes
 *  its row to up and the counts accordingly, in the same document (a marker set on
 *  `window` survives: no navigation, no reload). The server is returned, to close. */
async function liveOverview(page, live) {
  await page.goto(`${base}/admin/`, { waitUntil: 'load' });
  const row = `tr[data-monitor="${live.monitor}"]`;
  const state = () => page.$eval(row, (r) => r.dataset.state).catch(() => null);
  if (await state() !== 'down') await fail(page, `${live.monitor} should be down on the overview, not ${await state()}`);
  const before = await counts(page);
  if (!(before.down >= 1) || !Number.isInteger(before.up)) await fail(page, `#counts lacks down or up: ${JSON.stringify(before)}`);
  await page.evaluate(() => { window.__kk = 1; });
  let navigations = 0;
  const onNav = (f) => { if (f === page.mainFrame()) navigations += 1; };
  page.on('framenavigated', onNav);
  const server = createServer((req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(live.port, '127.0.0.1', resolve);
  });
  await page.waitForFunction(
    (sel) => document.querySelector(sel)?.dataset.state === 'up',
    { timeout: 90000 }, row,
  ).catch(async () => fail(page, `the row of ${live.monitor} never turned up in the open page (still ${await state()})`));
  page.off('framenavigated', onNav);
  const marker = await page.evaluate(() => window.__kk);
  if (marker !== 1 || navigations) await fail(page, `the overview was reloaded or left (marker ${marker}, ${navigations} navigations)`);
  // The counts follow in the same update; they are the rows' states on this one page.
  const after = await counts(page);
  if (after.down !== before.down - 1 || after.up !== before.up + 1 || after.all !== before.all) {
    await fail(page, `#counts did not follow ${live.monitor} from down to up: before ${JSON.stringify(before)}, after ${JSON.stringify(after)}`);
  }
  const rows = await page.$$eval('tr[data-monitor]', (rs) => rs.map((r) => r.dataset.state));
  for (const s of ['up', 'down']) {
    const n = rows.filter((x) => x === s).length;
    if (after[s] !== n) await fail(page, `#counts says ${after[s]} ${s}, the rows say ${n}: ${JSON.stringify(after)}`);
  }
  return server;
}

/** A session ended from outside the browser (`POST /api/v1/auth/logout` with its
 *  cookie): the next console page asked for lands on the sign-in page saying the session
 *  expired, and signing in again returns to that page. */
async function sessionExpiry(browser, who, path) {
  const { context, page } = await signIn(browser, who);
  const cookie = (await page.cookies(base)).map((c) => `${c.name}=${c.value}`).join('; ');
  if (!cookie.includes('token=')) await fail(page, `no session cookie after signing in: ${cookie}`);
  const out = await fetch(`${base}/api/v1/auth/logout`, {
    method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: '{}',
  });
  if (!out.ok) await fail(page, `POST /api/v1/auth/logout with the console's cookie answered ${out.status}`);
  await page.goto(`${base}${path}`, { waitUntil: 'load' });
  const at = new URL(page.url());
  if (at.pathname !== '/admin/login' || at.searchParams.get('next') !== path) {
    await fail(page, `${path} with an ended session should land on /admin/login?next=${path}, not ${page.url()}`);
  }
  const f = await flash(page);
  if (f !== 'Your session expired, sign in again.') await fail(page, `the sign-in page says ${JSON.stringify(f)}, not that the session expired`);
  await page.type('input[name=username]', who.username);
  await page.type('input[name=password]', who.password);
  await clickButton(page, 'Sign in');
  if (new URL(page.url()).pathname !== path) await fail(page, `signing in again landed on ${page.url()}, not ${path}`);
  if (await page.$('p.error[role=alert]')) await fail(page, 'signing in again shows an error');
  await context.close();
}

/** What the page reports while it loads: console errors, uncaught exceptions, CSP
 *  violations (a listener installed before any script of the page). */
function watch(page) {
  const seen = [];
  page.on('console', (m) => {
    if (m.type() === 'error') seen.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => seen.push(`uncaught: ${e.message}`));
  page.on('requestfailed', (r) => seen.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  return seen;
}

async function installCspListener(page) {
  // Runs through the DevTools protocol before the page's scripts, so the CSP does not
  // apply to it.
  await page.evaluateOnNewDocument(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} (${e.sourceFile || ''}:${e.lineNumber || ''})`);
    });
  });
}

const VIEWPORTS = [
  { name: 'phone', width: 390, height: 844, isMobile: true, hasTouch: true, deviceScaleFactor: 1 },
  { name: 'desktop', width: 1366, height: 900, deviceScaleFactor: 1 },
];
const SCHEMES = ['light', 'dark'];

/** Every page of `pages` ({name, path}) in `page`'s context: for each colour scheme,
 *  axe-core (CSP bypassed for that load only, to inject axe's script), then for each
 *  width a normal load with its reports and a screenshot. */
async function audit(page, pages) {
  mkdirSync(config.shots, { recursive: true });
  const seen = watch(page);
  await installCspListener(page);
  for (const p of pages) {
    for (const scheme of SCHEMES) {
      await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: scheme }]);
      const entry = { page: p.name, path: p.path, scheme, violations: [], errors: [], sideways: [], status: null };
      // axe-core: its script is added as an inline <script>, which the console's CSP
      // (rightly) blocks, so the CSP is bypassed for this load only.
      await page.setViewport(VIEWPORTS[1]);
      await page.setBypassCSP(true);
      await page.goto(`${base}${p.path}`, { waitUntil: 'load' });
      await page.addScriptTag({ path: config.axe });
      const axe = await page.evaluate(async () => {
        // eslint-disable-next-line no-undef
        const r = await axe.run(document, { resultTypes: ['violations'] });
        return r.violations.map((v) => ({
          id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
        }));
      });
      entry.violations = axe;
      await page.setBypassCSP(false);
      for (const vp of VIEWPORTS) {
        await page.setViewport(vp);
        seen.length = 0;
        const res = await page.goto(`${base}${p.path}`, { waitUntil: 'networkidle0' });
        entry.status = res.status();
        if (res.url() !== `${base}${p.path}` && new URL(res.url()).pathname !== new URL(`${base}${p.path}`).pathname) {
          entry.errors.push(`${vp.name}: landed on ${res.url()}`);
        }
        const csp = await page.evaluate(() => window.__cspViolations || []);
        entry.errors.push(...seen.map((s) => `${vp.name}: ${s}`), ...csp.map((c) => `${vp.name}: CSP: ${c}`));
        const wide = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
        if (wide[0] > wide[1]) entry.sideways.push(`${vp.name}: the page is ${wide[0]} px wide in a ${wide[1]} px window`);
        const file = join(config.shots, `${p.name}-${vp.name}-${scheme}.png`);
        await page.screenshot({ path: file, fullPage: true });
        result.screenshots.push(file);
      }
      result.audits.push(entry);
      step(`audited ${p.name} (${scheme}): ${entry.violations.length} axe violations, ${entry.errors.length} errors`);
    }
  }
}

async function main() {
  const args = ['--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'];
  if (config.noSandbox) args.push('--no-sandbox');
  let liveTarget = null;
  const browser = await puppeteer.launch({
    executablePath: config.chromium,
    headless: true,
    args,
    protocolTimeout: 120000,
  });
  try {
    // JavaScript on: the whole round, as an admin.
    {
      const { context, page } = await signIn(browser, config.admin);
      step('signed in as admin');
      // Keyboard: the first Tab reaches the skip link to the main content.
      await page.keyboard.press('Tab');
      const first = await page.evaluate(() => [document.activeElement.tagName, document.activeElement.getAttribute('href')]);
      if (first[0] !== 'A' || first[1] !== '#main') await fail(page, `the first Tab focuses ${first.join(' ')}, not the skip link to #main`);
      liveTarget = await liveOverview(page, config.live);
      step(`${config.live.monitor} turned up in the open overview, counts followed, no reload`);
      await findDownMonitor(page, config.js.monitor);
      step(`found ${config.js.monitor} down on the overview`);
      const id = await openIncident(page);
      result.jsIncident = id;
      await handleIncident(page, id, config.js.update, true);
      step(`incident ${id}: acknowledged, updated, resolved`);
      await sendTest(page, config.provider);
      step(`sent a test through ${config.provider}`);
      result.jsSilence = await silence(page, config.js.monitor, config.js.reason, true);
      step(`silence ${result.jsSilence} created and expired`);
      await signOut(page);
      step('signed out');
      await context.close();
    }
    // JavaScript off: the same core actions with plain forms.
    {
      const { context, page } = await signIn(browser, config.admin, { javascript: false });
      step('signed in as admin without JavaScript');
      await findDownMonitor(page, config.nojs.monitor);
      const id = await openIncident(page);
      result.nojsIncident = id;
      await handleIncident(page, id, config.nojs.update, false);
      step(`incident ${id} without JavaScript: acknowledged, updated, resolved`);
      result.nojsSilence = await silence(page, config.nojs.monitor, config.nojs.reason, false);
      step(`silence ${result.nojsSilence} created and expired without JavaScript`);
      await signOut(page);
      await context.close();
    }
    // A viewer: no Acknowledge button, and the server refuses the action anyway.
    {
      const { context, page } = await signIn(browser, config.viewer, { start: `/admin/incidents/${config.viewerIncident}` });
      for (const text of ['Acknowledge', 'Post update', 'Resolve']) {
        if (await button(page, text)) await fail(page, `a viewer is shown the "${text}" button`);
      }
      await page.goto(`${base}/admin/silences`, { waitUntil: 'load' });
      if (await button(page, 'Create silence')) await fail(page, 'a viewer is shown the "Create silence" button');
      await page.goto(`${base}/admin/notifications`, { waitUntil: 'load' });
      if (await button(page, 'Send test')) await fail(page, 'a viewer is shown the "Send test" button');
      if (await page.$('nav a[href="/admin/audit"]')) await fail(page, 'a viewer is shown the Audit link');
      const audit = await page.goto(`${base}/admin/audit`, { waitUntil: 'load' });
      if (audit.status() !== 403) await fail(page, `the audit page answers a viewer ${audit.status()}, not 403`);
      // The viewer's own CSRF token (from the sign-out form) on a hand-made form post.
      const status = await page.evaluate(async (id) => {
        const csrf = document.querySelector('form[action="/admin/logout"] [name=csrf]').value;
        const r = await fetch(`/admin/incidents/${id}/acknowledge`, {
          method: 'POST', redirect: 'manual',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ csrf }).toString(),
        });
        return r.status;
      }, config.viewerIncident);
      result.viewerAckStatus = status;
      step(`a viewer sees no Acknowledge button; a forged acknowledge answers ${status}`);
      await context.close();
    }
    // A session ended from outside: a graceful way back to the page asked for.
    await sessionExpiry(browser, config.admin, '/admin/incidents');
    step('an ended session lands on the sign-in page saying so; signing in again returns to the page');
    // Every page, signed out (login) and as the admin; the admin's session is handed to
    // Lighthouse afterwards, so this context does not sign out.
    {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      await audit(page, config.pages.filter((p) => p.signedOut));
      await context.close();
    }
    {
      const { context, page } = await signIn(browser, config.admin);
      await audit(page, config.pages.filter((p) => !p.signedOut));
      const cookies = await page.cookies(base);
      result.cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
      await context.close().catch(() => {});
    }
  } finally {
    await browser.close();
    if (liveTarget) {
      liveTarget.closeAllConnections();
      liveTarget.close();
    }
  }
}

main().then(() => {
  writeFileSync(config.out, JSON.stringify(result, null, 2));
}, (e) => {
  result.problems.push(String(e && e.stack || e));
  writeFileSync(config.out, JSON.stringify(result, null, 2));
  console.error(`console-e2e: ${e && e.stack || e}`);
  process.exit(1);
});
