// dist/nsm-ipam: the IPAM plugin binary. Everything is in ../nsm-ipam/ and ../protocol/.
import { runPlugin } from '../protocol/main'
import { nsmIpamHandlers } from '../nsm-ipam/handlers'

runPlugin(nsmIpamHandlers)
