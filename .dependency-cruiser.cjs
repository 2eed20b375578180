// Layer rules of kvcompact, checked by `npm test` (scripts/test.mjs). Imports run one way:
//   format, gpu → kernels → cache → attention → compress → engine → store → model → eval → app → bench → node → cli
// errors.ts and random.ts are shared leaves every layer may use; src/index.ts and src/node.ts only re-export.
const LAYERS = ['format', 'gpu', 'kernels', 'cache', 'attention', 'compress', 'engine', 'store', 'model', 'eval', 'app', 'bench', 'node', 'cli'];
// format and gpu are both the ground floor: neither imports the other.
const BELOW = (i) => LAYERS.slice(0, i).filter((name) => !(LAYERS[i] === 'gpu' && name === 'format'));
const LEAVES = ['src/errors[.]ts$', 'src/random[.]ts$', 'src/wgsl[.]d[.]ts$', '^shaders/'];

const layerRules = LAYERS.map((name, i) => ({
  name: `layer-${name}`,
  comment: `src/${name}/ may import only from the layers below it (${BELOW(i).join(', ') || 'none'}) and the shared leaves`,
  severity: 'error',
  from: { path: `^src/${name}/` },
  to: {
    path: '^src/',
    pathNot: [`^src/${name}/`, ...BELOW(i).map((below) => `^src/${below}/`), ...LEAVES],
  },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'files must not import each other in a loop',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'kernels-one-way',
      comment: 'kernels/cache is below kernels/compress and kernels/model',
      severity: 'error',
      from: { path: '^src/kernels/cache/' },
      to: { path: '^src/kernels/(compress|model)/' },
    },
    {
      name: 'leaves-import-nothing',
      comment: 'errors.ts and random.ts stand below every layer',
      severity: 'error',
      from: { path: '^src/(errors|random)[.]ts$' },
      to: { path: '^src/' },
    },
    {
      name: 'node-only-behind-the-node-entry',
      comment: 'node: modules and Node-only packages only under src/node, src/cli and src/bench (the core runs in browsers)',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/(node|cli|bench)/', '^src/node[.]ts$'] },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'node-packages-behind-the-node-entry',
      comment: 'webgpu (Dawn), redis and playwright are Node-only packages',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/(node|cli|bench)/', '^src/node[.]ts$'] },
      to: { path: 'node_modules/(webgpu|redis|@redis|playwright-core)/' },
    },
    {
      name: 'browser-entry-is-browser-safe',
      comment: 'src/index.ts must not re-export the Node-only layers',
      severity: 'error',
      from: { path: '^src/index[.]ts$' },
      to: { path: '^src/(node|cli|bench)/' },
    },
    {
      name: 'no-test-code-in-production',
      comment: 'nothing under src/ imports test code',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^test/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(dist|node_modules)/' },
  },
};
