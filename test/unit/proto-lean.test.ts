// The CNI plugin must stay lean (no @grpc/grpc-js, no native addons): bundling what it imports from us —
// proto/gen's codecs and service definitions, agent/client, the error codes and attachment metadata keys —
// must pull in no package but @bufbuild/protobuf. Fails when someone adds a grpc-js import to those files.
import t from 'tap'
import { build } from 'esbuild'
import { resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../..')

t.test('plugin-side imports bundle without grpc-js', async (t) => {
  const entry = `
    export { AgentClient, GrpcCallError } from './agent/client/grpc-http2.js'
    export { ATTACHMENT_METADATA } from './agent/server/handler.js'
    export { cniCodeFor, parseStatusMessage } from './agent/server/agent-error.js'
    export * from './proto/gen/networkservice/networkservice.js'
    export * from './proto/gen/networkservice/connection.js'
    export * from './proto/gen/networkservice/connectioncontext.js'
    export * from './proto/gen/registry/registry.js'
    export { AgentDefinition, CheckRequest, GCRequest, PodInfoRequest } from './proto/gen/nsmcni/nsmcni.js'
  `
  const result = await build({
    stdin: { contents: entry, resolveDir: ROOT, loader: 'ts' },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    write: false,
    metafile: true,
    logLevel: 'silent',
  })
  const packages = new Set(
    Object.keys(result.metafile.inputs)
      .filter((p) => p.includes('node_modules/'))
      .map((p) => p.split('node_modules/')[1]?.split('/').slice(0, 2).join('/') ?? p),
  )
  t.same([...packages], ['@bufbuild/protobuf'], 'only the protobuf wire runtime')
  const ours = Object.keys(result.metafile.inputs).filter((p) => !p.includes('node_modules/'))
  t.notOk(ours.some((p) => p.includes('agent/connections/') || p.includes('agent/registry/')), 'no agent internals')
})
