// Command etcd is the etcd server, built from the published
// go.etcd.io/etcd/server/v3 module (same body as its upstream main.go).
// A wrapper is needed because the server module's own go.mod replaces its
// sibling modules with ../ paths, so `go install` of it cannot work.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
