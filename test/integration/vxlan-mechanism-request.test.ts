// The VXLAN mechanism's (agent/mechanisms/vxlan/) negotiation and record, nothing built: the request
// parameters (NSM keys built, parsed, each bad one refused by field), the MTU arithmetic, plan and
// parseRequest on a two-node test bed (test/lib/vxlan-bed.ts: a foreign local address refused, underlay
// addresses compared in canonical form), and the record's VXLAN part through the journal form.
// The datapath against a real kernel: vxlan-mechanism.test.ts.
import t from 'tap'
import { AgentError } from '../../agent/errors'
import { decodeDatapathRecord, sameDatapath } from '../../agent/mechanisms/record'
import { completeVxlanParameters, parseVxlanParameters, vxlanMechanism, vxlanMtu, vxlanRequestedMechanism } from '../../agent/mechanisms/vxlan/index'
import type { Connection } from '../../proto/gen/networkservice/connection'
import { connection, pair, twoNodes, vx } from '../lib/vxlan-bed'

t.test('request parameters: NSM keys built and parsed, each bad one named', async (t) => {
  const m = vxlanRequestedMechanism({ srcIp: '10.1.0.1', dstIp: '10.1.0.2', vni: 4242, name: 'nsm0' })
  t.same(m, { cls: 'REMOTE', type: 'VXLAN', parameters: { src_ip: '10.1.0.1', dst_ip: '10.1.0.2', vni: '4242', name: 'nsm0' } })
  t.same(completeVxlanParameters(m.parameters, 'mp[0]'), { name: 'nsm0', srcIp: '10.1.0.1', dstIp: '10.1.0.2', vni: 4242 })
  t.same(parseVxlanParameters({ name: 'nsm0', src_ip: 'FD00::0001' }, 'mp[0]'), { name: 'nsm0', srcIp: 'fd00::1' }, 'partial (the client proposes), canonical addresses')
  const bad: Array<[Record<string, string>, string, RegExp]> = [
    [{ ...m.parameters, src_ip: '10.1.0' }, 'mp[0].parameters.src_ip', /is not an IP address/],
    [{ ...m.parameters, dst_ip: 'fd00::2' }, 'mp[0].parameters.dst_ip', /both ends of a VXLAN tunnel use one family/],
    [{ ...m.parameters, dst_ip: '239.1.1.1' }, 'mp[0].parameters.dst_ip', /not a unicast address/],
    [{ ...m.parameters, src_ip: '0.0.0.0' }, 'mp[0].parameters.src_ip', /not a unicast address/],
    [{ ...m.parameters, vni: '0' }, 'mp[0].parameters.vni', /out of the VNI range 1\.\.16777215/],
    [{ ...m.parameters, vni: '16777216' }, 'mp[0].parameters.vni', /out of the VNI range/],
    [{ ...m.parameters, vni: '-1' }, 'mp[0].parameters.vni', /is not a VNI/],
    [{ ...m.parameters, vni: '0x10' }, 'mp[0].parameters.vni', /is not a VNI/],
    [{ ...m.parameters, name: 'a-name-far-too-long' }, 'mp[0].parameters.name', /longer than 15 bytes/],
  ]
  for (const [params, field, message] of bad) {
    t.throws(() => completeVxlanParameters(params, 'mp[0]'), { name: 'AgentError', code: 'INVALID_ARGUMENT', field, message }, field)
  }
  t.throws(() => completeVxlanParameters({ name: 'nsm0', src_ip: '10.1.0.1' }, 'mp[0]'), { field: 'mp[0].parameters.dst_ip', message: /is required/ })
  t.equal(vxlanMtu(1500, 4), 1450)
  t.equal(vxlanMtu(1500, 6), 1430)
  t.throws(() => vxlanMtu(100, 4), AgentError)
})

t.test('plan and parseRequest: the half from the negotiated mechanism; a foreign local address refused', async (t) => {
  const f = twoNodes(t)
  const c = connection('p1', { srcIp: f.a.node.underlay, dstIp: f.b.node.underlay, vni: 9, name: 'nsm0' })
  t.throws(() => f.b.mechanism.plan({ connection: c, client: { netns: '/var/run/netns/x', ifname: 'nsm0' }, endpoint: { name: 'fw', netns: '', local: false } }), { code: 'INVALID_ARGUMENT', field: 'connection.mechanism.parameters.src_ip', message: /is not this node's underlay address/ })
  t.throws(() => f.a.mechanism.plan({ connection: { ...c, mechanism: undefined }, client: { netns: '/var/run/netns/x', ifname: 'nsm0' }, endpoint: { name: 'fw', netns: '', local: false } }), { code: 'INVALID_ARGUMENT' })
  t.same(f.b.mechanism.parseRequest(c.mechanism as NonNullable<Connection['mechanism']>, 'mechanism_preferences[0]'), { netns: '', ifname: 'nsm0' })
  t.throws(() => f.b.mechanism.parseRequest({ cls: 'REMOTE', type: 'VXLAN', parameters: { name: 'nsm0' } }, 'mechanism_preferences[0]'), { field: 'mechanism_preferences[0].parameters.src_ip', message: /is required/ })
  const upper = vxlanMechanism({ sessions: f.a.sessions, underlay: [f.a.node.underlay6.toUpperCase()] })
  const c6 = connection('p2', { srcIp: f.a.node.underlay6, dstIp: f.b.node.underlay6, vni: 9, name: 'nsm0' })
  t.match(upper.plan({ connection: c6, client: { netns: '/var/run/netns/x', ifname: 'nsm0' }, endpoint: { name: 'fw', netns: '', local: false } }), { local: f.a.node.underlay6, mtu: 1430 }, 'underlay addresses compared in canonical form')
})

t.test('record: a VXLAN part round-trips through the journal form; a malformed one is refused; KERNEL as before', async (t) => {
  const f = twoNodes(t)
  const p = pair(t, f, { id: 'rec-1' })
  const back = decodeDatapathRecord(JSON.parse(JSON.stringify(p.client)))
  t.same(back, p.client)
  t.ok(back !== undefined && sameDatapath(back, p.client))
  t.notOk(sameDatapath(p.client, { ...p.client, mechanism: { ...vx(p.client), vni: vx(p.client).vni + 1 } }), 'another VNI is another datapath')
  for (const bad of [{ vni: 0 }, { vni: 1 << 24 }, { side: 'middle' }, { local: 'x' }, { netns: '' }, { mtu: '1450' }]) {
    t.equal(decodeDatapathRecord({ ...p.client, mechanism: { ...vx(p.client), ...bad } }), undefined, JSON.stringify(bad))
  }
  const kernel = { ...p.client, mechanism: { type: 'KERNEL', endpointNetns: '/var/run/netns/fw', endpointIfname: 'nsm-0123456789' } }
  t.equal(decodeDatapathRecord(kernel), kernel, 'a KERNEL record is read as is')
})
