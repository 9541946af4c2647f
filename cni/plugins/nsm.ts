// dist/nsm: the network service mesh CNI plugin binary. Everything is in ../nsm/ and ../protocol/.
import { runPlugin } from '../protocol/main'
import { nsmHandlers } from '../nsm/handlers'

runPlugin(nsmHandlers)
