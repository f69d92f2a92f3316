'use strict';

// Entry point: `node server.js` (the image's CMD). Listens on PORT (default 8080)
// and shuts down cleanly on SIGTERM, which Kubernetes sends before killing a pod.

const { createApp } = require('./src/app');

const DEFAULT_PORT = 8080;
// Kubernetes waits terminationGracePeriodSeconds (30 s by default) before SIGKILL;
// give up on lingering connections well before that.
const SHUTDOWN_TIMEOUT_MS = 10_000;

function resolvePort(env = process.env) {
  if (env.PORT === undefined || env.PORT === '') {
    return DEFAULT_PORT;
  }
  const port = Number(env.PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`PORT must be an integer between 0 and 65535, got "${env.PORT}"`);
  }
  return port;
}

// Resolves with the listening http.Server; port 0 picks a free port (tests).
function startServer({ port = resolvePort() } = {}) {
  const app = createApp();
  return new Promise((resolve, reject) => {
    const server = app.listen(port);
    server.once('listening', () => resolve(server));
    server.once('error', reject);
  });
}

function shutdownOnSignals(server) {
  const shutdown = (signal) => {
    console.log(`${signal} received, closing server`);
    server.close((err) => {
      if (err) {
        console.error('error while closing server:', err);
        process.exit(1);
      }
      process.exit(0);
    });
    // Keep-alive connections would otherwise hold close() open until they time out.
    server.closeIdleConnections();
    setTimeout(() => {
      console.error('shutdown timed out, exiting');
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

if (require.main === module) {
  startServer()
    .then((server) => {
      console.log(`shark-app listening on port ${server.address().port}`);
      shutdownOnSignals(server);
    })
    .catch((err) => {
      console.error('failed to start:', err.message);
      process.exit(1);
    });
}

module.exports = { startServer, resolvePort, DEFAULT_PORT };
