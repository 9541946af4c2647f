// The file store: one directory per reservation under <dataDir>/<network>/, crash-safe and safe for
// any number of processes at once, without any lock.
//
// Layout (format version 1, recorded in FORMAT):
//   FORMAT                          {"format":"nsm-ipam-file-store","version":1}
//   reservations/<ip>/o.<token>     {"v":1,"containerID":"…","ifname":"…","rangeSet":0}
//   last-reserved.<rangeSet>        the last address handed out (a hint for round-robin)
//   tmp/                            claims being prepared (<pid>.<n>.<random>)
//
// Reserving: prepare tmp/<claim>/o.<token> (data fsynced, token random per claim), then rename(2) the
// claim directory to reservations/<ip>; sync() fsyncs reservations/ once, before the plugin answers.
// rename onto a directory that exists and is not empty fails (ENOTEMPTY/EEXIST), atomically: of many
// processes claiming one address exactly one wins. A crash leaves the whole claim or only files under tmp/.
//
// Releasing: unlink reservations/<ip>/o.<token> (the exact name read, checked to be the owner's), then
// rmdir reservations/<ip>. If the address was released and claimed again in between, that token no
// longer exists (the new claim has another one) and the unlink fails harmlessly; rmdir only removes an
// empty directory. An empty reservations/<ip> (a release interrupted between the two steps) is free:
// claims rename over empty directories. So releases need no lock either, and a DEL racing a GC can never
// remove a fresh claim of someone else.
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmdirSync, rmSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { IpamError } from '../range/errors'
import { storeDirProblem } from './pseudo-fs'
import { formatIp, parseIp } from '../range/ip'
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

const randomToken = (): string => Math.random().toString(36).slice(2, 12).padEnd(10, '0')

export class FileStore implements Store {
  readonly dir: string
  private readonly resDir: string
  private readonly tmpDir: string
  /** A prepared claim directory per (owner, rangeSet), reused across attempts until one succeeds. */
  private pending = new Map<string, string>()
  /** A claim was renamed into reservations/ since the last sync(). */
  private unsynced = false

  private constructor(dir: string) {
    this.dir = dir
    this.resDir = join(dir, 'reservations')
    this.tmpDir = join(dir, 'tmp')
  }

  /** Opens the store of one network if it exists (DEL, CHECK and GC need not create one). */
  static openExisting(dataDir: string, network: string): FileStore | undefined {
    try {
      readdirSync(join(dataDir, network, 'reservations'))
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined
      throw storeError(`store ${join(dataDir, network)}`, err)
    }
    return FileStore.open(dataDir, network)
  }

  /** Opens (creating when needed) the store of one network. Throws IpamError STORE. */
  static open(dataDir: string, network: string): FileStore {
    const refused = storeDirProblem(dataDir)
    if (refused !== undefined) throw new IpamError('STORE', `store ${join(dataDir, network)}: ${refused}`)
    let dir: string
    try {
      mkdirSync(join(dataDir, network, 'reservations'), { recursive: true, mode: 0o700 })
      mkdirSync(join(dataDir, network, 'tmp'), { recursive: true, mode: 0o700 })
      dir = realpathSync.native(join(dataDir, network))
    } catch (err) {
      throw storeError(`store ${join(dataDir, network)}`, err)
    }
    const store = new FileStore(dir)
    store.ensureFormat()
    return store
  }

  private tmpName(): string {
    tmpCounter += 1
    return join(this.tmpDir, `${process.pid}.${tmpCounter}.${randomToken()}`)
  }

  /** Writes a new file and fsyncs it; on failure (ENOSPC) the file is removed again: nothing half-made stays. */
  private writeFileDurably(path: string, content: string): void {
    const fd = openSync(path, 'wx', 0o600)
    try {
      try {
        writeSync(fd, content)
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }
    } catch (err) {
      rmSync(path, { force: true })
      throw err
    }
  }

