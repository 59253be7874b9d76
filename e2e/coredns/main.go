// Command coredns is CoreDNS built with only the plugins the local node's
// cluster DNS uses (CoreDNS's documented way to choose plugins at compile
// time: a main that imports them, instead of the full plugin.cfg set, whose
// cloud-provider plugins would triple the build). The server itself, its
// Corefile syntax and the plugins are upstream's, unchanged.
//
// No `forward` plugin on purpose: this DNS answers cluster.local (and the
// reverse zones) only and never sends a query off the machine; names outside
// its zones get REFUSED.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
