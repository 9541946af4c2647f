// The `file://` URL of a netns path, as the KERNEL mechanism's `inodeURL` and an endpoint's `url` carry it.
// Each path component is percent-encoded, so every reader gets the exact path back: the KERNEL mechanism's
// parseRequest (netnsPathOfUrl below: decodeURIComponent of what follows `file://`) and the registry (URL
// pathname, then decodeURIComponent). Unencoded, `/var/run/netns/a%2db` decoded to `/var/run/netns/a-b`
// (another netns), and `#` or `?` cut the path short for a URL parser. No normalization: the path the netns
// policy judged is the path the URL names (node:url pathToFileURL would resolve `..`).
//
// A KERNEL mechanism's `inodeURL` may also be `inode://<dev>/<ino>` (NSM's clients send that form): it is
// resolved to the /proc/<pid>/ns/net of a process holding that namespace (./netns-inode.ts). Either way
// the result is a path the caller still judges through the netns policy.
import { KernelError } from './errors'
import { INODE_URL_SCHEME, netnsPathOfInodeUrl } from './netns-inode'

const FILE_URL_SCHEME = 'file://'

/** `file://` + `path` with each component percent-encoded; `decodeURIComponent` of the rest gives `path`. */
export function netnsFileUrl(path: string): string {
  return `${FILE_URL_SCHEME}${path.split('/').map(encodeURIComponent).join('/')}`
}

/**
 * The netns path a KERNEL mechanism's `inodeURL` names, not yet judged: `file://<path>` decoded, or
 * `inode://<dev>/<ino>` resolved to `/proc/<pid>/ns/net`. Throws KernelError INVALID_ARGUMENT (another
 * scheme, a bad % escape, a malformed inode URL) or BAD_NETNS (no process holds that inode).
 */
export function netnsPathOfUrl(url: string): string {
  if (url.startsWith(INODE_URL_SCHEME)) return netnsPathOfInodeUrl(url)
  if (!url.startsWith(FILE_URL_SCHEME)) {
    throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(url)} must be a file:// URL of a netns or inode://<dev>/<ino>`)
  }
  try {
    return decodeURIComponent(url.slice(FILE_URL_SCHEME.length))
  } catch (err) {
    throw new KernelError('INVALID_ARGUMENT', `${JSON.stringify(url)} is not a valid URL (bad % escape)`, { cause: err })
  }
}
