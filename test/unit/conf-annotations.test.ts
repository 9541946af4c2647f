// Unit tests for conf/annotations.ts (ARCHITECTURE §5): the three annotation forms, interface naming, and errors
// that name the annotation key, the entry index and quote the entry.
import t from 'tap'
import { ConfError } from '../../conf/errors.js'
import {
  assignInterfaceNames,
  cidrProblem,
  parseEndpointAnnotation,
  parseLegacyAnnotation,
  parseV1Annotation,
  serviceRequestsFromAnnotations,
  type EndpointOffer,
  type ServiceRequest,
} from '../../conf/annotations.js'
import { isValidInterfaceName } from '../../conf/names.js'

const SIC = 'secure-intranet-connectivity'

const ok: Array<{ name: string; parse: (v: string) => unknown; value: string; want: Array<ServiceRequest | EndpointOffer> }> = [
  {
    name: 'legacy: the documented example',
    parse: parseLegacyAnnotation,
    value: `${SIC}/eth2?app=firewall`,
    want: [{ service: SIC, mechanism: 'kernel', labels: { app: 'firewall' }, entry: `${SIC}/eth2?app=firewall`, ifname: 'eth2' }],
  },
  {
    name: 'legacy: list with blanks, bare service, several labels, percent-encoding',
    parse: parseLegacyAnnotation,
    value: ' a , ,b?x=1&y=&k8s.io%2Fname=v%2E1, ',
    want: [
      { service: 'a', mechanism: 'kernel', labels: {}, entry: 'a' },
      { service: 'b', mechanism: 'kernel', labels: { x: '1', y: '', 'k8s.io/name': 'v.1' }, entry: 'b?x=1&y=&k8s.io%2Fname=v%2E1' },
    ],
  },
  { name: 'legacy: empty value', parse: parseLegacyAnnotation, value: '', want: [] },
  {
    name: 'v1: the documented example',
    parse: parseV1Annotation,
    value: `kernel://${SIC}/nsm-1?app=foo`,
    want: [{ service: SIC, mechanism: 'kernel', labels: { app: 'foo' }, entry: `kernel://${SIC}/nsm-1?app=foo`, ifname: 'nsm-1' }],
  },
  {
    name: 'v1: memif with domain, vfio bare, no scheme, upper-case scheme',
    parse: parseV1Annotation,
    value: 'memif://svc@my.domain/m0,vfio://svc2,svc3?a=b,KERNEL://svc4',
    want: [
      { service: 'svc', mechanism: 'memif', labels: {}, entry: 'memif://svc@my.domain/m0', ifname: 'm0', domain: 'my.domain' },
      { service: 'svc2', mechanism: 'vfio', labels: {}, entry: 'vfio://svc2' },
      { service: 'svc3', mechanism: 'kernel', labels: { a: 'b' }, entry: 'svc3?a=b' },
      { service: 'svc4', mechanism: 'kernel', labels: {}, entry: 'KERNEL://svc4' },
    ],
  },
  {
    name: 'endpoint: the documented example',
    parse: parseEndpointAnnotation,
    value: `${SIC}?app=firewall&cidr=172.16.1.0/24`,
    want: [{ service: SIC, labels: { app: 'firewall' }, cidrs: ['172.16.1.0/24'], routes: [], entry: `${SIC}?app=firewall&cidr=172.16.1.0/24` }],
  },
  {
    name: 'endpoint: dual-stack pools, offered routes, two services',
    parse: parseEndpointAnnotation,
    value: 'a?app=vpn&cidr=172.16.2.0/24&cidr=fd00::%2F64&route=10.0.0.0/8,b',
    want: [
      { service: 'a', labels: { app: 'vpn' }, cidrs: ['172.16.2.0/24', 'fd00::/64'], routes: ['10.0.0.0/8'], entry: 'a?app=vpn&cidr=172.16.2.0/24&cidr=fd00::%2F64&route=10.0.0.0/8' },
      { service: 'b', labels: {}, cidrs: [], routes: [], entry: 'b' },
    ],
  },
]

for (const c of ok) {
  t.test(`ok: ${c.name}`, async (t) => {
    t.strictSame(c.parse(c.value), c.want)
  })
}

