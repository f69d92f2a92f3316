'use strict';

// The Express application: routes and pages only. Binding a port and handling
// signals is server.js's job, so tests can mount this on an ephemeral port.

const express = require('express');

// Both sentences are load-bearing: the CI test stage greps the home page for
// HOME_QUESTION, and the tutorial edits STATUS_TEXT to show a new version went live.
const HOME_QUESTION = 'Are you ready to learn about sharks?';
const STATUS_TEXT = 'This app is working';

const SHARK_FACTS = [
  'Sharks were swimming in the oceans more than 400 million years ago, long before the first trees grew on land.',
  'A shark skeleton is made of cartilage, the same flexible tissue as a human nose, not of bone.',
  'The whale shark is the largest living fish; it eats plankton and small fish filtered from the water.',
  'Sharks sense the weak electric fields of their prey through pores on their snout called ampullae of Lorenzini.',
  'The Greenland shark grows about one centimetre a year and is estimated to live for several centuries.',
  'Some sharks must keep swimming to push water over their gills, while others can rest on the sea floor and pump it.',
];

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${title}</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #10263b; }
    header { border-bottom: 2px solid #1f6f8b; margin-bottom: 1rem; }
    nav a { margin-right: 1rem; color: #1f6f8b; }
  </style>
</head>
<body>
  <header>
    <nav><a href="/">Home</a><a href="/sharks">Shark facts</a></nav>
  </header>
  <main>
${body}
  </main>
</body>
</html>
`;
}

function homePage() {
  return page('Shark App', `    <h1>Sharks</h1>
    <h2>${HOME_QUESTION}</h2>
    <p>${STATUS_TEXT}</p>
    <p>Sharks are fish with a long history and some surprising senses. <a href="/sharks">Read a few facts</a>.</p>`);
}

function sharksPage() {
  const items = SHARK_FACTS.map((fact) => `      <li>${fact}</li>`).join('\n');
  return page('Shark facts', `    <h1>Shark facts</h1>
    <ul>
${items}
    </ul>`);
}

function createApp() {
  const app = express();
  app.disable('x-powered-by');

  app.get('/', (req, res) => {
    res.type('html').send(homePage());
  });

  app.get('/sharks', (req, res) => {
    res.type('html').send(sharksPage());
  });

  // Liveness/readiness probe target: no I/O, so it only fails if the process does.
  app.get('/healthz', (req, res) => {
    res.set('Cache-Control', 'no-store').json({ status: 'ok' });
  });

  app.use((req, res) => {
    res.status(404).type('html').send(page('Not found', '    <h1>Not found</h1>\n    <p>No shark lives here.</p>'));
  });

  return app;
}

module.exports = { createApp, HOME_QUESTION, STATUS_TEXT, SHARK_FACTS };
