// Holds a block nobody else has and announces it in the DHT, then hangs up, so that the only way
// to find it is a Kademlia get_providers: `provide.mjs <size> <file to write the block to> [dht protocol]`.
// Prints {"addr", "cid"} first, then "provided" after each announcement and "hung-up" when told to
// hang up; stays up (serving bitswap) until stdin closes.
import { writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { makeNode, deadline } from './node.mjs'

deadline(300_000)
const [size, file, protocol = '/ipfs/kad/1.0.0'] = process.argv.slice(2)
const data = randomBytes(Number(size))
await writeFile(file, data)
const cid = CID.createV1(raw.code, await sha256.digest(data))
const helia = await makeNode({ dht: protocol })
await helia.blockstore.put(cid, data)
console.log(JSON.stringify({ addr: helia.libp2p.getMultiaddrs()[0].toString(), cid: cid.toString() }))

// Wait for a DHT server to join our routing table (the daemon bootstraps to us).
while (helia.libp2p.services.dht.routingTable.size === 0) {
  await new Promise(resolve => setTimeout(resolve, 100))
}
// Commands on stdin, one a line: "provide" announces (again), "hangup" stops the DHT (its
// routing-table refresh would dial the daemon again) and hangs up, so that from then on the
// daemon can only find us through the provider record it holds. Bitswap keeps serving.
const provide = async () => {
  await helia.routing.provide(cid, { signal: AbortSignal.timeout(60_000) })
  console.log('provided')
}
await provide()
const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (line === 'provide') await provide()
  if (line === 'hangup') {
    await helia.libp2p.services.dht.stop()
    for (const conn of helia.libp2p.getConnections()) await helia.libp2p.hangUp(conn.remotePeer)
    console.log('hung-up')
  }
}
await helia.stop()
process.exit(0)
