// Copies the chart library (uPlot, MIT) from node_modules into web/static/vendor,
// where go:embed picks it up: the console works offline, with no CDN.
//
//   cd web/tests && npm ci && npm run vendor
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, 'node_modules', 'uplot');
const out = join(here, '..', 'static', 'vendor');
mkdirSync(out, { recursive: true });
const version = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')).version;
for (const [from, to] of [
  ['dist/uPlot.iife.min.js', 'uplot.min.js'],
  ['dist/uPlot.min.css', 'uplot.min.css'],
  ['LICENSE', 'uplot.LICENSE'],
]) {
  copyFileSync(join(pkg, from), join(out, to));
  console.log(`vendor: uPlot ${version} ${from} -> web/static/vendor/${to}`);
}
