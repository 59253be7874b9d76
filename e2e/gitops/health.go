// Package gitops evaluates pgpilot's objects the way GitOps tools do: Argo CD's health
// scripts (gitops/argocd/<group>/<Kind>/health.lua) in gopher-lua, the Lua interpreter
// Argo CD embeds, and Flux's view through kstatus (sigs.k8s.io/cli-utils).
package gitops

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Health is what a tool says of an object.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// ScriptPath is where the health script of group/kind lives under dir.
func ScriptPath(dir, group, kind string) string {
	return filepath.Join(dir, group, kind, "health.lua")
}

// Argo runs an Argo CD health script against obj as Argo CD does: the object as the
// global `obj`, only the base, table, string and math libraries open, a table with
// `status` and `message` returned.
func Argo(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
	} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	h := Health{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}
	switch h.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return h, nil
	}
	return h, fmt.Errorf("the script returned status %q, which Argo CD does not know", h.Status)
}

// ArgoFromDir evaluates obj with the script for its kind under dir.
func ArgoFromDir(dir string, obj map[string]any) (Health, error) {
	u := unstructured.Unstructured{Object: obj}
	gvk := u.GroupVersionKind()
	script, err := os.ReadFile(ScriptPath(dir, gvk.Group, gvk.Kind))
	if err != nil {
		return Health{}, err
	}
	return Argo(string(script), obj)
}

// Kstatus is kstatus' status of obj: what Flux's health checks and `kubectl wait
// --for=jsonpath` users build on.
func Kstatus(obj map[string]any) (Health, error) {
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return Health{}, err
	}
	return Health{Status: res.Status.String(), Message: res.Message}, nil
}

func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []any:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	default:
		return lua.LString(strings.TrimSpace(fmt.Sprint(v)))
	}
}
