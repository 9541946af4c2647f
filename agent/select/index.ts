// agent/select: endpoint selection (ARCHITECTURE §6) as pure functions, used by the agent's select element, healing
// and `nsmctl explain`. See select.ts for the contract.
export { formatExplanation } from './format.js'
export { RoundRobin } from './round-robin.js'
export {
  SelectError,
  explain,
  formatLabels,
  selectEndpoints,
  type CandidateReport,
  type CandidateStatus,
  type Decision,
  type EndpointCandidate,
  type Explanation,
  type MatchOutcome,
  type MatchReport,
  type RouteReport,
  type SelectInput,
} from './select.js'
