// Drives Debian's Chromium (headless, through playwright-core) for tests/dashboard_in_chromium.rs.
// Usage: node drive.mjs URL. Reads one JSON command per line on stdin, answers one JSON line on
// stdout each: {"ok": true, "value": …} or {"ok": false, "error": "…"}. Commands:
//   {"op": "wait_text", "selector": S, "contains": T}  some element matching S contains text T
//   {"op": "wait", "expr": E}                          the page expression E becomes truthy
//   {"op": "eval", "expr": E}                          E's value (JSON)
//   {"op": "click", "selector": S}
//   {"op": "fill", "selector": S, "text": T}
//   {"op": "screenshot", "path": P}
//   {"op": "problems"}                                 page errors, console errors, CSP reports
// Waits give up after 30 s.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
page.on('dialog', (d) => { problems.push(`dialog: ${d.message()}`); d.dismiss(); });
await page.goto(url);

const timeout = 30_000;
// Polls `expr` through the DevTools protocol. (Playwright's waitForFunction compiles its predicate
// in the page with `new Function`, which the dashboard's CSP forbids, as it should.)
async function until(expr) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await page.evaluate(expr);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${expr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const ops = {
  wait_text: ({ selector, contains }) => until(
    `[...document.querySelectorAll(${JSON.stringify(selector)})]` +
    `.some((e) => e.textContent.includes(${JSON.stringify(contains)}))`),
  wait: ({ expr }) => until(expr),
  eval: ({ expr }) => page.evaluate(expr),
  click: ({ selector }) => page.click(selector, { timeout }).then(() => true),
  fill: ({ selector, text }) => page.fill(selector, text, { timeout }).then(() => true),
  screenshot: ({ path }) => page.screenshot({ path, fullPage: true }).then(() => path),
  problems: async () => problems,
};

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
say({ ok: true, value: 'ready' });
for await (const line of readline.createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  try {
    say({ ok: true, value: (await ops[cmd.op](cmd)) ?? null });
  } catch (e) {
    say({ ok: false, error: String(e.message || e).split('\n')[0] });
  }
}
await browser.close();
