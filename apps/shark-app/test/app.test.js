'use strict';

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');

const { startServer, resolvePort } = require('../server');

describe('shark-app HTTP routes', () => {
  let server;
  let baseUrl;

  before(async () => {
    server = await startServer({ port: 0 }); // ephemeral port, never 8080
    baseUrl = `http://127.0.0.1:${server.address().port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('serves the home page with both sentences the pipeline and tutorial rely on', async () => {
    const res = await fetch(`${baseUrl}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    const body = await res.text();
    assert.ok(body.includes('Are you ready to learn about sharks?'), 'home page lacks the CI test sentence');
    assert.ok(body.includes('<p>This app is working</p>'), 'home page lacks the version paragraph');
  });

  it('serves shark facts on /sharks', async () => {
    const res = await fetch(`${baseUrl}/sharks`);
    assert.equal(res.status, 200);
    const body = await res.text();
    assert.match(body, /<h1>Shark facts<\/h1>/);
    assert.ok((body.match(/<li>/g) || []).length >= 3, 'expected at least three facts');
    assert.match(body, /cartilage/);
  });

  it('answers the health probe with 200', async () => {
    const res = await fetch(`${baseUrl}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
  });

  it('returns 404 for an unknown path', async () => {
    const res = await fetch(`${baseUrl}/no-such-shark`);
    assert.equal(res.status, 404);
  });

  it('does not advertise the framework', async () => {
    const res = await fetch(`${baseUrl}/`);
    assert.equal(res.headers.get('x-powered-by'), null);
  });
});

describe('port selection', () => {
  it('defaults to 8080', () => {
    assert.equal(resolvePort({}), 8080);
  });

  it('honours PORT', () => {
    assert.equal(resolvePort({ PORT: '3000' }), 3000);
  });

  it('rejects a PORT that is not a port number', () => {
    assert.throws(() => resolvePort({ PORT: 'eighty' }), /PORT must be an integer/);
    assert.throws(() => resolvePort({ PORT: '70000' }), /PORT must be an integer/);
  });
});

describe('process lifecycle', () => {
  it('exits 0 after SIGTERM, as a Kubernetes pod must', { timeout: 15_000 }, async () => {
    const child = spawn(process.execPath, [path.join(__dirname, '..', 'server.js')], {
      env: { ...process.env, PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

    const port = await new Promise((resolve, reject) => {
      child.stdout.on('data', (chunk) => {
        output += chunk;
        const m = output.match(/listening on port (\d+)/);
        if (m) resolve(Number(m[1]));
      });
      child.stderr.on('data', (chunk) => { output += chunk; });
      child.once('exit', () => reject(new Error(`server exited before listening:\n${output}`)));
    });

    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200);

    child.kill('SIGTERM');
    const { code, signal } = await exited;
    assert.equal(signal, null, `killed by ${signal} instead of exiting:\n${output}`);
    assert.equal(code, 0, output);
    assert.match(output, /SIGTERM received/);
  });
});
