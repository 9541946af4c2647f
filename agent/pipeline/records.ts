// The pipeline's RecordStore over the connection table: each connection's DatapathRecord is stored in
// its table entry, so one durable write per request covers the connection, its attachment, its
// datapath and its address allocation.
import type { ConnectionTable } from '../connections/table.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import type { AttachmentInfo } from '../server/handler.js'
import type { RecordStore } from './persist.js'
import type { DatapathRecord } from './types.js'

function isRecord(v: unknown): v is DatapathRecord {
  return typeof v === 'object' && v !== null && (v as { version?: unknown }).version === 1 && typeof (v as { connectionId?: unknown }).connectionId === 'string'
}

export class TableRecords implements RecordStore {
  constructor(private readonly table: ConnectionTable) {}

  record(id: string): DatapathRecord | undefined {
    const d = this.table.get(id)?.datapath
    return isRecord(d) ? d : undefined
  }

  all(): DatapathRecord[] {
    return this.table.list().flatMap((e) => (isRecord(e.datapath) ? [e.datapath] : []))
  }

  async save(connection: Connection, attachment: AttachmentInfo | undefined, record: DatapathRecord): Promise<void> {
    await this.table.upsert(connection, attachment, record)
  }

  async remove(id: string): Promise<void> {
    await this.table.delete(id)
  }
}
