package gitops

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// scripts is the shipped directory of Argo CD health scripts.
const scripts = "../../gitops/argocd"

// Argo CD's own layout (resource_customizations/<group>/<Kind>/health_test.yaml), plus
// the status kstatus must compute for the same recorded object.
type testFile struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
		Kstatus      string `json:"kstatus"`
	} `json:"tests"`
}

// Every kind's script says what its test file expects of each recorded object, and
// kstatus computes what Flux should wait for.
func TestRecordedStatuses(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(scripts, "*", "*", "health_test.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no health_test.yaml under %s (%v)", scripts, err)
	}
	for _, file := range files {
		dir := filepath.Dir(file)
		var tf testFile
		read(t, file, &tf)
		if len(tf.Tests) == 0 {
			t.Errorf("%s: no tests", file)
		}
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		covered := map[string]bool{}
		for _, tc := range tf.Tests {
			covered[tc.InputPath] = true
			t.Run(filepath.Join(filepath.Base(dir), tc.InputPath), func(t *testing.T) {
				var obj map[string]any
				read(t, filepath.Join(dir, tc.InputPath), &obj)
				got, err := Argo(string(script), obj)
				if err != nil {
					t.Fatal(err)
				}
				if got != tc.HealthStatus {
					t.Errorf("Argo CD health: got %+v, want %+v", got, tc.HealthStatus)
				}
				k, err := Kstatus(obj)
				if err != nil {
					t.Fatal(err)
				}
				if k.Status != tc.Kstatus {
					t.Errorf("kstatus: got %s (%s), want %s", k.Status, k.Message, tc.Kstatus)
				}
			})
		}
		recorded, _ := filepath.Glob(filepath.Join(dir, "testdata", "*"))
		for _, r := range recorded {
			rel, _ := filepath.Rel(dir, r)
			if !covered[rel] {
				t.Errorf("%s is not in %s", r, file)
			}
		}
	}
}

// The ConfigMap snippet for argocd-cm carries each script as it is.
func TestArgoCDConfigMapCarriesEveryScript(t *testing.T) {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	read(t, filepath.Join(scripts, "argocd-cm.yaml"), &cm)
	paths, _ := filepath.Glob(filepath.Join(scripts, "*", "*", "health.lua"))
	want := map[string]string{}
	from := map[string]string{}
	for _, p := range paths {
		kind := filepath.Base(filepath.Dir(p))
		group := filepath.Base(filepath.Dir(filepath.Dir(p)))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		key := "resource.customizations.health." + group + "_" + kind
		want[key], from[key] = string(b), p
	}
	keys := func(m map[string]string) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		sort.Strings(k)
		return k
	}
	if len(want) != 5 {
		t.Errorf("health scripts: %v, want one per pgpilot kind (5)", keys(want))
	}
	for k, v := range want {
		if cm.Data[k] != v {
			t.Errorf("argocd-cm.yaml %s differs from %s (regenerate it: gitops/argocd/sync.sh)", k, from[k])
		}
	}
	if len(cm.Data) != len(want) {
		t.Errorf("argocd-cm.yaml keys %v, scripts %v", keys(cm.Data), keys(want))
	}
}

func read(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Integers as int64, as unstructured objects (and kstatus) expect them.
	j, err := yaml.YAMLToJSONStrict(b)
	if err == nil {
		err = utiljson.Unmarshal(j, into)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
