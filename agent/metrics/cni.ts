// CNI calls as metrics: duration by command and outcome, and a failed call's code (from the error JSON
// the runtime reads: what the plugin printed) in nsm_errors_total.
import type { CniObserver } from '../cni/deps.js'
import type { Series } from './metrics.js'

/** The `code` of a CNI error answer, '' when the output is no error JSON. */
function codeOf(stdout: string): string {
  try {
    const code = (JSON.parse(stdout) as { code?: unknown }).code
    return typeof code === 'number' ? String(code) : ''
  } catch {
    return ''
  }
}

export function cniMetrics(series: Series): CniObserver {
  return async (call, run) => {
    const command = call.command === '' ? 'none' : call.command
    const end = series.cniSeconds.startTimer({ command })
    try {
      const answer = await run()
      end({ outcome: answer.exitCode === 0 ? 'ok' : 'error' })
      if (answer.exitCode !== 0) series.errors.inc({ operation: command, code: codeOf(answer.stdout) || String(answer.exitCode), name: 'CNI' })
      return answer
    } catch (err) {
      end({ outcome: 'error' })
      throw err
    }
  }
}
