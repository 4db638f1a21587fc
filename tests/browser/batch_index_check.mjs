// Open a batch index.html (headforge/batch/index_html.py) in headless Chromium (playwright-core) from file:// and
// record what tests/test_batch_index.py checks.
//
//   node batch_index_check.mjs CONFIG.json
// CONFIG: {playwright: dir of playwright-core, chromium: executable, html: page path, out: folder for results,
//          sortKey: data-key of the header to click twice}
// Writes into out: result.json (console messages, page errors, failed requests, tbody row ids as opened, failure
// ids, row ids and aria-sort after one and two clicks on the header, every thumbnail's src and natural size) and
// page.png (the whole page).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { openChromium } from "./chromium.mjs";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

const result = { console: [], pageErrors: [], failedRequests: [], externalRequests: [] };
const save = () => fs.writeFileSync(path.join(config.out, "result.json"), JSON.stringify(result, null, 1));
const { context, close } = await openChromium(config, "batch-index");
try {
  // the page must need nothing from the network: every such request is recorded and refused
  await context.route(/^https?:\/\//, async (route) => {
    result.externalRequests.push(route.request().url().slice(0, 200));
    await route.abort();
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("console", (m) => result.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => result.pageErrors.push(String(e && e.stack || e)));
  page.on("requestfailed", (r) => result.failedRequests.push(r.url().slice(0, 200)));

  await page.goto(pathToFileURL(config.html).href, { waitUntil: "load", timeout: 60000 });
  const rowIds = () => page.evaluate(
    () => [...document.querySelectorAll("#items tbody tr")].map((tr) => tr.dataset.id));
  const ariaSort = () => page.evaluate(() => [...document.querySelectorAll("#items thead th")]
    .filter((th) => th.hasAttribute("aria-sort")).map((th) => [th.dataset.key, th.getAttribute("aria-sort")]));
  result.rows = await rowIds();
  result.failures = await page.evaluate(
    () => [...document.querySelectorAll("#failures article.failure")].map((a) => a.dataset.id));
  result.ariaSortBefore = await ariaSort();
  const header = page.locator(`#items thead th[data-key="${config.sortKey}"] button`);
  await header.click();
  result.rowsAfterOne = await rowIds();
  result.ariaSortAfterOne = await ariaSort();
  await header.click();
  result.rowsAfterTwo = await rowIds();
  result.ariaSortAfterTwo = await ariaSort();

  // every thumbnail, scrolled into view (they load lazily), decoded at its size
  const images = page.locator("#items img");
  result.images = [];
  for (let i = 0; i < await images.count(); i++) {
    const image = images.nth(i);
    await image.scrollIntoViewIfNeeded();
    result.images.push(await image.evaluate((im) => im.decode().then(
      () => ({ src: im.getAttribute("src"), row: im.closest("tr").dataset.id, width: im.naturalWidth,
               height: im.naturalHeight }),
      (e) => ({ src: im.getAttribute("src"), row: im.closest("tr").dataset.id, error: String(e) }))));
  }
  await page.screenshot({ path: path.join(config.out, "page.png"), fullPage: true });
  save();
} finally {
  await close();
}
