// Batched link deletion. Deleting a veth costs the kernel ~15 ms inside the sendmsg (RCU grace periods and
// a barrier, mostly after it released RTNL; ./aside.ts sends it from a pool thread so the event loop runs
// meanwhile): 16 Closes in a row cost 16 of them. The kernel deletes a whole device group in one
// RTM_DELLINK (IFLA_GROUP, unregister_netdevice_many: one grace period for all), so deletions that arrive
// while one batch runs are collected, tagged with a batch group (a cheap RTM_SETLINK), and deleted
// together, per namespace.
//
// Ownership: a deletion that names a tag (`reap`) deletes the link only when its alias (IFLA_IFALIAS) is
// that tag, and only such a verified link is put in a batch group; a link of that name with another tag
// or none is left alone and reported 'foreign'. Single deletions go by the ifindex that was judged, never
// by name. The batch groups are per reaper (a random base), so two reapers never share one.
//
// Each caller's promise resolves when its link is gone (or was already gone). If a group delete fails,
// the batch's links are deleted one by one, so a caller never waits on someone else's error.
import { randomInt } from 'node:crypto'
import { KernelError } from '../errors'
import { attrU32, ifinfomsg, IFLA, RTM } from './codec'
import { deleteLinkIndex, getLink, type LinkInfo } from './links'
import type { Rtnl } from './rtnl'
import type { NetlinkSessions } from './sessions'

/** What a deletion found: deleted, nothing of that name, or a link that is not the owner's (left alone). */
export type ReapResult = 'deleted' | 'missing' | 'foreign'

interface Pending {
  netns: string
  ifname: string
  tag: string | undefined
  resolve: (r: ReapResult) => void
  reject: (err: unknown) => void
}

/** Group ids used for batches: high values no administrator picks by hand. */
const GROUP_BASE = 0x4e530000

export class LinkReaper {
  private pending: Pending[] = []
  private running = false
  private batch = 0
  /** This reaper's own range of 256 groups. */
  private readonly base = GROUP_BASE + randomInt(0, 0xff) * 0x100

  constructor(private readonly sessions: NetlinkSessions) {}

  /** Deletes `ifname` in `netns` (a veth takes its peer along). Resolves false when it did not exist. */
  async delete(netns: string, ifname: string): Promise<boolean> {
    return (await this.reap(netns, ifname)) === 'deleted'
  }

  /** Deletes `ifname` in `netns` when its alias is `tag` (any link of that name when `tag` is undefined). */
  reap(netns: string, ifname: string, tag?: string): Promise<ReapResult> {
    return new Promise<ReapResult>((resolve, reject) => {
      this.pending.push({ netns, ifname, tag, resolve, reject })
      if (!this.running) void this.run()
    })
  }

  private async run(): Promise<void> {
    this.running = true
    try {
      // Let the deletions of this tick join the first batch.
      await new Promise<void>((r) => setImmediate(r))
      while (this.pending.length > 0) {
        const work = this.pending.splice(0)
        const byNetns = new Map<string, Pending[]>()
        for (const p of work) byNetns.set(p.netns, [...(byNetns.get(p.netns) ?? []), p])
        for (const [netns, items] of byNetns) await this.reapIn(netns, items)
      }
    } finally {
      this.running = false
    }
  }

  private async reapIn(netns: string, items: Pending[]): Promise<void> {
    let h: Rtnl
    try {
      h = this.sessions.forNetns(netns)
    } catch (err) {
      // The namespace is gone (its links went with it), or its path now opens a namespace the policy refuses
      // (the host's): nothing of ours is reachable there, and nothing is touched.
      if (KernelError.is(err, 'BAD_NETNS') || KernelError.is(err, 'NETNS_NOT_ALLOWED')) for (const p of items) p.resolve('missing')
      else for (const p of items) p.reject(err)
      return
    }
    // Judge every link first: only the owner's go further.
    const owned: Array<{ p: Pending; link: LinkInfo }> = []
    for (const p of items) {
      let link: LinkInfo | undefined
      try {
        link = await getLink(h, p.ifname)
      } catch (err) {
        p.reject(err)
        continue
      }
      if (link === undefined) p.resolve('missing')
      else if (p.tag !== undefined && link.alias !== p.tag) p.resolve('foreign')
      else owned.push({ p, link })
    }
    if (owned.length === 0) return
    if (owned.length === 1) return this.one(h, owned[0] as { p: Pending; link: LinkInfo })
    this.batch = (this.batch + 1) & 0xff
    const group = this.base + this.batch
    const grouped: Array<{ p: Pending; link: LinkInfo }> = []
    for (const o of owned) {
      try {
        await h.request(RTM.SETLINK, [ifinfomsg({ index: o.link.index }), attrU32(IFLA.GROUP, group)], 0, `tag link ${o.p.ifname} for deletion`)
        grouped.push(o)
      } catch {
        await this.one(h, o)
      }
    }
    if (grouped.length === 0) return
    try {
      await h.request(RTM.DELLINK, [ifinfomsg({}), attrU32(IFLA.GROUP, group)], 0, `delete ${grouped.length} links`)
      for (const o of grouped) o.p.resolve('deleted')
    } catch {
      for (const o of grouped) await this.one(h, o)
    }
  }

  private async one(h: Rtnl, o: { p: Pending; link: LinkInfo }): Promise<void> {
    try {
      o.p.resolve((await deleteLinkIndex(h, o.link, { missingOk: true })) ? 'deleted' : 'missing')
    } catch (err) {
      o.p.reject(err)
    }
  }
}
