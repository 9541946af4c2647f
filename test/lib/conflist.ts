// A runtime's conflist [loopback, nsm] for one pod, exec'd as a runtime does it (CNI env, netconf on stdin,
// each ADD's result passed on as the next plugin's prevResult; DEL in reverse order): what the demos
// (scripts/demo.ts, scripts/demo-nodes.ts through ./mesh-pods.ts) run for every pod.
import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'

const ROOT = resolve(import.meta.dirname, '../..')

export interface ConflistCall {
  containerId: string
  /** The pod's netns name (under /var/run/netns). */
  netns: string
  podNamespace: string
  podName: string
  /** The agent socket the nsm plugin talks to. */
  socket: string
  /** Added to an error's message (e.g. "on n2"). */
  where?: string
}

/** Runs the conflist; resolves with the last plugin's result on ADD. Throws naming the plugin that failed. */
export function runConflist(command: 'ADD' | 'DEL', c: ConflistCall): unknown {
  const plugins = [
    { type: 'loopback', path: '/usr/lib/cni/loopback' },
    { type: 'nsm', path: join(ROOT, 'dist/nsm'), socket: c.socket },
  ]
  let prev: unknown
  for (const { path, ...conf } of command === 'ADD' ? plugins : [...plugins].reverse()) {
    const netconf = { cniVersion: '1.0.0', name: 'demo-net', ...conf, ...(prev === undefined ? {} : { prevResult: prev }) }
    const r = spawnSync(path, [], {
      input: JSON.stringify(netconf),
      encoding: 'utf8',
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: c.containerId,
        CNI_NETNS: `/var/run/netns/${c.netns}`,
        CNI_IFNAME: 'eth0',
        CNI_PATH: '/usr/lib/cni',
        CNI_ARGS: `IgnoreUnknown=true;K8S_POD_NAMESPACE=${c.podNamespace};K8S_POD_NAME=${c.podName};K8S_POD_INFRA_CONTAINER_ID=${c.containerId}`,
        PATH: process.env.PATH ?? '/usr/bin:/bin',
      },
    })
    if (r.status !== 0) throw new Error(`${conf.type} ${command} for ${c.podName}${c.where === undefined ? '' : ` ${c.where}`} failed (exit ${r.status}): ${r.stdout}${r.stderr}`)
    if (command === 'ADD') prev = JSON.parse(r.stdout) as unknown
  }
  return prev
}
