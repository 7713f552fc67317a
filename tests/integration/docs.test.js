'use strict';
// The README's configuration table is the one `conveyor config` prints from the code's
// table of settings, and its quick start is the two commands.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');

test('README configuration table matches `conveyor config`', () => {
  const table = execFileSync(process.env.CONVEYOR_BIN, ['config'], { encoding: 'utf8' });
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const rows = table.split('\n').filter((l) => l.startsWith('| `CONVEYOR_'));
  assert.ok(rows.length >= 20, `expected the settings table, got ${rows.length} rows`);
  for (const row of rows) assert.ok(readme.includes(row), `README lacks or differs on: ${row}`);
  const documented = readme.split('\n').filter((l) => l.startsWith('| `CONVEYOR_'));
  assert.equal(documented.length, rows.length, 'README documents a setting the code lacks');
});

test('README quick start is `make run` and `make check`', () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const start = readme.slice(readme.indexOf('## Quick start'));
  const block = start.slice(start.indexOf('```sh'), start.indexOf('```', start.indexOf('```sh') + 5));
  const commands = block.split('\n').slice(1).map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  assert.deepEqual(commands, ['make run', 'make check']);
});
