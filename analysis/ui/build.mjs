// Bundles src/ into dist/ (app.js, app.css, index.html). dist is committed so that `go build`
// needs no Node; run `make ui` after changing src/.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
mkdirSync('dist');
await build({
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020'],
  outdir: 'dist',
  legalComments: 'eof', // keep the libraries' licence notices,
  logLevel: 'info',
});
copyFileSync('src/index.html', 'dist/index.html');
