// nsm-ipam's CNI commands over the subnet-range allocator and the file store.
//
// ADD    one address per range set (requested ones honoured), fails if the attachment already holds any.
// DEL    releases what (container, ifname) holds; succeeds when there is nothing (idempotent).
// CHECK  the attachment still holds one address per range set, and prevResult lists them.
// GC     releases every reservation whose (containerID, ifname) is not in cni.dev/valid-attachments
//        (null or absent: the empty list, as the reference plugins read it, so everything is released).
// STATUS 50 when the store is unusable or a range set has no free address.
// Configuration is validated before the store is opened, so bad input changes nothing on disk.
import { CniCode, CniError, type CallContext, type CniResult, type PluginHandlers } from '../protocol/index'
import { allocate, allocationCidr, exhaustedSets, gc, ownerReservations, placeRequested, release } from '../../ipam/range/allocator'
import { IpamError, type IpamErrorCode } from '../../ipam/range/errors'
import { formatIp, parseCidr, parseIp } from '../../ipam/range/ip'
import { FileStore } from '../../ipam/store/file'
import { KNOWN_CNI_ARGS, parseIpamConfig, type IpamConfig } from './config'

const CODE: Record<IpamErrorCode, number> = {
  INVALID_RANGE: CniCode.INVALID_CONFIG,
  ADDRESS_OUTSIDE_RANGES: CniCode.INVALID_CONFIG,
  POOL_EXHAUSTED: CniCode.POOL_EXHAUSTED,
  ADDRESS_UNAVAILABLE: CniCode.ADDRESS_UNAVAILABLE,
  ATTACHMENT_EXISTS: CniCode.ALREADY_ATTACHED,
  STORE: CniCode.STORE_FAILURE,
}

/** Maps allocator/store errors to CNI errors once; keeps the original as cause. */
function toCni(err: unknown): CniError {
  if (err instanceof IpamError) return new CniError(CODE[err.code], err.message, { cause: err })
  return CniError.from(err)
}

async function withStore<T>(cfg: IpamConfig, fn: (s: FileStore) => Promise<T>): Promise<T> {
  let store: FileStore | undefined
  try {
    store = FileStore.open(cfg.dataDir, cfg.network)
    return await fn(store)
  } catch (err) {
    throw toCni(err)
  } finally {
    await store?.close()
  }
}

/** Like withStore, but a store that does not exist yet is not created: `absent` is the answer. */
async function withExistingStore<T>(cfg: IpamConfig, absent: T, fn: (s: FileStore) => Promise<T>): Promise<T> {
  let store: FileStore | undefined
  try {
    store = FileStore.openExisting(cfg.dataDir, cfg.network)
    return store === undefined ? absent : await fn(store)
  } catch (err) {
    throw toCni(err)
  } finally {
    await store?.close()
  }
}

const owner = (ctx: CallContext) => ({ containerID: ctx.env.containerId, ifname: ctx.env.ifname })

async function add(ctx: CallContext): Promise<CniResult> {
  const cfg = parseIpamConfig(ctx)
  try {
    placeRequested(cfg.rangeSets, cfg.requested) // refuse a bad request before the store is created
  } catch (err) {
    throw toCni(err)
  }
  const allocs = await withStore(cfg, (s) => allocate(s, cfg.rangeSets, owner(ctx), cfg.requested))
  const result: CniResult = {
    ips: allocs.map((a) => ({ address: allocationCidr(a), gateway: formatIp(a.range.gateway) })),
    routes: cfg.routes,
  }
  if (cfg.dns !== undefined) result.dns = cfg.dns
  return result
}

async function del(ctx: CallContext): Promise<void> {
  const cfg = parseIpamConfig(ctx)
  await withExistingStore(cfg, [], (s) => release(s, owner(ctx)))
}

async function check(ctx: CallContext): Promise<void> {
  const cfg = parseIpamConfig(ctx)
  const held = await withExistingStore(cfg, [], (s) => ownerReservations(s, owner(ctx)))
  if (held.length === 0) {
    throw new CniError(CniCode.UNKNOWN_CONTAINER, `container ${ctx.env.containerId} interface ${ctx.env.ifname} holds no address in network ${cfg.network}`)
  }
  for (let i = 0; i < cfg.rangeSets.length; i++) {
    if (!held.some((r) => r.rangeSet === i)) {
      throw new CniError(CniCode.RESERVATION_MISMATCH, `container ${ctx.env.containerId} interface ${ctx.env.ifname} holds no address in range set ${i}`)
    }
  }
  const prev = ctx.conf.prevResult
  if (prev !== undefined) {
    const listed = new Set((prev.ips ?? []).map((ip) => {
      const c = parseCidr(ip.address)
      return c === undefined ? ip.address : formatIp(c.ip)
    }))
    for (const r of held) {
      const ip = parseIp(r.ip)
      if (ip !== undefined && !listed.has(formatIp(ip))) {
        throw new CniError(CniCode.RESERVATION_MISMATCH, `prevResult.ips does not list ${r.ip}, reserved for container ${ctx.env.containerId} interface ${ctx.env.ifname}`)
      }
    }
  }
}

async function gcCmd(ctx: CallContext): Promise<void> {
  const valid = ctx.conf.validAttachments
  const cfg = parseIpamConfig(ctx)
  await withExistingStore(cfg, undefined, async (s) => {
    await gc(s, valid)
    s.sweep()
  })
}

async function status(ctx: CallContext): Promise<void> {
  const cfg = parseIpamConfig(ctx)
  let full: number[]
  try {
    full = await withStore(cfg, async (s) => {
      await s.health()
      return exhaustedSets(s, cfg.rangeSets)
    })
  } catch (err) {
    const e = toCni(err)
    throw new CniError(CniCode.NOT_AVAILABLE, `store unusable: ${e.message}`, { cause: err })
  }
  if (full.length > 0) {
    throw new CniError(CniCode.NOT_AVAILABLE, `address pool exhausted: no free address in range set${full.length > 1 ? 's' : ''} ${full.join(', ')} of network ${cfg.network}`)
  }
}

export const nsmIpamHandlers: PluginHandlers = {
  add,
  del,
  check,
  gc: gcCmd,
  status,
  knownArgs: KNOWN_CNI_ARGS,
  about: 'CNI nsm-ipam plugin (nsm-cni): subnet ranges, host-local compatible, with GC and STATUS',
}
