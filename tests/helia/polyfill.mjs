// Node 20 lacks Promise.withResolvers (Node 22 has it); js-libp2p 3 and Helia 7 use it.
// Loaded with `node --import ./polyfill.mjs`.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
