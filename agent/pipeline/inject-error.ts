// inject-error — a test double as a chain element (as NSM's sdk does): placed anywhere in the list, it
// fails requests (and optionally closes) with the given error, so tests can prove that every element
// before it undoes its own work. Needs: nothing. Provides: nothing. Never part of the agent's own list
// unless the agent is started with a fault-injection flag for tests.
import type { Element } from './chain.js'

export function injectError(opts: { name?: string; error: () => Error; onRequest?: boolean; onClose?: boolean; when?: (connectionId: string) => boolean }): Element {
  return {
    name: opts.name ?? 'inject-error',
    needs: [],
    provides: [],
    wrap: (next) => ({
      async request(r) {
        if (opts.onRequest !== false && (opts.when?.(r.connection.id) ?? true)) throw opts.error()
        return next.request(r)
      },
      async close(c) {
        if (opts.onClose === true && (opts.when?.(c.connection.id) ?? true)) throw opts.error()
        return next.close(c)
      },
    }),
  }
}
