// esbuild's options for every binary in dist/ (build.mjs), also used by benchmarks that bundle a variant of
// a plugin (bench/ipam-codec.ts) so that the variant is built exactly as the shipped file.
export const BUNDLE_OPTIONS = {
  write: false,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minifySyntax: true,
  sourcemap: false,
  legalComments: 'none',
  banner: { js: '#!/usr/bin/env node' },
  logLevel: 'warning',
}
