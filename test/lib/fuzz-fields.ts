// The wrong values the CNI fuzz test (test/integration/hardening-fuzz.test.ts) puts into each field of a
// configuration on stdin, each with whether it certainly makes the call fail, and the means to place them:
// a dotted field path setter and a serializer that can carry nesting JSON.stringify would overflow on.
import { join } from 'node:path'
import { WEB } from '../integration/nsm-fixture'
import type { FuzzPaths } from './fuzz-paths'
import { IPAM_SUBNET } from './fuzz-inputs'

/** A field's wrong values: [value, the input is certainly invalid]. */
export type FieldValues = Record<string, Array<[unknown, boolean]>>

/** A JSON fragment placed verbatim into a configuration (deep nesting: JSON.stringify would overflow). */
export class Raw {
  constructor(readonly json: string) {}
}

export function serialize(conf: Record<string, unknown>): Buffer {
  const raws: string[] = []
  const text = JSON.stringify(conf, (_k, v: unknown) => {
    if (v instanceof Raw) {
      raws.push(v.json)
      return `\u0001RAW${raws.length - 1}\u0001`
    }
    return v
  })
  return Buffer.from(text.replace(/"\\u0001RAW(\d+)\\u0001"/g, (_m, i: string) => raws[Number(i)] ?? ''))
}

export function deep(depth: number, open = '[', close = ']', inner = '1'): string {
  return open.repeat(depth) + inner + close.repeat(depth)
}

export function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  if (path === 'cni.dev/valid-attachments') {
    obj[path] = value
    return
  }
  const parts = path.split('.')
  let cur = obj
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {}
    cur = cur[p] as Record<string, unknown>
  }
  const last = parts[parts.length - 1] as string
  if (path === 'ipam.ranges') delete cur.subnet
  cur[last] = value
}

/** Wrong values for any field, one of which a field may get at random besides its own. */
export const GENERIC: unknown[] = [null, 0, -1, 1.5, 1e300, true, '', 'x', [], [1], {}, { a: {} }]