  private ensureFormat(): void {
    const path = join(this.dir, 'FORMAT')
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw storeError(`store ${path}`, err)
      try {
        const tmp = this.tmpName()
        this.writeFileDurably(tmp, `${JSON.stringify({ format: FORMAT_NAME, version: FORMAT_VERSION })}\n`)
        try {
          linkSync(tmp, path) // exclusive: concurrent first users agree on one FORMAT
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
      let claim = this.pending.get(key)
      if (claim === undefined) {
        const made = this.tmpName()
        mkdirSync(made, { mode: 0o700 })
        try {
          // The record's data is fsynced before the rename; its entry in the claim directory is not
          // (one fsync less per address): if a crash loses that entry, reservations/<ip> is an empty
          // directory, which counts as free. Whole or absent either way.
          this.writeFileDurably(join(made, `o.${randomToken()}`), `${JSON.stringify({ v: FORMAT_VERSION, containerID: r.containerID, ifname: r.ifname, rangeSet: r.rangeSet })}\n`)
        } catch (err) {
          rmSync(made, { recursive: true, force: true }) // a claim that could not be written is no claim
          throw err
        }
        this.pending.set(key, made)
        claim = made
      }
      try {
        renameSync(claim, join(this.resDir, r.ip))
      } catch (err) {
        const code = errno(err)
        if (code === 'ENOTEMPTY' || code === 'EEXIST') return false
        throw err
      }
      this.pending.delete(key)
      this.unsynced = true
      return true
    } catch (err) {
      throw storeError(`reserve ${r.ip}`, err)
    }
  }

  async sync(): Promise<void> {
    if (!this.unsynced) return
    try {
      fsyncDir(this.resDir)
    } catch (err) {
      throw storeError('sync', err)
    }
    this.unsynced = false
  }

  /** Reads one reservation and its record's name; undefined when the address is free. */
  private read(ip: string): { res: Reservation; record: string } | undefined {
    let names: string[]
    try {
      names = readdirSync(join(this.resDir, ip)).filter((n) => n.startsWith('o.'))
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined
      throw storeError(`read ${ip}`, err)
    }
    const record = names[0]
    if (record === undefined) return undefined
    let text: string
    try {
      text = readFileSync(join(this.resDir, ip, record), 'utf8')
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined // released meanwhile
      throw storeError(`read ${ip}`, err)
    }
    try {
      const o = JSON.parse(text) as { v?: unknown; containerID?: unknown; ifname?: unknown; rangeSet?: unknown }
      if (o.v === FORMAT_VERSION && typeof o.containerID === 'string' && typeof o.ifname === 'string' && typeof o.rangeSet === 'number') {
        return { res: { ip, containerID: o.containerID, ifname: o.ifname, rangeSet: o.rangeSet }, record }
      }
    } catch {
      // fall through: a damaged record is held by nobody in particular
    }
    return { res: { ip, containerID: '', ifname: '', rangeSet: -1 }, record }
  }

  async release(owner: Owner, ips: readonly string[]): Promise<string[]> {
    const done: string[] = []
    try {
      for (const ip of ips) {
        const r = this.read(ip)
        if (r === undefined || !sameOwner(r.res, owner)) continue
        try {
          unlinkSync(join(this.resDir, ip, r.record))
        } catch (err) {
          if (errno(err) === 'ENOENT') continue // someone else released this very claim
          throw err
        }
        done.push(ip)
        try {
          rmdirSync(join(this.resDir, ip))
        } catch (err) {
          // Already removed, or claimed again since our unlink: either way not ours to touch.
          if (errno(err) !== 'ENOENT' && errno(err) !== 'ENOTEMPTY' && errno(err) !== 'EEXIST') throw err
        }
      }
      if (done.length > 0) fsyncDir(this.resDir)
    } catch (err) {
      throw err instanceof IpamError ? err : storeError('release', err)
    }
    return done
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
      if (r !== undefined) out.push(r.res)
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
    const tmp = this.tmpName()
    try {
      const fd = openSync(tmp, 'wx', 0o600)
      try {
        writeSync(fd, `${ip}\n`)
      } finally {
        closeSync(fd)
      }
      renameSync(tmp, join(this.dir, `last-reserved.${rangeSet}`))
    } catch (err) {
      rmSync(tmp, { force: true })
      throw storeError('last-reserved', err)
    }
  }

  async health(): Promise<void> {
    this.ensureFormat()
    try {
      const tmp = this.tmpName()
      this.writeFileDurably(tmp, 'health\n')
      unlinkSync(tmp)
      readdirSync(this.resDir)
    } catch (err) {
      throw storeError(`store ${this.dir} is not writable`, err)
    }
  }

  /**
   * Cleans up after crashes: removes temp claims of processes that no longer exist, and empty
   * reservation directories (a release interrupted between its two steps). Returns how many.
   */
  sweep(): number {
    let removed = 0
    for (const name of readdirSync(this.tmpDir)) {
      const pid = Number(name.split('.')[0])
      if (!Number.isInteger(pid) || pid === process.pid) continue
      try {
        process.kill(pid, 0)
        continue // alive (or pid reused: the file stays, harmlessly)
      } catch (err) {
        if (errno(err) === 'EPERM') continue
      }
      rmSync(join(this.tmpDir, name), { recursive: true, force: true })
      removed += 1
    }
    for (const name of readdirSync(this.resDir)) {
      try {
        rmdirSync(join(this.resDir, name)) // only succeeds when empty
        removed += 1
      } catch {
        // not empty: a live reservation
      }
    }
    return removed
  }

  /** Drops claims prepared for attempts that did not succeed. */
  async close(): Promise<void> {
    for (const claim of this.pending.values()) rmSync(claim, { recursive: true, force: true })
    this.pending.clear()
  }
}
