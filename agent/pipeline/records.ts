// The pipeline's RecordStore over the connection table: each connection's DatapathRecord is stored in
// its table entry, so one durable write per request covers the connection, its attachment, its
// datapath and its address allocation. Records are read through the mechanisms' decoder, which migrates
// older versions (agent/mechanisms/record.ts); every write is the current version.
import type { ConnectionTable } from '../connections/table.js'
import type { Connection } from '../../proto/gen/networkservice/connection.js'
import type { AttachmentInfo } from '../server/handler.js'
import type { RecordStore } from './persist.js'
import { decodeDatapathRecord } from '../mechanisms/record.js'
import type { DatapathRecord } from './types.js'

export class TableRecords implements RecordStore {
  constructor(private readonly table: ConnectionTable) {}

  record(id: string): DatapathRecord | undefined {
    return decodeDatapathRecord(this.table.get(id)?.datapath)
  }

  all(): DatapathRecord[] {
    return this.table.list().flatMap((e) => decodeDatapathRecord(e.datapath) ?? [])
  }

  async save(connection: Connection, attachment: AttachmentInfo | undefined, record: DatapathRecord): Promise<void> {
    await this.table.upsert(connection, attachment, record)
  }

  async remove(id: string): Promise<void> {
    await this.table.delete(id)
  }
}
