// Command etcdctl is etcd's CLI (same body as upstream etcdctl/main.go);
// handy for inspecting the test cluster's etcd.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() {
	ctlv3.MustStart()
}
