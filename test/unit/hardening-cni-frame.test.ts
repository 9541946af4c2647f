// The shim's request frame: any environment Linux lets a runtime pass fits (the agent never resets the
// connection over it, which the shim reported as "try again"); beyond the frame's limit encodeRequest
// names the variable, and the shim answers 4 itself.
import t from 'tap'
import { decodeRequest, encodeRequest, MAX_HEADER, RequestTooLarge } from '../../cni/nsm/frame'

t.test('six variables of 128 KiB each fit one frame', async (t) => {
  const big = 'a'.repeat(128 << 10)
  const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: big, CNI_NETNS: big, CNI_IFNAME: big, CNI_ARGS: big, CNI_PATH: big }
  const req = decodeRequest(encodeRequest({ env, stdin: Buffer.from('{}') }))
  t.equal(req?.env.CNI_ARGS?.length, big.length)
})

t.test('beyond MAX_HEADER: RequestTooLarge naming the largest variable', async (t) => {
  const env = { CNI_COMMAND: 'ADD', CNI_ARGS: 'b'.repeat(MAX_HEADER) }
  t.throws(() => encodeRequest({ env, stdin: Buffer.alloc(0) }), RequestTooLarge)
  t.throws(() => encodeRequest({ env, stdin: Buffer.alloc(0) }), /CNI_ARGS alone is/)
})
