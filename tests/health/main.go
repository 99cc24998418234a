// Command cogo-health reads Kubernetes objects (a JSON object or a List) on stdin and prints,
// for each, how Argo CD (with the health checks of the argocd-cm patch named by the first
// argument, run by Argo CD's own Lua VM) and kstatus (sigs.k8s.io/cli-utils, as Flux and
// kpt read status) judge it: one JSON line per object.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	appv1 "github.com/argoproj/argo-cd/v2/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v2/util/lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type judged struct {
	Kind    string  `json:"kind"`
	Name    string  `json:"name"`
	ArgoCD  verdict `json:"argocd"`
	Kstatus verdict `json:"kstatus"`
}

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cogo-health:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: cogo-health <argocd-cm patch file> < objects.json")
	}
	patch, err := os.ReadFile(os.Args[1])
	if err != nil {
		return err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(patch, &cm); err != nil {
		return fmt.Errorf("%s: %w", os.Args[1], err)
	}
	overrides := lua.ResourceHealthOverrides{}
	const prefix = "resource.customizations.health."
	for key, script := range cm.Data {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		// argocd-cm names a kind group_Kind; the VM's overrides are keyed group/Kind.
		overrides[strings.Replace(strings.TrimPrefix(key, prefix), "_", "/", 1)] = appv1.ResourceOverride{HealthLua: script}
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var root unstructured.Unstructured
	// Numbers as Kubernetes reads them (int64 where they are whole).
	if err := utiljson.Unmarshal(input, &root.Object); err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	objects := []unstructured.Unstructured{root}
	if root.IsList() {
		list, err := root.ToList()
		if err != nil {
			return err
		}
		objects = list.Items
	}
	out := json.NewEncoder(os.Stdout)
	for i := range objects {
		obj := &objects[i]
		j := judged{Kind: obj.GetKind(), Name: obj.GetName()}
		h, err := overrides.GetResourceHealth(obj)
		switch {
		case err != nil:
			j.ArgoCD = verdict{Status: "Error", Message: err.Error()}
		case h == nil:
			j.ArgoCD = verdict{Status: "NoHealthCheck"}
		default:
			j.ArgoCD = verdict{Status: string(h.Status), Message: h.Message}
		}
		k, err := status.Compute(obj)
		if err != nil {
			j.Kstatus = verdict{Status: "Error", Message: err.Error()}
		} else {
			j.Kstatus = verdict{Status: k.Status.String(), Message: k.Message}
		}
		if err := out.Encode(j); err != nil {
			return err
		}
	}
	return nil
}
