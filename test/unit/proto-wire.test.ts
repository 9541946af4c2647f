// Wire compatibility of proto/gen with NSM v1, message by message: protobufjs builds NSM's types from an
// independent transcription of upstream (proto/testdata/nsm-v1-upstream.json), fills every field with a
// non-default value, encodes; our generated codec decodes and re-encodes; protobufjs decodes that and must
// get the same object back. A wrong field number, type or enum value in our .proto loses or changes a
// field and fails here. Method paths are compared too.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import protobuf from 'protobufjs'
import * as connection from '../../proto/gen/networkservice/connection.js'
import * as connectioncontext from '../../proto/gen/networkservice/connectioncontext.js'
import * as networkservice from '../../proto/gen/networkservice/networkservice.js'
import * as registry from '../../proto/gen/registry/registry.js'

const ROOT = resolve(import.meta.dirname, '../..')
const upstream = protobuf.Root.fromJSON(JSON.parse(readFileSync(resolve(ROOT, 'proto/testdata/nsm-v1-upstream.json'), 'utf8')) as protobuf.INamespace)
upstream.resolveAll()

interface Codec {
  encode(m: unknown): { finish(): Uint8Array }
  decode(b: Uint8Array): unknown
}
const OURS: Record<string, Record<string, unknown>> = { connection, connectioncontext, networkservice, registry }

function ourCodec(fullName: string): Codec | undefined {
  const [pkg = '', ...rest] = fullName.replace(/^\./, '').split('.')
  const mod = OURS[pkg]
  return mod?.[rest.join('_')] as Codec | undefined
}

/** A value for every field: non-default scalars, two-element lists, one-entry maps, nested messages. */
function fill(type: protobuf.Type, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const field of type.fieldsArray) {
    const one = (n: number): unknown => {
      if (field.resolvedType instanceof protobuf.Type) return depth > 3 ? {} : fill(field.resolvedType, depth + 1)
      if (field.resolvedType instanceof protobuf.Enum) {
        const values = Object.values(field.resolvedType.values)
        return values[values.length - 1]
      }
      switch (field.type) {
        case 'string':
          return `${field.name}-${n}`
        case 'bool':
          return true
        case 'int32':
          return -3 - n
        case 'int64':
          return 1_700_000_000 + n
        default:
          return 7 + n
      }
    }
    if (field.map) out[field.name] = { [`k-${field.name}`]: one(0) }
    else if (field.repeated) out[field.name] = [one(0), one(1)]
    else out[field.name] = one(0)
  }
  return out
}

const messages: protobuf.Type[] = []
const walk = (ns: protobuf.NamespaceBase): void => {
  for (const n of ns.nestedArray) {
    if (n instanceof protobuf.Type) messages.push(n)
    if (n instanceof protobuf.Namespace || n instanceof protobuf.Type) walk(n)
  }
}
walk(upstream)

const toObject = (type: protobuf.Type, bytes: Uint8Array): unknown => type.toObject(type.decode(bytes), { longs: Number, enums: Number, defaults: false })

for (const type of messages.filter((m) => !m.fullName.startsWith('.google.'))) {
  t.test(`${type.fullName}: same bytes mean the same thing`, async (t) => {
    const ours = ourCodec(type.fullName)
    t.ok(ours, `proto/gen has ${type.fullName}`)
    if (ours === undefined) return
    const original = type.fromObject(fill(type))
    const bytes = type.encode(original).finish()
    const roundTripped = ours.encode(ours.decode(bytes)).finish()
    t.same(toObject(type, roundTripped), toObject(type, bytes), 'every field survives our decode + encode')
  })
}

t.test('method paths and streaming match upstream', async (t) => {
  const ourServices: Record<string, { fullName: string; methods: Record<string, { name: string; responseStream: boolean }> }> = {
    'networkservice.NetworkService': networkservice.NetworkServiceDefinition,
    'connection.MonitorConnection': connection.MonitorConnectionDefinition,
    'registry.NetworkServiceRegistry': registry.NetworkServiceRegistryDefinition,
    'registry.NetworkServiceEndpointRegistry': registry.NetworkServiceEndpointRegistryDefinition,
  }
  const upstreamPaths: string[] = []
  const walkServices = (ns: protobuf.NamespaceBase): void => {
    for (const n of ns.nestedArray) {
      if (n instanceof protobuf.Service) {
        for (const m of n.methodsArray) upstreamPaths.push(`/${n.fullName.slice(1)}/${m.name}${m.responseStream === true ? ' (stream)' : ''}`)
      } else if (n instanceof protobuf.Namespace) walkServices(n)
    }
  }
  walkServices(upstream)
  const ourPaths = Object.values(ourServices).flatMap((s) => Object.values(s.methods).map((m) => `/${s.fullName}/${m.name}${m.responseStream ? ' (stream)' : ''}`))
  t.same(ourPaths.sort(), upstreamPaths.sort())
})

t.test('MonitorScopeSelector.network_services is field 2 on the wire (tag 0x12), as upstream has it', async (t) => {
  const { MonitorScopeSelector } = connection
  const bytes = MonitorScopeSelector.encode({ pathSegments: [], networkServices: ['svc-a', 'b'] }).finish()
  // (2 << 3) | 2 = 0x12: field 2, length-delimited; one record per string.
  t.same([...bytes], [0x12, 5, ...Buffer.from('svc-a'), 0x12, 1, ...Buffer.from('b')], 'the exact bytes')
  // Upstream's current message: path_segments = 1 (from the transcription) and network_services = 2, added
  // here in a copy of it when the transcription predates the field.
  const root = protobuf.Root.fromJSON(JSON.parse(readFileSync(resolve(ROOT, 'proto/testdata/nsm-v1-upstream.json'), 'utf8')) as protobuf.INamespace)
  const current = root.lookupType('connection.MonitorScopeSelector')
  if (current.fields.network_services === undefined) current.add(new protobuf.Field('network_services', 2, 'string', 'repeated'))
  root.resolveAll()
  t.equal(current.fields.network_services?.id, 2)
  t.same(current.toObject(current.decode(bytes)), { network_services: ['svc-a', 'b'] }, 'upstream reads our bytes')
  const theirs = current.encode(current.fromObject({ path_segments: [{ name: 'nsc-1', id: 'seg-1' }], network_services: ['svc-x'] })).finish()
  t.same(MonitorScopeSelector.decode(theirs), { pathSegments: [{ name: 'nsc-1', id: 'seg-1', token: '', expires: undefined, metrics: {} }], networkServices: ['svc-x'] }, 'we read upstream bytes, both fields')
  const both = MonitorScopeSelector.encode({ pathSegments: [{ name: 'nsc-1', id: '', token: '', expires: undefined, metrics: {} }], networkServices: ['svc-x'] }).finish()
  t.same(current.toObject(current.decode(both)), { path_segments: [{ name: 'nsc-1' }], network_services: ['svc-x'] }, 'and upstream reads both of ours')
})
