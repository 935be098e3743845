// A Helia node that holds a DAG imported from a CAR and serves it by bitswap:
// `serve-car.mjs <car url>`. Prints {"addr", "roots"}; stays up until stdin closes.
import { CarReader } from '@ipld/car'
import { makeNode, deadline } from './node.mjs'

deadline(900_000)
const [url] = process.argv.slice(2)
const resp = await fetch(url)
if (!resp.ok) throw new Error(`GET ${url}: HTTP ${resp.status}`)
const car = await CarReader.fromBytes(new Uint8Array(await resp.arrayBuffer()))
const helia = await makeNode()
for await (const { cid, bytes } of car.blocks()) await helia.blockstore.put(cid, bytes)
console.log(JSON.stringify({ addr: helia.libp2p.getMultiaddrs()[0].toString(), roots: (await car.getRoots()).map(String) }))
process.stdin.resume()
process.stdin.on('end', async () => { await helia.stop(); process.exit(0) })
