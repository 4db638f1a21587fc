// Drive a headforge report page in headless Chromium (playwright-core) and record what the test checks.
//
//   node report_check.mjs CONFIG.json
// CONFIG: {playwright: dir of playwright-core, chromium: executable, html: page path, out: folder for results,
//          target: morph target to move (null: only screenshots), node: glTF node whose mesh holds it,
//          points: mesh-local [x, y, z] to project (the vertices the target moves, before and after),
//          clip: animation to play or null, cdnRoot: {prefix: URL, dir: folder} to serve CDN requests from
//          local files (or null: every network request fails)}
// Writes into out: before.png and after.png (the canvas, slider at 0 then 1), clip.png, reset.png, page.png (the
// whole page), result.json (state, console messages, page errors, failed requests, projections, weights).
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { openChromium } from "./chromium.mjs";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));

const result = { console: [], pageErrors: [], failedRequests: [], routed: [] };
const save = () => fs.writeFileSync(path.join(config.out, "result.json"), JSON.stringify(result, null, 1));
// WebGL through SwiftShader (no GPU)
const { context, close } = await openChromium(config, "report", ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]);
try {
  // nothing leaves the machine: CDN requests are answered from local files when asked, all else fails
  await context.route(/^https?:\/\//, async (route) => {
    const url = route.request().url();
    if (config.cdnRoot && url.startsWith(config.cdnRoot.prefix)) {
      const file = path.join(config.cdnRoot.dir, url.slice(config.cdnRoot.prefix.length));
      result.routed.push(url);
      await route.fulfill({ status: 200, body: fs.readFileSync(file),
                            headers: { "content-type": "text/javascript", "access-control-allow-origin": "*" } });
    } else {
      await route.abort();
    }
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("console", (m) => result.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => result.pageErrors.push(String(e && e.stack || e)));
  page.on("requestfailed", (r) => result.failedRequests.push(r.url().slice(0, 200)));

  await page.goto(pathToFileURL(config.html).href, { waitUntil: "load", timeout: 120000 });
  await page.waitForFunction(() => document.body.dataset.viewerState !== "loading", null, { timeout: 120000 });
  result.state = await page.evaluate(() => document.body.dataset.viewerState);
  if (result.state !== "ready") { save(); process.exit(0); }
  await page.evaluate(() => window.headforgeViewer.ready);
  Object.assign(result, await page.evaluate(() => {
    const v = window.headforgeViewer, canvas = document.getElementById("hf-canvas");
    return { targetNames: v.targetNames, clipNames: v.clipNames, revision: v.revision, readyMs: v.readyMs,
             canvas: { width: canvas.clientWidth, height: canvas.clientHeight },
             sourceLine: document.getElementById("hf-viewer-source").textContent };
  }));
  const canvas = page.locator("#hf-canvas");
  await canvas.screenshot({ path: path.join(config.out, "before.png") });
  if (config.target) {  // null: only the screenshots of the page as it opens
    // the page's own control: set the slider and dispatch its input event
    const slider = page.locator(`input[type=range][data-target="${config.target}"]`);
    result.sliderCount = await slider.count();
    const rendersBefore = await page.evaluate(() => window.headforgeViewer.renderCount);
    await slider.evaluate((el) => { el.value = "1"; el.dispatchEvent(new Event("input", { bubbles: true })); });
    Object.assign(result, await page.evaluate(([t, n]) => {
      const v = window.headforgeViewer;
      return { weightAfter: v.weight(t), influenceAfter: v.influence(t), rendered: v.renderCount - n };
    }, [config.target, rendersBefore]));
    await canvas.screenshot({ path: path.join(config.out, "after.png") });
    result.projected = await page.evaluate(
      ([t, pts, node]) => window.headforgeViewer.projectMeshPoints(t, pts, node),
      [config.target, config.points, config.node]);

    if (config.clip) {  // the clip's button, as a user would press it
      await page.locator(`button[data-clip="${config.clip}"]`).click();
      await page.waitForTimeout(400);
      result.clipPressed = await page.locator(`button[data-clip="${config.clip}"]`).getAttribute("aria-pressed");
      result.clipInfluences = [];
      for (let i = 0; i < 6; i++) {
        result.clipInfluences.push(await page.evaluate((t) => window.headforgeViewer.influence(t), config.target));
        await page.waitForTimeout(120);
      }
      await canvas.screenshot({ path: path.join(config.out, "clip.png") });
      await page.locator("#hf-stop").click();
      result.influenceAfterStop = await page.evaluate((t) => window.headforgeViewer.influence(t), config.target);
    }
    await page.locator("#hf-reset").click();
    result.weightAfterReset = await page.evaluate((t) => window.headforgeViewer.weight(t), config.target);
    await canvas.screenshot({ path: path.join(config.out, "reset.png") });
  }
  // every picture decodes (the page embeds them as data URIs), then a picture of the whole page
  result.images = await page.evaluate(() => Promise.all([...document.images].map(
    (im) => im.decode().then(() => ({ alt: im.alt, width: im.naturalWidth, height: im.naturalHeight }),
                             (e) => ({ alt: im.alt, error: String(e) })))));
  await page.screenshot({ path: path.join(config.out, "page.png"), fullPage: true });
  save();
} finally {
  await close();
}
