// Headless Chromium (playwright-core) for the page checks: one set of flags for every script, and a fresh profile
// that close() removes.
//
//   const { context, close } = await openChromium(config, "report", extraArgs);
// config: {playwright: dir of playwright-core, chromium: executable}.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

// nothing from the network (no updates, sync or QUIC probes), no GPU, no sandbox (containers, root)
export const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export async function openChromium(config, name, extraArgs = []) {
  const { chromium } = createRequire(import.meta.url)(config.playwright);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), `hf-${name}-chromium-`));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: config.chromium,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1280, height: 900 },
    deviceScaleFactor: 1,
  });
  const close = async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}
