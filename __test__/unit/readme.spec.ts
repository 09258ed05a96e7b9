/**
 * The README stays true where it quotes files: the demo's policies are shown as
 * the demo applies them.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../e2e/helpers/lab.js';
import { DEMO_POLICIES_FILE } from '../../ts/demo/app.js';

test('the README shows the demo policies exactly as deploy/examples holds them', (t) => {
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  const policies = readFileSync(join(REPO, DEMO_POLICIES_FILE), 'utf8').trimEnd();
  t.true(readme.includes('```yaml\n' + policies + '\n```'), `README.md must quote ${DEMO_POLICIES_FILE} verbatim`);
});

test('every verb the README lists as available is registered', async (t) => {
  const { buildProgram } = await import('../../ts/cli/program.js');
  const program = buildProgram({ stdout: () => undefined, stderr: () => undefined });
  const names = (c: { commands: readonly { name(): string; commands: readonly unknown[] }[] }, prefix = ''): string[] =>
    c.commands.flatMap((sub) => [`${prefix}${sub.name()}`, ...names(sub as never, `${prefix}${sub.name()} `)]);
  const registered = new Set(names(program as never));
  for (const verb of ['agent', 'status', 'endpoint list', 'identity list', 'bpf ipcache list', 'bpf ct list', 'bpf policy get', 'lab up', 'lab down', 'lab status', 'lab build', 'lab probe']) {
    t.true(registered.has(verb), `membrane ${verb} is registered`);
  }
});
