// The `file://` URL of a netns path, as the KERNEL mechanism's `inodeURL` and an endpoint's `url` carry it.
// Each path component is percent-encoded, so every reader gets the exact path back: the KERNEL mechanism's
// parseRequest (decodeURIComponent of what follows `file://`) and the registry (URL pathname, then
// decodeURIComponent). Unencoded, `/var/run/netns/a%2db` decoded to `/var/run/netns/a-b` (another netns),
// and `#` or `?` cut the path short for a URL parser. No normalization: the path the netns policy judged is
// the path the URL names (node:url pathToFileURL would resolve `..`).

/** `file://` + `path` with each component percent-encoded; `decodeURIComponent` of the rest gives `path`. */
export function netnsFileUrl(path: string): string {
  return `file://${path.split('/').map(encodeURIComponent).join('/')}`
}