/** The fields of every configuration, and those of nsm's and nsm-ipam's, with their wrong values. */
export function fieldMutations(agentSocket: string, paths: FuzzPaths): { common: FieldValues; nsm: FieldValues; ipam: FieldValues } {
  const { dataDir, fifo, plainDir, plainFile } = paths
  const commonFields: FieldValues = {
    cniVersion: [[1, true], [1.1, true], ['', true], ['1.1', true], ['9.9.9', true], ['0.1.0', true], ['x.y.z', true], ['1.1.0 ', true], [{}, true]],
    name: [['', true], [5, true], ['a/b', true], ['../x', true], [' ', true], ['x'.repeat(5000), false], ['ü', true], [null, true]],
    type: [[5, true], ['', true], [null, true]],
    args: [['x', true], [5, true], [[], true], [{ cni: 'x' }, true], [{ cni: { ips: 5, networkServices: 5 } }, true]],
    runtimeConfig: [['x', true], [[], true], [{ deviceID: 5, ips: 5 }, true]],
    prevResult: [[{ ips: [{ address: 'bad' }] }, false], [new Raw(deep(20_000, '{"interfaces":[', ']}', '{}')), false], ['x', true], [5, true], [[], true], [{ cniVersion: 5 }, false], [{ interfaces: 'x' }, false], [{ interfaces: [{ name: 5 }] }, false], [{ ips: [{ address: '10.0.0.1/24', interface: 99 }] }, false], [{ routes: [{ dst: 'x' }] }, false], [{ dns: 'x' }, false]],
    'cni.dev/valid-attachments': [['x', false], [5, false], [[1], false], [[{ containerID: 5, ifname: 'a' }], false], [[{}], false], [{}, false]],
    cniVersions: [['x', false], [[1], false]],
    capabilities: [['x', false]],
  }
  const nsmFields: FieldValues = {
    networkService: [[{}, true], [{ name: WEB }, true], [5, true], [[], true], [[WEB], true], ['', false], [' ', true], [`memif://${WEB}`, true], ['a,b', true], [`${WEB}/ifname-way-too-long`, true], [`${WEB}?bad key=v`, true], [`${WEB}?a=b&a=c`, false], ['kernel://', true], ['://x', true], ['x'.repeat(10_000), true], ['unknown-svc', true], [new Raw(deep(50_000)), true]],
    networkServices: [[5, true], [[1], true], [['', WEB], true], [`${WEB},,${WEB}`, false], [{}, true], [[WEB, WEB], false]],
    labels: [[{ 'bad key!': 'v' }, true], [[], true], ['x', true], [{ '': 'v' }, true], [{ k: 1 }, true], [{ k: null }, true], [{ k: 'v'.repeat(64) }, true], [{ 'a/b/c': 'x' }, true], [{ '-a': 'b' }, true], [{ k: 'bad value!' }, true], [{ ['x'.repeat(300)]: 'v' }, true], [JSON.parse('{"__proto__":{"polluted":"1"}}') as unknown, false], [{ constructor: 'x' }, false], [new Raw(deep(10_000, '{"a":', '}', '"v"')), true]],
    socket: [['agent.sock', true], [`${agentSocket}\u0000`, true], ['', false], [5, true], [[], true], ['/nonexistent/agent.sock', true], ['/dev/zero', true], [plainDir, true], [fifo, true], [plainFile, true], [`/${'a'.repeat(300)}`, true], [`${agentSocket}/..`, true]],
    agentSocket: [['/other/agent.sock', true], [5, true]],
    timeoutMs: [[-1, true], [0, true], [1.5, true], ['100', true], [1e12, true], [{}, true], [600_001, true], [-1e308, true]],
    deviceID: [[5, true], ['0000:00:01.0', true], ['', false]],
  }
  const ipamFields: FieldValues = {
    'ipam': [[null, true], ['x', true], [[], true], [5, true], [{}, true], [new Raw(deep(50_000)), true]],
    'ipam.type': [[5, false], ['', false], ['host-local', false]],
    'ipam.subnet': [['x', true], ['10.0.0.0/33', true], ['10.213.0.1/24', false], ['::/129', true], [5, true], ['', true], ['10.213.0.0/32', true], ['10.213.0.0/31', false], ['fe80::/64', false], [[IPAM_SUBNET], true]],
    'ipam.rangeStart': [['10.9.9.9', true], ['x', true], [5, true], ['10.213.0.250', false]],
    'ipam.rangeEnd': [['10.213.0.1', false], ['x', true], ['10.213.1.1', true]],
    'ipam.gateway': [['x', true], ['10.9.9.9', false], ['10.213.0.0', false], [5, true]],
    'ipam.ranges': [[[[]], true], [[[{ subnet: 5 }]], true], [[], false], ['x', true], [[[{ subnet: IPAM_SUBNET }, { subnet: '10.213.0.0/25' }]], true], [[[{ subnet: IPAM_SUBNET }], [{ subnet: IPAM_SUBNET }]], true], [new Raw(deep(40_000)), true]],
    'ipam.routes': [['x', true], [[{ dst: 'x' }], true], [[{ dst: '10.0.0.0/8', gw: '::1' }], true], [[{ dst: '10.0.0.0/8', mtu: -1 }], true], [[5], true], [[{}], true]],
    'ipam.dataDir': [['/proc/fuzz-nsm', true], ['relative/dir', true], ['', true], [5, true], ['/sys/fuzz-nsm', true], ['/dev/null', true], [plainFile, true], [join(dataDir, '..', 'escape'), false]],
    'ipam.resolvConf': [['/dev/zero', false], [fifo, false], ['/nonexistent', true], [plainDir, true], [5, true], ['/dev/null', false]],
    'ipam.unknownField': [['x', true]],
    'args.cni.ips': [['x', true], [['x'], true], [[5], true], [['10.99.0.1'], true], [['10.213.0.7', '10.213.0.7'], false]],
    'runtimeConfig.ips': [['x', true], [['x'], true], [['10.213.0.0/24'], false]],
    'runtimeConfig.ipRanges': [['x', true], [[[{ subnet: 'x' }]], true], [[5], true]],
  }
  return { common: commonFields, nsm: nsmFields, ipam: ipamFields }
}
