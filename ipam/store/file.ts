// The file store: one file per reservation under <dataDir>/<network>/, crash-safe and safe for any
// number of processes at once.
//
// Layout (format version 1, recorded in FORMAT):
//   FORMAT                    {"format":"nsm-ipam-file-store","version":1}
//   reservations/<ip>         {"v":1,"containerID":"…","ifname":"…","rangeSet":0}
//   last-reserved.<rangeSet>  the last address handed out (a hint for round-robin)
//   tmp/                      files being written (<pid>.<n>.<random>)
//
// Reserving = write the record to tmp/, fsync it, then link(2) it to reservations/<ip>, then fsync the
// directory. link fails with EEXIST when the name exists, atomically, so of many processes claiming one
// address exactly one wins: no lock is needed to hand out addresses. A crash leaves either the whole
// reservation (the link happened after the data was on disk) or nothing but a temp file.
//
// Releasing = read reservations/<ip>, check the owner, unlink it. Releases hold the store's lock
// (lock.ts) so two releasers (a DEL and a GC racing) can never read "X holds it", let one unlink, a new
// ADD re-claim, and the other unlink the new claim.
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { IpamError } from '../range/errors'
import { formatIp, parseIp } from '../range/ip'
import { withLock } from './lock'
import { sameOwner, type Owner, type Reservation, type Store } from './store'

export const FORMAT_NAME = 'nsm-ipam-file-store'
export const FORMAT_VERSION = 1

let tmpCounter = 0

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code
}

