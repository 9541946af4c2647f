// The machinery of one conformance run: the target, the run's own subnet, data dir and namespaces, how a
// call is exec'd, what "nothing changed" compares, and cleanup. The checks are in checks.ts.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ip, removeNetns, sh, uniqueName } from '../lib/netns'
import { execPlugin, snapshotTree, type CniCall, type CniOutcome } from './exec'

export type Level = 'MUST' | 'SHOULD' | 'ROBUST'
export type Status = 'pass' | 'fail' | 'n/a'

export interface CheckResult {
  id: string
  level: Level
  title: string
  /** What the check expects (codes, shapes), for the table. */
  expect: string
  status: Status
  detail: string
}

export interface Target {
  /** Shown in the report. */
  label: string
  kind: 'main' | 'ipam'
  /** Path of the binary exec'd for every call. */
  binary: string
  /** Plugin type written in the configuration (the main plugin's name, or the IPAM plugin's). */
  type: string
  /** IPAM plugin type, for kind 'main'. */
  ipamType?: string
  /** CNI_PATH for delegation. */
  cniPath: string[]
  /** Extra top-level configuration fields for the main plugin. */
  extra?: Record<string, unknown>
}

export const OUR_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']
export const vnum = (v: string): number => v.split('.').reduce((a, x) => a * 1000 + Number(x), 0)

export class CheckFailed extends Error {}
export class NotApplicable extends Error {}
export function expect(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new CheckFailed(msg)
}
export const brief = (o: CniOutcome): string => `exit ${o.exitCode}, stdout ${JSON.stringify(o.stdout.trim().slice(0, 160))}`

export interface Attachment {
  containerId: string
  ifname: string
  netns: string
  netnsName: string
  conf: Record<string, unknown>
}

/** One run of the suite against one target. */
export class ConformanceRun {
  readonly target: Target
  readonly subnet: string
  readonly prefix: string
  readonly network: string
  readonly dataDir: string
  private readonly netnses = new Set<string>()
  private readonly live: Attachment[] = []
  supported: string[] = []
  /** The newest version both the plugin and this suite speak. */
  version = '1.0.0'
  private counter = 0

  constructor(target: Target, subnetThirdOctet: number) {
    this.target = target
    this.prefix = `10.213.${subnetThirdOctet}`
    this.subnet = `${this.prefix}.0/24`
    this.network = `conf-${uniqueName('n')}`
    this.dataDir = mkdtempSync(join(tmpdir(), 'nsm-conformance-'))
  }

  conf(version: string, ipamExtra: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
    const t = this.target
    const ipam = { type: t.kind === 'main' ? t.ipamType : t.type, subnet: this.subnet, dataDir: this.dataDir, ...ipamExtra }
    return { cniVersion: version, name: this.network, type: t.type, ...(t.extra ?? {}), ...extra, ipam }
  }

  newNetns(): { name: string; path: string } {
    const name = uniqueName('cf')
    sh('ip', ['netns', 'add', name])
    this.netnses.add(name)
    return { name, path: `/var/run/netns/${name}` }
  }

  dropNetns(name: string): void {
    removeNetns(name)
    this.netnses.delete(name)
  }

  call(c: CniCall): Promise<CniOutcome> {
    return execPlugin(this.target.binary, { path: this.target.cniPath.join(':'), ...c })
  }

  /** ADD in a fresh netns; the attachment is remembered for cleanup. */
  async add(version: string, opts: { ipamExtra?: Record<string, unknown>; extra?: Record<string, unknown>; containerId?: string } = {}): Promise<{ out: CniOutcome; att: Attachment }> {
    const ns = this.newNetns()
    this.counter += 1
    const att: Attachment = { containerId: opts.containerId ?? `conformance-${this.counter}`, ifname: 'eth0', netns: ns.path, netnsName: ns.name, conf: this.conf(version, opts.ipamExtra, opts.extra) }
    const out = await this.call({ command: 'ADD', containerId: att.containerId, netns: att.netns, ifname: att.ifname, stdin: att.conf })
    if (out.exitCode === 0) this.live.push(att)
    else this.dropNetns(ns.name)
    return { out, att }
  }

  async del(att: Attachment, opts: { prevResult?: unknown; withNetns?: boolean } = {}): Promise<CniOutcome> {
    const conf = opts.prevResult === undefined ? att.conf : { ...att.conf, prevResult: opts.prevResult }
    const out = await this.call({ command: 'DEL', containerId: att.containerId, ifname: att.ifname, netns: opts.withNetns === false ? '' : att.netns, stdin: conf })
    if (out.exitCode === 0) {
      const i = this.live.indexOf(att)
      if (i >= 0) this.live.splice(i, 1)
      this.dropNetns(att.netnsName)
    }
    return out
  }

  /** What a failed call must leave untouched. */
  snapshot(): string {
    const hostAddrs = (JSON.parse(ip(undefined, '-j', 'addr', 'show')) as Array<{ ifname: string; addr_info: Array<{ local: string; prefixlen: number }> }>)
      .flatMap((l) => l.addr_info.filter((a) => a.local.startsWith(`${this.prefix}.`)).map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`))
      .sort()
    const hostRoutes = ip(undefined, 'route', 'show', 'root', this.subnet).trim()
    const netns = [...this.netnses].sort().map((n) => `${n}: ${ip(n, '-br', 'addr').trim()}`)
    return JSON.stringify({ data: snapshotTree(this.dataDir), hostAddrs, hostRoutes, netns })
  }

  async cleanup(): Promise<void> {
    for (const att of [...this.live].reverse()) await this.del(att).catch(() => undefined)
    for (const n of [...this.netnses]) this.dropNetns(n)
    rmSync(this.dataDir, { recursive: true, force: true })
  }
}

