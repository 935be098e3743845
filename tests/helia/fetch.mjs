// Dials a peer and reads a UnixFS file from it by bitswap, writing it to <out> as it arrives:
// `fetch.mjs <multiaddr> <root cid> <out> [<blockstore dir>]` (blocks kept in memory without a
// directory). Prints {"bytes": N, "ms": T}: T runs from the request, after the dial, to the last
// byte written (the span benches/p2p.sh times for every contender).
import { open } from 'node:fs/promises'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { makeNode, deadline } from './node.mjs'

deadline(300_000)
const [addr, root, out, blocks = null] = process.argv.slice(2)
const helia = await makeNode({ blocks })
await helia.libp2p.dial(multiaddr(addr))
const file = await open(out, 'w')
const started = Date.now()
let bytes = 0
for await (const chunk of unixfs(helia).cat(CID.parse(root), { signal: AbortSignal.timeout(280_000) })) {
  await file.write(chunk)
  bytes += chunk.length
}
const ms = Date.now() - started
await file.close()
console.log(JSON.stringify({ bytes, ms }))
await helia.stop()
process.exit(0)
