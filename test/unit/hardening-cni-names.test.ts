// Endpoint names of CNI-registered endpoint pods (conf/endpoint-names.ts) are injective: a container id that
// had to be changed (upper case, '_', '.', too long) never maps to the name of an id that did not.
import t from 'tap'
import { endpointKey, endpointName, isContainerEndpoint } from '../../conf/endpoint-names'

t.test('relUPPER and relupper-<its old hash> get different names', async (t) => {
  const changed = 'relUPPER'
  t.not(endpointKey(changed), endpointKey('relupper-f8c91628'), 'the collision from the hardening issue')
  // Whatever the changed id's key is, the id spelled exactly as that key's tail is another name.
  const tail = endpointKey(changed).replace(/^[a-z]+-/, '')
  t.not(endpointKey(tail), endpointKey(changed), `an unchanged id ${tail} is not ${changed}`)
  t.notOk(isContainerEndpoint(endpointName('svc', tail), changed))
  t.notOk(isContainerEndpoint(endpointName('svc', changed), tail))
  t.ok(isContainerEndpoint(endpointName('svc', changed), changed))
})

t.test('no two ids of a varied set share a key', async (t) => {
  const ids = ['abc', 'ABC', 'a_b', 'a.b', 'a-b', 'a-b-', 'a--b', 'Abc_1.x', 'abc-1-x', 'x'.repeat(100), 'x'.repeat(101), 'X'.repeat(101), 'relUPPER', 'relupper']
  for (const id of [...ids]) ids.push(endpointKey(id).replace(/^[a-z]+-/, ''))
  const seen = new Map<string, string>()
  for (const id of ids) {
    const key = endpointKey(id)
    const other = seen.get(key)
    if (other !== undefined && other !== id) t.fail(`${id} and ${other} share ${key}`)
    seen.set(key, id)
    t.match(key, /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, `${id}: a DNS label`)
  }
  t.equal(endpointKey('abc123'), 'cni-abc123', 'an id that needs no change keeps its plain name')
})