const bad: Array<{ name: string; parse: (v: string) => unknown; value: string; path: string; msg: RegExp }> = [
  { name: 'legacy: interface name too long', parse: parseLegacyAnnotation, value: 'ok,svc/this-is-too-long0', path: 'ns.networkservicemesh.io[1]', msg: /"svc\/this-is-too-long0": interface name this-is-too-long0 is longer than 15 characters/ },
  { name: 'legacy: empty interface name', parse: parseLegacyAnnotation, value: 'svc/', path: 'ns.networkservicemesh.io[0]', msg: /invalid interface name ""/ },
  { name: 'legacy: interface name with colon', parse: parseLegacyAnnotation, value: 'svc/eth0:1', path: 'ns.networkservicemesh.io[0]', msg: /invalid interface name "eth0:1"/ },
  { name: 'legacy: interface name ..', parse: parseLegacyAnnotation, value: 'svc/..', path: 'ns.networkservicemesh.io[0]', msg: /invalid interface name/ },
  { name: 'legacy: two slashes', parse: parseLegacyAnnotation, value: 'svc/a/b', path: 'ns.networkservicemesh.io[0]', msg: /expected service\[\/ifname\]/ },
  { name: 'legacy: missing service', parse: parseLegacyAnnotation, value: '/eth1', path: 'ns.networkservicemesh.io[0]', msg: /missing service name/ },
  { name: 'legacy: bad service', parse: parseLegacyAnnotation, value: 'My_Service', path: 'ns.networkservicemesh.io[0]', msg: /invalid service name "My_Service"/ },
  { name: 'legacy: label without value', parse: parseLegacyAnnotation, value: 'svc?app', path: 'ns.networkservicemesh.io[0]', msg: /label "app" has no value/ },
  { name: 'legacy: duplicate label', parse: parseLegacyAnnotation, value: 'svc?a=1&a=2', path: 'ns.networkservicemesh.io[0]', msg: /label a is given twice/ },
  { name: 'legacy: bad label key', parse: parseLegacyAnnotation, value: 'svc?=x', path: 'ns.networkservicemesh.io[0]', msg: /invalid label key ""/ },
  { name: 'legacy: bad label value', parse: parseLegacyAnnotation, value: 'svc?a=b c', path: 'ns.networkservicemesh.io[0]', msg: /invalid value "b c" for label a/ },
  { name: 'legacy: bad percent-encoding', parse: parseLegacyAnnotation, value: 'svc?a=%zz', path: 'ns.networkservicemesh.io[0]', msg: /bad percent-encoding/ },
  { name: 'v1: unknown mechanism', parse: parseV1Annotation, value: 'kernel://a,vxlan://b', path: 'networkservicemesh.io[1]', msg: /"vxlan:\/\/b": unsupported mechanism vxlan:\/\/ \(expected kernel, memif, vfio\)/ },
  { name: 'v1: trailing slash', parse: parseV1Annotation, value: 'kernel://svc4/', path: 'networkservicemesh.io[0]', msg: /invalid interface name ""/ },
  { name: 'v1: malformed scheme', parse: parseV1Annotation, value: 'kernel:/svc', path: 'networkservicemesh.io[0]', msg: /expected mech:\/\/service/ },
  { name: 'v1: long interface', parse: parseV1Annotation, value: 'kernel://svc/sixteen-chars-xx', path: 'networkservicemesh.io[0]', msg: /longer than 15/ },
  { name: 'v1: bad domain', parse: parseV1Annotation, value: 'kernel://svc@/if', path: 'networkservicemesh.io[0]', msg: /invalid domain ""/ },
  { name: 'v1: path too deep', parse: parseV1Annotation, value: 'memif://svc/a/b', path: 'networkservicemesh.io[0]', msg: /expected mech:\/\/service/ },
  { name: 'endpoint: bad cidr', parse: parseEndpointAnnotation, value: 'svc?cidr=172.16.1.0', path: 'endpoint.networkservicemesh.io[0]', msg: /cidr "172.16.1.0": expected address\/prefix-length/ },
  { name: 'endpoint: cidr prefix too long', parse: parseEndpointAnnotation, value: 'svc?cidr=10.0.0.0/33', path: 'endpoint.networkservicemesh.io[0]', msg: /prefix length must be 0–32/ },
  { name: 'endpoint: bad route', parse: parseEndpointAnnotation, value: 'svc?route=10.0.0.300/8', path: 'endpoint.networkservicemesh.io[0]', msg: /route "10.0.0.300\/8": not an IP address/ },
  { name: 'endpoint: interface name not allowed', parse: parseEndpointAnnotation, value: 'svc/eth0?cidr=10.0.0.0/24', path: 'endpoint.networkservicemesh.io[0]', msg: /no interface name/ },
  { name: 'endpoint: service twice', parse: parseEndpointAnnotation, value: 'svc,svc?a=b', path: 'endpoint.networkservicemesh.io[1]', msg: /offered twice/ },
]

