// Drives Trystero peers in headless Chromium for genos's interop tests.
//
// Reads one JSON command per line on stdin and answers on stdout, one JSON object per line:
//   {"cmd":"page"}                      -> {"ok":"page","page":N}   (a new browser context)
//   {"cmd":"join","page":N,"relay":URL,"app":A,"room":R,"password":P?}
//                                       -> {"ok":"join","page":N,"peer":ID}
//   {"cmd":"send","page":N,"action":"chat"|"file","data":JSON?,"bytes":N?,"metadata":M?}
//                                       -> {"ok":"send","page":N,"updates":K}
//   {"cmd":"ping","page":N,"peer":ID}   -> {"ok":"ping","page":N,"ms":RTT}
//   {"cmd":"media","page":N,"metadata":M?} -> {"ok":"media","page":N,"kinds":[..]}
//                                       (the fake camera and microphone, added as a stream)
//   {"cmd":"mediaStats","page":N}       -> {"ok":"mediaStats","page":N,"stats":{..}}
//   {"cmd":"leave","page":N}            -> {"ok":"leave","page":N}
//   {"cmd":"quit"}
// Room events arrive unasked: {"ev":"join"|"leave"|"message"|"progress"|"track"|"error","page":N,...}.
// Needs `npm ci` in this folder and Chromium at /usr/bin/chromium (.ci/run installs both).
import {chromium} from 'playwright-core'
import * as esbuild from 'esbuild'
import http from 'node:http'
import readline from 'node:readline'
import {fileURLToPath} from 'node:url'
import path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))
const bundle = await esbuild.build({
  entryPoints: [path.join(here, 'page.js')],
  bundle: true,
  format: 'iife',
  write: false,
  logLevel: 'silent'
})
const script = bundle.outputFiles[0].text
const server = http.createServer((req, res) => {
  if (req.url === '/page.js') {
    res.writeHead(200, {'content-type': 'text/javascript'})
    res.end(script)
  } else if (req.url === '/') {
    res.writeHead(200, {'content-type': 'text/html'})
    res.end('<!doctype html><html><body><script src="/page.js"></script></body></html>')
  } else {
    res.writeHead(404)
    res.end()
  }
})
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve))
const url = `http://127.0.0.1:${server.address().port}/`

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream'
  ]
})
const out = value => process.stdout.write(JSON.stringify(value) + '\n')
const pages = []

const handle = async command => {
  switch (command.cmd) {
    case 'page': {
      const context = await browser.newContext({permissions: ['camera', 'microphone']})
      const page = await context.newPage()
      const n = pages.length
      pages.push(page)
      page.on('console', message => process.stderr.write(`[page ${n}] ${message.text()}\n`))
      await page.exposeFunction('report', event => out({...event, page: n}))
      await page.goto(url)
      return {ok: 'page', page: n}
    }
    case 'join': {
      const peer = await pages[command.page].evaluate(options => window.genos.join(options), command)
      return {ok: 'join', page: command.page, peer}
    }
    case 'send': {
      const updates = await pages[command.page].evaluate(options => window.genos.send(options), command)
      return {ok: 'send', page: command.page, updates}
    }
    case 'ping': {
      const ms = await pages[command.page].evaluate(peer => window.genos.ping(peer), command.peer)
      return {ok: 'ping', page: command.page, ms}
    }
    case 'media': {
      const kinds = await pages[command.page].evaluate(options => window.genos.media(options), command)
      return {ok: 'media', page: command.page, kinds}
    }
    case 'mediaStats': {
      const stats = await pages[command.page].evaluate(() => window.genos.mediaStats())
      return {ok: 'mediaStats', page: command.page, stats}
    }
    case 'leave': {
      await pages[command.page].evaluate(() => window.genos.leave())
      return {ok: 'leave', page: command.page}
    }
    case 'quit':
      await browser.close()
      server.close()
      process.exit(0)
    default:
      return {error: `unknown command ${command.cmd}`}
  }
}

// One command at a time, in order: each may depend on the ones before it.
let queue = Promise.resolve()
const lines = readline.createInterface({input: process.stdin})
lines.on('line', line => {
  let command
  try {
    command = JSON.parse(line)
  } catch {
    out({error: 'not JSON'})
    return
  }
  queue = queue
    .then(() => handle(command))
    .then(out, error => out({error: String(error), cmd: command.cmd}))
})
lines.on('close', () => {
  queue = queue.then(async () => {
    await browser.close()
    process.exit(0)
  })
})
out({ready: true})
