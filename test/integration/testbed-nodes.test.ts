// The multi-node test bed (test/lib/nodes.ts) the VXLAN and mesh tests stand on: the underlay connects the
// nodes over IPv4 and IPv6, and an agent (startAgentInNode) and any other process (runInNode) started in a
// node run in that node's netns; a long-running one is killed at teardown.
import t from 'tap'
import { readlinkSync, statSync } from 'node:fs'
import { execInNode, makeNodes, runInNode, startAgentInNode, type TestNode } from '../lib/nodes'

t.test('test bed: the underlay connects the nodes; an agent and other processes started in a node run in its netns', async (t) => {
  const bed = makeNodes(t, 2)
  const node = bed.nodes[1] as TestNode
  t.match(execInNode(node, 'ip', ['-br', 'addr', 'show', 'ul0']), node.underlay)
  t.match(execInNode(bed.nodes[0] as TestNode, 'ping', ['-c', '1', '-W', '5', node.underlay]), / 0% packet loss/, 'the underlay connects the nodes')
  t.match(execInNode(bed.nodes[0] as TestNode, 'ping', ['-c', '1', '-W', '5', node.underlay6]), / 0% packet loss/)
  const inode = `net:[${statSync(node.path).ino}]`
  const agent = await startAgentInNode(t, node, { args: ['--node-name', 'node-2'] })
  t.equal(readlinkSync(`/proc/${agent.pid}/ns/net`), inode)
  await agent.stop()
  // A long-running process: it says where it runs, then waits (killed at teardown).
  const child = runInNode(t, node, 'sh', ['-c', 'readlink /proc/self/ns/net; exec sleep 600'])
  const first = await new Promise<string>((res) => {
    let out = ''
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString()
      if (out.includes('\n')) res(out.trim())
    })
  })
  t.equal(first, inode)
})
