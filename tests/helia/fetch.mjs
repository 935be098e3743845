// Dials a peer and reads a UnixFS file from it by bitswap: `fetch.mjs <multiaddr> <root cid> <out>`.
// Prints {"bytes": N, "ms": T} on success.
import { writeFile } from 'node:fs/promises'
import { unixfs } from '@helia/unixfs'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { makeNode, collect, deadline } from './node.mjs'

deadline(300_000)
const [addr, root, out] = process.argv.slice(2)
const helia = await makeNode()
await helia.libp2p.dial(multiaddr(addr))
const started = Date.now()
const bytes = await collect(unixfs(helia).cat(CID.parse(root), { signal: AbortSignal.timeout(280_000) }))
const ms = Date.now() - started
await writeFile(out, bytes)
console.log(JSON.stringify({ bytes: bytes.length, ms }))
await helia.stop()
process.exit(0)
