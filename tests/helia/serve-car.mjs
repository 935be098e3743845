// A Helia node that holds the blocks of a CAR file and serves them by bitswap, whatever they are
// (tests give it hostile DAGs): `serve-car.mjs <car file>`. Prints {"addr", "roots"}; stays up
// until stdin closes.
import { readFile } from 'node:fs/promises'
import { CarReader } from '@ipld/car'
import { makeNode, deadline } from './node.mjs'

deadline(900_000)
const [file] = process.argv.slice(2)
const car = await CarReader.fromBytes(new Uint8Array(await readFile(file)))
const helia = await makeNode()
for await (const { cid, bytes } of car.blocks()) await helia.blockstore.put(cid, bytes)
console.log(JSON.stringify({ addr: helia.libp2p.getMultiaddrs()[0].toString(), roots: (await car.getRoots()).map(String) }))
process.stdin.resume()
process.stdin.on('end', async () => { await helia.stop(); process.exit(0) })
