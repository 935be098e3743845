// Reads a NAR the way any IPFS node would: fetches the CAR that peerix's trustless gateway exports
// for a root CID, imports its blocks into a Helia node, and `@helia/unixfs` cat()s the root to a
// file. Prints a JSON summary on stdout.
//
//   node --import ./polyfill.mjs car-cat.mjs <car url> <root cid> <output file>
import { writeFile } from 'node:fs/promises'
import { createHeliaLight } from 'helia'
import { unixfs } from '@helia/unixfs'
import { CarReader } from '@ipld/car'
import { MemoryBlockstore } from 'blockstore-core'
import { MemoryDatastore } from 'datastore-core'
import { CID } from 'multiformats/cid'

const [url, rootText, out] = process.argv.slice(2)
const resp = await fetch(url, { headers: { accept: 'application/vnd.ipld.car' } })
if (!resp.ok) throw new Error(`GET ${url}: HTTP ${resp.status}`)
const car = await CarReader.fromBytes(new Uint8Array(await resp.arrayBuffer()))

const blockstore = new MemoryBlockstore()
let blocks = 0
for await (const { cid, bytes } of car.blocks()) {
  await blockstore.put(cid, bytes)
  blocks++
}
const helia = createHeliaLight({ blockstore, datastore: new MemoryDatastore() })
await helia.start()
const chunks = []
for await (const chunk of unixfs(helia).cat(CID.parse(rootText), { offline: true })) chunks.push(chunk)
const bytes = Buffer.concat(chunks)
await writeFile(out, bytes)
await helia.stop()
console.log(JSON.stringify({ blocks, bytes: bytes.length, roots: (await car.getRoots()).map(String) }))
