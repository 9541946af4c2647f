// The options node runs the agent with: deploy/daemonset.yaml and deploy/Dockerfile put them on its command line,
// and so do the demo (scripts/demo.ts) and every agent the tests and benchmarks start (test/lib/agent.ts). They
// are V8 options, read once as the process starts: NODE_OPTIONS refuses them and v8.setFlagsFromString comes
// too late, so they cannot be set from inside the agent.
//
// --min-semi-space-size=16 (MiB): the young generation, where nearly everything a call allocates dies, never
// shrinks below two halves of 16 MiB. An agent is idle most of the time and busy in bursts (a pod's CNI calls, a
// round of Requests), and V8 shrinks an idle process's young generation to its smallest (1 MiB halves): the
// burst then ran a scavenge every 2–3 Request + Close pairs (~300 KB of garbage each), each with a cost of its
// own whatever survived. With 16 MiB halves a burst of 40 pairs runs about one. BENCHMARKS.md ("Observability
// overhead") has what it changed, and its price: resident memory once the agent has been busy (+22 MiB after 200
// Request + Close pairs on the test machine).
//
// --expose-gc: gives the agent V8's gc(), which agent/idle-gc.ts calls once the agent is idle after a burst, so
// the old generation's garbage and its pages go back instead of waiting for V8's next limit (with 1,000 live
// connections after a burst: 165 MiB resident before, 128–132 MiB after; committed heap 91 → 57 MB).
export const AGENT_NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16', '--expose-gc']
