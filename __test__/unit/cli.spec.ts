import test from 'ava';
import { runCli } from '../../ts/cli/program.js';
import { PENDING_VERBS } from '../../ts/cli/commands/not-yet.js';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

test('--help lists every verb of the interface', async (t) => {
  const { code, out } = await cli('--help');
  t.is(code, 0);
  for (const verb of ['status', 'endpoint', 'identity', 'service', 'policy', 'bpf', 'observe', 'lab']) t.regex(out, new RegExp(`\\b${verb}\\b`));
});

for (const verb of PENDING_VERBS) {
  const name = verb.path.join(' ');
  test(`\`${name} --help\` works and says plainly that it is not available yet`, async (t) => {
    const { code, out } = await cli(...verb.path, '--help');
    t.is(code, 0);
    t.regex(out, /not available yet/i);
  });

  test(`\`${name}\` refuses to pretend: exit 3 with the reason`, async (t) => {
    const args = verb.arguments ? [...verb.path, 'x'] : verb.path;
    const { code, err, out } = await cli(...args);
    t.is(code, 3);
    t.is(out, '');
    t.regex(err, /not available yet: it lands with/);
  });
}

test('an unknown verb is a usage error (exit 2)', async (t) => {
  const { code, err } = await cli('frobnicate');
  t.is(code, 2);
  t.regex(err, /unknown command 'frobnicate'/);
});

test('an unknown flag is a usage error (exit 2)', async (t) => {
  const { code, err } = await cli('status', '--frobnicate');
  t.is(code, 2);
  t.regex(err, /unknown option '--frobnicate'/);
});

test('a bad output format is a usage error naming the choices', async (t) => {
  const { code, err } = await cli('-o', 'xml', 'lab', 'status');
  t.is(code, 2);
  t.regex(err, /-o xml is not an output format; use one of: human, json/);
});
