// persist — last element: writes the connection, its CNI attachment and its datapath record to the
// connection table (durable before the reply; the table also publishes the update to
// MonitorConnections). If the write fails, the error travels back and every element before undoes its
// work. On close the record is removed by the pipeline handler only after every element's close
// succeeded (see handler.ts), so a failed teardown stays visible and can be retried.
// Needs: datapath. Provides: nothing. Undoes: nothing after it can fail.
import { AgentError } from '../errors.js'
import type { AttachmentInfo } from '../server/handler.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import type { Element } from './chain.js'
import type { DatapathRecord } from './types.js'

export interface RecordStore {
  record(id: string): DatapathRecord | undefined
  save(connection: Connection, attachment: AttachmentInfo | undefined, record: DatapathRecord): Promise<void>
  remove(id: string): Promise<void>
}

export function persist(store: RecordStore): Element {
  return {
    name: 'persist',
    needs: ['datapath'],
    provides: [],
    // Its close only hands the call on: no span, no timing of its own (chain.ts `observed`).
    observed: { close: false },
    wrap: (next) => ({
      async request(r) {
        const record = r.state.datapath
        if (record === undefined) throw new AgentError('INTERNAL', 'persist: no datapath record')
        const out = await next.request(r)
        await store.save(out, r.ctx.attachment, record)
        return out
      },
      close: (c) => next.close(c),
    }),
  }
}
