// What the CNI fuzz test (test/integration/hardening-fuzz.test.ts) compares before and after its calls to
// find a leak: the host's links, addresses and routes, and the reservation records nsm-ipam left on disk.
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { RUN, sh } from './netns'

// Links, addresses and routes of concurrent test runs on this machine (podman bridges and veths, other
// runs' t<hex> links) are left out so that they cannot fail the test; everything the fuzz could leak on
// the host (CNI_IFNAME values, nsm-<hash>) is compared.
const FOREIGN = new RegExp(`^(?!t${RUN})(t[0-9a-f]{4}|veth|cni-podman|podman|nsmpod)`)

/** The root netns's links, addresses and routes, sorted, as comparable strings. */
export function hostSnapshot(): { links: string[]; addrs: string[]; routes: string[] } {
  const j = (args: string[]): Array<Record<string, unknown>> => JSON.parse(sh('ip', ['-j', ...args])) as Array<Record<string, unknown>>
  const links = j(['link', 'show'])
    .filter((l) => !FOREIGN.test(String(l.ifname)))
    .map((l) => JSON.stringify({ ifname: l.ifname, ifindex: l.ifindex, mtu: l.mtu, address: l.address, flags: l.flags, master: l.master }))
  const addrs = j(['addr', 'show'])
    .filter((l) => !FOREIGN.test(String(l.ifname)))
    .flatMap((l) => ((l.addr_info as Array<Record<string, unknown>>) ?? []).map((a) => `${String(l.ifname)} ${String(a.local)}/${String(a.prefixlen)}`))
  const routes = [...j(['route', 'show', 'table', 'all']), ...j(['-6', 'route', 'show', 'table', 'all'])]
    .filter((r) => !FOREIGN.test(String(r.dev)))
    .map((r) => JSON.stringify(r))
  return { links: links.sort(), addrs: addrs.sort(), routes: routes.sort() }
}

/** Every nsm-ipam reservation record anywhere under `root` (a dataDir, a network's dir or nsm-ipam's root). */
export function reservationRecords(root: string): string[] {
  const out: string[] = []
  const walk = (dir: string): void => {
    let names: string[]
    try {
      names = readdirSync(dir)
    } catch {
      return
    }
    for (const n of names) {
      const p = join(dir, n)
      let st
      try {
        st = statSync(p)
      } catch {
        continue
      }
      if (st.isDirectory()) walk(p)
      else if (n.startsWith('o.') && dir.includes('/reservations/')) out.push(p)
    }
  }
  walk(root)
  return out
}
