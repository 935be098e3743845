// A Helia node that only ever talks to 127.0.0.1: TCP + noise + yamux, identify, ping, bitswap,
// and (optionally) Kademlia in server mode on the protocol given. No bootstrap, no mDNS, no
// delegated routing: createHeliaLight + withLibp2pLight start nothing that reaches the internet.
import { createHeliaLight } from 'helia'
import { withLibp2pLight } from '@helia/libp2p'
import { withBitswap } from '@helia/bitswap'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { MemoryBlockstore } from 'blockstore-core'
import { FsBlockstore } from 'blockstore-fs'
import { MemoryDatastore } from 'datastore-core'

// blocks: a directory for an on-disk blockstore (blockstore-fs); in memory when null.
export async function makeNode ({ dht = null, blocks = null } = {}) {
  const services = { identify: identify(), ping: ping() }
  if (dht) {
    // dht: the Kademlia protocol, '/ipfs/kad/1.0.0' (WAN) or '/ipfs/lan/kad/1.0.0' (kubo's LAN DHT)
    services.dht = kadDHT({ protocol: dht, clientMode: false, peerInfoMapper: passthroughMapper })
  }
  const blockstore = blocks ? new FsBlockstore(blocks) : new MemoryBlockstore()
  if (blocks) await blockstore.open()
  const helia = withBitswap(withLibp2pLight(createHeliaLight({
    blockstore, datastore: new MemoryDatastore()
  }), {
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services
  }))
  await helia.start()
  return helia
}

// Reads a whole async iterable of Uint8Array chunks.
export async function collect (iter) {
  const parts = []
  for await (const c of iter) parts.push(c)
  return Buffer.concat(parts)
}

// Exits with an error if the test has not finished with us by then.
export function deadline (ms) {
  setTimeout(() => { console.error('deadline reached'); process.exit(2) }, ms).unref()
}
