// Batched link deletion. Deleting a veth holds the kernel's rtnl lock through an RCU grace period
// (~15 ms here), and the `netlink` package sends synchronously, so every deletion also blocks the
// agent's event loop for that long: 16 Closes in a row cost 16 grace periods. The kernel deletes a whole
// device group in one RTM_DELLINK (IFLA_GROUP, unregister_netdevice_many: one grace period for all), so
// deletions that arrive while one batch runs are collected, tagged with a batch group (a cheap
// RTM_SETLINK), and deleted together, per namespace.
//
// Each caller's promise resolves when its link is gone (or was already gone). If a group delete fails,
// the batch's links are deleted one by one, so a caller never waits on someone else's error.
import { KernelError } from '../errors'
import { attrU32, ifinfomsg, IFLA, RTM } from './codec'
import { deleteLink, getLink } from './links'
import type { NetlinkSessions, Rtnl } from './rtnl'

interface Pending {
  netns: string
  ifname: string
  resolve: (deleted: boolean) => void
  reject: (err: unknown) => void
}

/** Group ids used for batches: high values no administrator picks by hand. */
const GROUP_BASE = 0x4e530000

export class LinkReaper {
  private pending: Pending[] = []
  private running = false
  private batch = 0

  constructor(private readonly sessions: NetlinkSessions) {}

  /** Deletes `ifname` in `netns` (a veth takes its peer along). Resolves false when it did not exist. */
  delete(netns: string, ifname: string): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      this.pending.push({ netns, ifname, resolve, reject })
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
        for (const [netns, items] of byNetns) await this.reap(netns, items)
      }
    } finally {
      this.running = false
    }
  }

  private async reap(netns: string, items: Pending[]): Promise<void> {
    let h: Rtnl
    try {
      h = this.sessions.forNetns(netns)
    } catch (err) {
      // The namespace is gone: its links went with it.
      if (KernelError.is(err, 'BAD_NETNS')) for (const p of items) p.resolve(false)
      else for (const p of items) p.reject(err)
      return
    }
    if (items.length === 1) return this.one(h, items[0] as Pending)
    this.batch = (this.batch + 1) & 0xffff
    const group = GROUP_BASE + this.batch
    const tagged: Pending[] = []
    for (const p of items) {
      const link = await getLink(h, p.ifname).catch(() => undefined)
      if (link === undefined) {
        p.resolve(false)
        continue
      }
      try {
        await h.request(RTM.SETLINK, [ifinfomsg({ index: link.index }), attrU32(IFLA.GROUP, group)], 0, `tag link ${p.ifname} for deletion`)
        tagged.push(p)
      } catch {
        await this.one(h, p)
      }
    }
    if (tagged.length === 0) return
    try {
      await h.request(RTM.DELLINK, [ifinfomsg({}), attrU32(IFLA.GROUP, group)], 0, `delete ${tagged.length} links`)
      for (const p of tagged) p.resolve(true)
    } catch {
      for (const p of tagged) await this.one(h, p)
    }
  }

  private async one(h: Rtnl, p: Pending): Promise<void> {
    try {
      p.resolve(await deleteLink(h, p.ifname, { missingOk: true }))
    } catch (err) {
      p.reject(err)
    }
  }
}
