// Imports files and directories with the npm `ipfs-unixfs-importer`
// configured as Kubo's `ipfs add` (CIDv0, dag-pb leaves, fixed 256 KiB
// chunks, balanced layout with at most 174 links per node, a single chunk
// as its own root), and prints one JSON line {"path", "cid"} per entry.
//
// Usage: node unixfs-import.mjs MODULE_DIR [--cid-version N] [--raw-leaves]
//        [--chunk-size N] PATH...
// MODULE_DIR is the installed ipfs-unixfs-importer package directory.
// Entries whose name starts with "." are left out, as Kubo does.
import { createReadStream, readdirSync, lstatSync, readlinkSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const moduleDir = args.shift();
const load = (rel) => import(pathToFileURL(join(moduleDir, rel)).href);
const { importer } = await load('dist/src/index.js');
const { fixedSize } = await load('dist/src/chunker/fixed-size.js');
const { balanced } = await load('dist/src/layout/balanced.js');

let cidVersion = 0;
let rawLeaves = false;
let chunkSize = 262144;
const paths = [];
while (args.length > 0) {
  const a = args.shift();
  if (a === '--cid-version') {
    cidVersion = Number(args.shift());
    rawLeaves = cidVersion === 1;
  } else if (a === '--raw-leaves') {
    rawLeaves = true;
  } else if (a === '--chunk-size') {
    chunkSize = Number(args.shift());
  } else {
    paths.push(a);
  }
}

function* entries(path, rel) {
  const st = lstatSync(path);
  if (st.isDirectory()) {
    yield { path: rel };
    for (const name of readdirSync(path).sort()) {
      if (!name.startsWith('.')) {
        yield* entries(join(path, name), `${rel}/${name}`);
      }
    }
  } else if (st.isFile()) {
    yield { path: rel, content: createReadStream(path) };
  } else {
    throw new Error(`unsupported entry ${path}`);
  }
}

// Blocks are not kept: only the CIDs are compared.
const blockstore = { put: async (cid) => cid };
for (const p of paths) {
  const source = entries(p, basename(resolve(p)));
  for await (const entry of importer(source, blockstore, {
    cidVersion,
    rawLeaves,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: 174 }),
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
  })) {
    console.log(JSON.stringify({ path: entry.path, cid: entry.cid.toString() }));
  }
}
