// pgpilot-health reads a Kubernetes object or List as JSON on stdin (`kubectl get -o json`)
// and prints, one JSON line per object, what Argo CD (pgpilot's health scripts) and kstatus
// say of it. The node-tier e2e tests judge live objects with it.
//
//	kubectl get postgresclusters -o json | pgpilot-health -scripts gitops/argocd
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	utiljson "k8s.io/apimachinery/pkg/util/json"
	gitops "pgpilot.io/e2e/gitops"
)

type verdict struct {
	Kind    string        `json:"kind"`
	Name    string        `json:"name"`
	Argo    gitops.Health `json:"argo"`
	Kstatus gitops.Health `json:"kstatus"`
}

func main() {
	scripts := flag.String("scripts", "gitops/argocd", "directory of <group>/<Kind>/health.lua")
	flag.Parse()
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// Integers as int64, as unstructured objects (and kstatus) expect them.
	var in map[string]any
	if err := utiljson.Unmarshal(data, &in); err != nil {
		fail(err)
	}
	items := []any{in}
	if list, ok := in["items"].([]any); ok {
		items = list
	}
	out := json.NewEncoder(os.Stdout)
	for _, item := range items {
		obj, ok := item.(map[string]any)
		if !ok {
			fail(fmt.Errorf("an item is not an object"))
		}
		argo, err := gitops.ArgoFromDir(*scripts, obj)
		if err != nil {
			fail(err)
		}
		kstatus, err := gitops.Kstatus(obj)
		if err != nil {
			fail(err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		name, _ := meta["name"].(string)
		kind, _ := obj["kind"].(string)
		if err := out.Encode(verdict{Kind: kind, Name: name, Argo: argo, Kstatus: kstatus}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "pgpilot-health:", err)
	os.Exit(1)
}
