// The KERNEL mechanism's orphan sweep: links carrying one of our tags (./names.ts LINK_TAG_PREFIX) whose
// connection is neither journaled nor being built. They are what a crash between building a datapath and
// journaling it leaves (the veth exists before the journal write), and nobody else would ever delete them.
//
// Safe against requests in flight: the links are listed first and the live connections read after, so a
// link listed while its request runs is live (the request holds its id's lock until it is journaled);
// a link is deleted by the ifindex that was judged, never by name, so a link made since is not touched.
import { KernelError } from '../../../pkg/errors.js'
import { deleteLinkIndex, listLinks, type LinkInfo, type NetlinkSessions, type Rtnl } from '../../../pkg/netlink/index.js'
import type { SweepInput, SweptLink } from '../types.js'
import { LINK_TAG_PREFIX, linkTag } from './names.js'

export async function sweepTaggedLinks(sessions: NetlinkSessions, input: SweepInput): Promise<SweptLink[]> {
  const found: Array<{ netns: string; h: Rtnl; link: LinkInfo }> = []
  for (const netns of new Set(input.namespaces)) {
    let h: Rtnl
    try {
      h = sessions.forNetns(netns)
    } catch (err) {
      if (err instanceof KernelError) continue // gone, not a namespace, or refused by the policy: nothing of ours to reach
      throw err
    }
    try {
      for (const link of await listLinks(h)) if (link.alias?.startsWith(LINK_TAG_PREFIX) === true) found.push({ netns, h, link })
    } catch (err) {
      if (!KernelError.is(err, 'BAD_NETNS')) throw err
    }
  }
  // A veth's peer goes with it: the other end, listed in its own namespace, is then missing.
  return deleteNotLive(found, input)
}

/** A tagged link a sweep listed: where, through which session, and the link as judged. */
export interface FoundLink {
  netns: string
  h: Rtnl
  link: { index: number; name: string; alias?: string | undefined }
}

/**
 * The second half of every sweep: of the tagged links listed, those whose connection is not live (read
 * now, after the listing) are deleted by the ifindex judged; a link already gone is not counted.
 */
export async function deleteNotLive(found: readonly FoundLink[], input: SweepInput): Promise<SweptLink[]> {
  if (found.length === 0) return []
  const live = new Set([...input.live()].map(linkTag))
  const swept: SweptLink[] = []
  for (const { netns, h, link } of found) {
    const tag = link.alias as string
    if (live.has(tag)) continue
    try {
      if (await deleteLinkIndex(h, link, { missingOk: true })) swept.push({ netns, ifname: link.name, tag })
    } catch (err) {
      if (!KernelError.is(err, 'BAD_NETNS')) throw err
    }
  }
  return swept
}