for (const c of bad) {
  t.test(`error: ${c.name}`, async (t) => {
    const err = t.throws(() => c.parse(c.value)) as unknown
    t.ok(err instanceof ConfError, 'ConfError')
    if (err instanceof ConfError) {
      t.equal(err.code, 'ANNOTATION_INVALID')
      t.equal(err.path, c.path)
      t.match(err.message, c.msg)
      t.ok(err.message.startsWith(`${c.path}: "`), 'message names key[index] then quotes the entry')
    }
  })
}

t.test('serviceRequestsFromAnnotations: v1 then legacy; duplicate interfaces rejected', async (t) => {
  const reqs = serviceRequestsFromAnnotations({ 'networkservicemesh.io': 'memif://a/m0', 'ns.networkservicemesh.io': 'b/eth2,c', other: 'x' })
  t.strictSame(reqs.map((r) => [r.service, r.mechanism, r.ifname]), [['a', 'memif', 'm0'], ['b', 'kernel', 'eth2'], ['c', 'kernel', undefined]])
  t.strictSame(serviceRequestsFromAnnotations({}), [])
  t.throws(() => serviceRequestsFromAnnotations({ 'networkservicemesh.io': 'kernel://a/eth2', 'ns.networkservicemesh.io': 'x,b/eth2' }), {
    code: 'ANNOTATION_INVALID',
    path: 'ns.networkservicemesh.io[1]',
    message: /"b\/eth2": interface eth2 is requested twice/,
  })
})

t.test('assignInterfaceNames: nsm-1, nsm-2, ... skipping taken names', async (t) => {
  const reqs = parseLegacyAnnotation('a,b/nsm-2,c,d/eth0')
  t.strictSame(assignInterfaceNames(reqs).map((r) => r.ifname), ['nsm-1', 'nsm-2', 'nsm-3', 'eth0'])
  t.strictSame(assignInterfaceNames(parseLegacyAnnotation('a,b/net1'), 'net').map((r) => r.ifname), ['net2', 'net1'])
  t.throws(() => assignInterfaceNames(parseLegacyAnnotation('a'), 'a-prefix-too-long'), { code: 'ANNOTATION_INVALID' })
})

t.test('interface names and CIDRs', async (t) => {
  const names: Array<[string, boolean]> = [['eth0', true], ['nsm-1', true], ['a'.repeat(15), true], ['a'.repeat(16), false], ['', false], ['.', false], ['..', false], ['a/b', false], ['a:b', false], ['a b', false], ['é', false]]
  for (const [n, want] of names) t.equal(isValidInterfaceName(n), want, JSON.stringify(n))
  const cidrs: Array<[string, string | undefined]> = [['10.0.0.0/8', undefined], ['::/0', undefined], ['fd00::1/128', undefined], ['fd00::/129', 'prefix length must be 0–128'], ['fe80::1%eth0/64', 'zone indexes are not allowed'], ['1.2.3.4/', 'prefix length must be 0–32'], ['1.2.3.4/-1', 'prefix length must be 0–32'], ['x/8', 'not an IP address']]
  for (const [c, want] of cidrs) t.equal(cidrProblem(c), want, c)
})

t.test('conf/annotations.ts stays dependency-free (bundled into the CNI plugin)', async (t) => {
  const { readFileSync } = await import('node:fs')
  const read = (f: string): string => readFileSync(new URL(`../../${f}`, import.meta.url), 'utf8')
  // Type-only imports are erased from the bundle: they do not count.
  const importsOf = (src: string): string[] => [...src.matchAll(/^import (?!type ).* from '([^']+)'/gm)].flatMap((m) => (m[1] === undefined ? [] : [m[1]]))
  const src = ['conf/annotations.ts', 'conf/names.ts', 'conf/errors.ts'].map(read).join('\n')
  // The address codec is shared with ipam/ and imports nothing itself; node built-ins are not allowed either
  // (node:net alone cost the plugin ~4 ms per exec).
  t.strictSame(importsOf(src).filter((i) => !['./errors.js', './names.js', '../ipam/range/ip.js'].includes(i)), [])
  t.strictSame(importsOf(read('ipam/range/ip.ts')), [], 'ipam/range/ip.ts imports nothing (but types)')
})
