// Command cri-reset stops and removes every pod sandbox (and with it every
// container) of a CRI runtime, through the runtime's own CRI API, the way
// `crictl stop` + `crictl rmp` would: containers get SIGTERM and a grace
// period, then the runtime tears down each sandbox, which runs the CNI DEL
// chain (veth, IP address, hostPort rules), unmounts its shm and deletes its
// network namespace. node-down.sh uses it after stopping the kubelet.
// (crictl itself is not obtainable from the Go module proxy.)
//
//	cri-reset -endpoint unix:///path/containerd.sock [-grace 10s] [-list]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI endpoint, unix:///path/to.sock")
	grace := flag.Duration("grace", 10*time.Second, "time containers get between SIGTERM and SIGKILL")
	list := flag.Bool("list", false, "only list pod sandboxes and containers")
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "usage: cri-reset -endpoint unix:///path/to.sock [-grace 10s] [-list]")
		os.Exit(2)
	}
	if err := run(*endpoint, *grace, *list); err != nil {
		fmt.Fprintln(os.Stderr, "cri-reset:", err)
		os.Exit(1)
	}
}

func run(endpoint string, grace time.Duration, list bool) error {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), grace+2*time.Minute)
	defer cancel()

	pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	if list {
		for _, p := range pods.Items {
			fmt.Printf("pod %s %s/%s %s\n", p.Id[:13], p.Metadata.Namespace, p.Metadata.Name, p.State)
		}
		for _, c := range ctrs.Containers {
			fmt.Printf("container %s %s pod=%s %s\n", c.Id[:13], c.Metadata.Name, c.PodSandboxId[:13], c.State)
		}
		return nil
	}

	// Running containers first, all at once, each with the grace period.
	var wg sync.WaitGroup
	errs := make(chan error, len(ctrs.Containers)+len(pods.Items))
	for _, c := range ctrs.Containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		wg.Add(1)
		go func(c *runtimeapi.Container) {
			defer wg.Done()
			_, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{
				ContainerId: c.Id, Timeout: int64(grace / time.Second)})
			if err != nil {
				errs <- fmt.Errorf("stop container %s (%s): %w", c.Id[:13], c.Metadata.Name, err)
			}
		}(c)
	}
	wg.Wait()
	// Then each sandbox: stop (network teardown) and remove (with its containers).
	for _, p := range pods.Items {
		name := p.Metadata.Namespace + "/" + p.Metadata.Name
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs <- fmt.Errorf("stop pod %s: %w", name, err)
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			errs <- fmt.Errorf("remove pod %s: %w", name, err)
			continue
		}
		fmt.Printf("removed pod %s\n", name)
	}
	close(errs)
	failed := 0
	for err := range errs {
		fmt.Fprintln(os.Stderr, "cri-reset:", err)
		failed++
	}
	if failed > 0 {
		return fmt.Errorf("%d operation(s) failed", failed)
	}
	return nil
}
