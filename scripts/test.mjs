// `npm test`: typecheck, build, then every vitest test (unit, GPU on the adapter found, browser), and a plain
// closing line "N passed, N failed" that any CI can read. Exits non-zero if any step failed.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';

function step(name, command, args) {
  console.log(`\n> ${name}: ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { stdio: 'inherit' });
  return result.status ?? 1;
}

const extra = process.argv.slice(2);
let status = step('typecheck', 'npx', ['tsc', '--noEmit', '-p', 'tsconfig.json']);
if (status === 0) status = step('build', 'npm', ['run', '--silent', 'build']);
if (status !== 0) {
  console.log('0 passed, 1 failed');
  process.exit(status);
}
mkdirSync('artifacts', { recursive: true });
const report = 'artifacts/vitest.json';
status = step('tests', 'npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...extra]);
if (existsSync(report)) {
  const summary = JSON.parse(readFileSync(report, 'utf8'));
  const failed = summary.numFailedTests + (summary.numFailedTestSuites ?? 0);
  console.log(`\n${summary.numPassedTests} passed, ${failed} failed${summary.numPendingTests ? `, ${summary.numPendingTests} skipped` : ''}`);
} else {
  console.log('0 passed, 1 failed');
}
process.exit(status);
