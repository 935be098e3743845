// Drives peerix's kubo RPC subset with kubo's own client library (kubo-rpc-client), so the shapes
// are checked by the code that reads real kubo answers: `rpc.mjs <base url> <root cid> <out dir>`.
// Writes block, cat, part (offset 70000, length 300000) and car into <out dir>; prints a JSON
// summary of block/stat, id and the errors the client raised for a bad and a missing CID.
import { writeFile } from 'node:fs/promises'
import { create } from 'kubo-rpc-client'
import { CID } from 'multiformats/cid'
import { collect, deadline } from './node.mjs'

deadline(60_000)
const [url, root, out] = process.argv.slice(2)
const kubo = create({ url })
const cid = CID.parse(root)

await writeFile(`${out}/block`, await kubo.block.get(cid))
await writeFile(`${out}/cat`, await collect(kubo.cat(cid)))
await writeFile(`${out}/part`, await collect(kubo.cat(cid, { offset: 70000, length: 300000 })))
await writeFile(`${out}/car`, await collect(kubo.dag.export(cid)))
const stat = await kubo.block.stat(cid)
const id = await kubo.id()

async function failure (call) {
  try {
    await call()
    return null
  } catch (e) {
    return { name: e.name, status: e.response?.status ?? null, message: e.message }
  }
}
// A CID the node cannot have: the raw block of "absent".
const absent = CID.parse('bafkreic22obqjnjvykmh3pjemv6buenyqsme75qa3hzytxvq2ttdj7xhsi')
console.log(JSON.stringify({
  stat: { cid: stat.cid.toString(), size: stat.size },
  id: { id: id.id.toString(), addresses: id.addresses.map(String), agentVersion: id.agentVersion, publicKey: id.publicKey },
  bad: await failure(() => kubo.block.get('garbage')),
  missing: await failure(() => kubo.block.get(absent, { offline: true })),
}))
process.exit(0)
