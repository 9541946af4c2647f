// Realistic values of each kind of the store contract (agent/store/kv.ts), as the registry and IPAM will
// store them: what the conformance suite (kv-conformance.ts) and the stores' own tests write.
import type { KvKind } from '../../agent/store/kv.js'

// Realistic values of each kind, as the registry and IPAM will store them; `n` varies a field.
export function sampleValue(kind: KvKind, name: string, n = 1): Record<string, unknown> {
  switch (kind) {
    case 'services':
      return {
        name,
        payload: 'ETHERNET',
        matches: n === 1 ? [] : [{ sourceSelector: { app: 'firewall' }, routes: [{ destinationSelector: { app: `vpn-gateway-${n}` } }] }],
      }
    case 'endpoints':
      return {
        endpoint: { name, networkServiceNames: ['svc-a'], url: 'file:///var/run/netns/x', expirationTime: `${2026 + n}-01-01T00:00:00Z` },
        extension: { endpointName: name, netnsPath: '/var/run/netns/x', pools: ['10.0.0.0/24'] },
      }
    case 'claims':
      return { pool: '10.0.0.0/24', address: '10.0.0.2', connectionId: `c${n}`, node: 'n1' }
    case 'nodes':
      return { name, underlayAddress: '192.0.2.1', peerUrl: 'tcp://192.0.2.1:5002', lastSeen: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString() }
  }
}
