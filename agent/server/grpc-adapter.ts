// Adapts ts-proto generic service definitions (proto/gen, no grpc-js import) to grpc-js service
// definitions, so the .proto files stay the one source of method paths and codecs for both the agent
// (grpc-js) and the lean clients (agent/client/, node:http2).
import type { ServiceDefinition, MethodDefinition } from '@grpc/grpc-js'
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire'

export interface MessageCodec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter
  decode(input: BinaryReader | Uint8Array, length?: number): T
}

export interface GenericMethod<Req, Res> {
  readonly name: string
  readonly requestType: MessageCodec<Req>
  readonly requestStream: boolean
  readonly responseType: MessageCodec<Res>
  readonly responseStream: boolean
}

export interface GenericService {
  readonly name: string
  readonly fullName: string
  // Method request/response types differ per method; any is the only sound element type here.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly methods: Readonly<Record<string, GenericMethod<any, any>>>
}

/** The HTTP/2 path of a method: `/<package>.<Service>/<Method>`. */
export function methodPath(service: GenericService, method: GenericMethod<unknown, unknown>): string {
  return `/${service.fullName}/${method.name}`
}

/** A grpc-js ServiceDefinition for `server.addService`, keyed by the generated (camelCase) method keys. */
export function toGrpcService(service: GenericService): ServiceDefinition {
  const out: Record<string, MethodDefinition<unknown, unknown>> = {}
  for (const [key, m] of Object.entries(service.methods)) {
    out[key] = {
      path: methodPath(service, m),
      requestStream: m.requestStream,
      responseStream: m.responseStream,
      requestSerialize: (v: unknown) => Buffer.from(m.requestType.encode(v).finish()),
      requestDeserialize: (b: Buffer) => m.requestType.decode(b),
      responseSerialize: (v: unknown) => Buffer.from(m.responseType.encode(v).finish()),
      responseDeserialize: (b: Buffer) => m.responseType.decode(b),
      originalName: m.name,
    }
  }
  return out as ServiceDefinition
}
