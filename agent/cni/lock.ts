// One lock per CNI attachment (container id + CNI_IFNAME): ADD, DEL and CHECK of one attachment run one
// after another, so a second ADD sees the first one's connections (and is refused, 106) instead of racing
// it, and a DEL never tears down what a concurrent ADD is still building. Different attachments run in
// parallel. In memory: after a restart nothing is in flight.
export class AttachmentLocks {
  private readonly tails = new Map<string, Promise<void>>()

  /** Runs `fn` once every earlier holder of `key` has finished. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key) ?? Promise.resolve()
    let release!: () => void
    const mine = new Promise<void>((resolve) => {
      release = resolve
    })
    const tail = before.then(() => mine)
    this.tails.set(key, tail)
    await before
    try {
      return await fn()
    } finally {
      release()
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
  }

  /** Attachments with work queued or running (for tests and status). */
  get size(): number {
    return this.tails.size
  }
}

export const attachmentKey = (containerId: string, ifname: string): string => `${containerId}\0${ifname}`
