// dist/nsm: the network service mesh CNI plugin binary, a shim over the node agent (../nsm/shim.ts).
import { runShim } from '../nsm/shim'

runShim()