function storeError(what: string, err: unknown): IpamError {
  return new IpamError('STORE', `${what}: ${(err as Error).message}`, { cause: err })
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

export class FileStore implements Store {
  readonly dir: string
  private readonly resDir: string
  private readonly tmpDir: string
  /** A written, fsynced record per (owner, rangeSet) waiting to be linked; reused across attempts. */
  private pending = new Map<string, string>()

  private constructor(dir: string) {
    this.dir = dir
    this.resDir = join(dir, 'reservations')
    this.tmpDir = join(dir, 'tmp')
  }

  /** Opens (creating when needed) the store of one network. Throws IpamError STORE. */
  static open(dataDir: string, network: string): FileStore {
    let dir: string
    try {
      mkdirSync(join(dataDir, network, 'reservations'), { recursive: true, mode: 0o700 })
      mkdirSync(join(dataDir, network, 'tmp'), { recursive: true, mode: 0o700 })
      dir = realpathSync(join(dataDir, network))
    } catch (err) {
      throw storeError(`store ${join(dataDir, network)}`, err)
    }
    const store = new FileStore(dir)
    store.ensureFormat()
    return store
  }

  private writeTmp(content: string): string {
    tmpCounter += 1
    const path = join(this.tmpDir, `${process.pid}.${tmpCounter}.${Math.random().toString(36).slice(2, 10)}`)
    const fd = openSync(path, 'wx', 0o600)
    try {
      writeSync(fd, content)
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    return path
  }

  private ensureFormat(): void {
    const path = join(this.dir, 'FORMAT')
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw storeError(`store ${path}`, err)
      try {
        const tmp = this.writeTmp(`${JSON.stringify({ format: FORMAT_NAME, version: FORMAT_VERSION })}\n`)
        try {
          linkSync(tmp, path)
          fsyncDir(this.dir)
        } catch (e) {
          if (errno(e) !== 'EEXIST') throw e
        } finally {
          unlinkSync(tmp)
        }
        text = readFileSync(path, 'utf8')
      } catch (e) {
        throw storeError(`store ${path}`, e)
      }
    }
    let fmt: { format?: unknown; version?: unknown }
    try {
      fmt = JSON.parse(text) as typeof fmt
    } catch (err) {
      throw storeError(`store ${path} is not JSON`, err)
    }
    if (fmt.format !== FORMAT_NAME) throw new IpamError('STORE', `store ${path}: format ${JSON.stringify(fmt.format)} is not ${FORMAT_NAME}`)
    if (fmt.version !== FORMAT_VERSION) {
      throw new IpamError('STORE', `store ${path}: format version ${JSON.stringify(fmt.version)} is not supported (this build reads version ${FORMAT_VERSION})`)
    }
  }

  async reserve(r: Reservation): Promise<boolean> {
    const key = `${r.containerID}\n${r.ifname}\n${r.rangeSet}`
    try {
      let tmp = this.pending.get(key)
      if (tmp === undefined) {
        tmp = this.writeTmp(`${JSON.stringify({ v: FORMAT_VERSION, containerID: r.containerID, ifname: r.ifname, rangeSet: r.rangeSet })}\n`)
        this.pending.set(key, tmp)
      }
      try {
        linkSync(tmp, join(this.resDir, r.ip))
      } catch (err) {
        if (errno(err) === 'EEXIST') return false
        throw err
      }
      this.pending.delete(key)
      unlinkSync(tmp)
      fsyncDir(this.resDir)
      return true
    } catch (err) {
      throw storeError(`reserve ${r.ip}`, err)
    }
  }

  /** Reads one reservation; undefined when absent. A damaged record is owned by nobody ('' / ''). */
  private read(ip: string): Reservation | undefined {
    let text: string
    try {
      text = readFileSync(join(this.resDir, ip), 'utf8')
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined
      throw storeError(`read ${ip}`, err)
    }
    try {
      const o = JSON.parse(text) as { v?: unknown; containerID?: unknown; ifname?: unknown; rangeSet?: unknown }
      if (o.v === FORMAT_VERSION && typeof o.containerID === 'string' && typeof o.ifname === 'string' && typeof o.rangeSet === 'number') {
        return { ip, containerID: o.containerID, ifname: o.ifname, rangeSet: o.rangeSet }
      }
    } catch {
      // fall through: damaged
    }
    return { ip, containerID: '', ifname: '', rangeSet: -1 }
  }

  async release(owner: Owner, ips: readonly string[]): Promise<string[]> {
    if (ips.length === 0) return []
    return withLock(this.dir, async () => {
      const done: string[] = []
      try {
        for (const ip of ips) {
          const r = this.read(ip)
          if (r === undefined || !sameOwner(r, owner)) continue
          unlinkSync(join(this.resDir, ip))
          done.push(ip)
        }
        if (done.length > 0) fsyncDir(this.resDir)
      } catch (err) {
        throw err instanceof IpamError ? err : storeError('release', err)
      }
      return done
    })
  }

  async list(): Promise<Reservation[]> {
    let names: string[]
    try {
      names = readdirSync(this.resDir)
    } catch (err) {
      throw storeError(`list ${this.resDir}`, err)
    }
    const out: Reservation[] = []
    for (const name of names) {
      const ip = parseIp(name)
      if (ip === undefined || formatIp(ip) !== name) continue
      const r = this.read(name)
      if (r !== undefined) out.push(r)
    }
    return out
  }

  async lastReserved(rangeSet: number): Promise<string | undefined> {
    try {
      const s = readFileSync(join(this.dir, `last-reserved.${rangeSet}`), 'utf8').trim()
      return parseIp(s) === undefined ? undefined : s
    } catch {
      return undefined
    }
  }

  async setLastReserved(rangeSet: number, ip: string): Promise<void> {
    // A hint: tmp + rename keeps it whole, no fsync (losing it only changes which address comes next).
    try {
      tmpCounter += 1
      const tmp = join(this.tmpDir, `${process.pid}.${tmpCounter}.last`)
      const fd = openSync(tmp, 'w', 0o600)
      try {
        writeSync(fd, `${ip}\n`)
      } finally {
        closeSync(fd)
      }
      renameSync(tmp, join(this.dir, `last-reserved.${rangeSet}`))
    } catch (err) {
      throw storeError('last-reserved', err)
    }
  }

  async health(): Promise<void> {
    this.ensureFormat()
    try {
      const tmp = this.writeTmp('health\n')
      unlinkSync(tmp)
      readdirSync(this.resDir)
    } catch (err) {
      throw storeError(`store ${this.dir} is not writable`, err)
    }
  }

  /** Removes temp files of processes that no longer exist (left by a crash). */
  sweepTemp(): number {
    let removed = 0
    for (const name of readdirSync(this.tmpDir)) {
      const pid = Number(name.split('.')[0])
      if (!Number.isInteger(pid) || pid === process.pid) continue
      try {
        process.kill(pid, 0)
        continue
      } catch (err) {
        if (errno(err) === 'EPERM') continue
      }
      try {
        unlinkSync(join(this.tmpDir, name))
        removed += 1
      } catch {
        // another sweeper got it
      }
    }
    return removed
  }

  /** Drops temp records written for attempts that did not succeed. */
  async close(): Promise<void> {
    for (const tmp of this.pending.values()) {
      try {
        unlinkSync(tmp)
      } catch {
        // already gone
      }
    }
    this.pending.clear()
  }
}
