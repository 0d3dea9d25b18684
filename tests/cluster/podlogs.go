package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// The test images of docs/cluster.md: what their containers print.
const (
	failImage        = "job-executor.test/fail"
	neverStartsImage = "job-executor.test/never-starts"
)

var logsResource = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "logs"}

// runPodLogs gives every scheduled pod the log KWOK serves for it: it writes one
// CRI-format file per container and a KWOK Logs object (owned by the pod, so it
// goes with it) naming those files.
func runPodLogs(args []string) int {
	fs := flag.NewFlagSet("pod-logs", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	dir := fs.String("dir", "", "directory for the log files")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *kubeconfig == "" || *dir == "" {
		fmt.Fprintln(os.Stderr, "pod-logs: --kubeconfig and --dir are required")
		return 2
	}
	if err := servePodLogs(*kubeconfig, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "pod-logs:", err)
		return 1
	}
	return 0
}

func servePodLogs(kubeconfig, dir string) error {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	clients, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	factory := informers.NewSharedInformerFactory(clients, 0)
	pods := factory.Core().V1().Pods().Informer()
	handle := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
			return
		}
		if err := writePodLogs(ctx, dyn, dir, pod); err != nil {
			fmt.Fprintf(os.Stderr, "pod-logs: %s/%s: %v\n", pod.Namespace, pod.Name, err)
		}
	}
	_, err = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

func writePodLogs(ctx context.Context, dyn dynamic.Interface, dir string, pod *corev1.Pod) error {
	marker := filepath.Join(dir, string(pod.UID)+".done")
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	now := time.Now().UTC()
	var entries []any
	containers := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for i, c := range containers {
		file := filepath.Join(dir, fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, c.Name))
		var body strings.Builder
		for _, line := range containerOutput(c, i < len(pod.Spec.InitContainers)) {
			fmt.Fprintf(&body, "%s stdout F %s\n", now.Format(time.RFC3339Nano), line)
		}
		if err := os.WriteFile(file, []byte(body.String()), 0o644); err != nil {
			return err
		}
		entries = append(entries, map[string]any{"containers": []any{c.Name}, "logsFile": file})
	}
	logs := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "Logs",
		"metadata": map[string]any{
			"name":      pod.Name,
			"namespace": pod.Namespace,
			"ownerReferences": []any{map[string]any{
				"apiVersion": "v1", "kind": "Pod", "name": pod.Name, "uid": string(pod.UID),
			}},
		},
		"spec": map[string]any{"logs": entries},
	}}
	_, err := dyn.Resource(logsResource).Namespace(pod.Namespace).Create(ctx, logs, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return os.WriteFile(marker, nil, 0o644)
}

// containerOutput is what a test image prints: the fail image one line before its
// exit 1, every other image its command line. Init containers do not run under
// KWOK, so theirs says so.
func containerOutput(c corev1.Container, init bool) []string {
	switch {
	case init:
		return []string{"(init container " + c.Name + ": not run under KWOK)"}
	case strings.HasPrefix(c.Image, failImage):
		return []string{"job-executor.test/fail: failing on purpose with exit code 1"}
	case strings.HasPrefix(c.Image, neverStartsImage):
		return nil
	}
	// $(VAR) expands from the container's literal env, as the kubelet does.
	var pairs []string
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			pairs = append(pairs, "$("+e.Name+")", e.Value)
		}
	}
	expand := strings.NewReplacer(pairs...)
	words := append(append([]string{}, c.Command...), c.Args...)
	for i, w := range words {
		words[i] = expand.Replace(w)
	}
	line := strings.TrimSpace(strings.Join(words, " "))
	if line == "" {
		line = c.Image
	}
	return []string{line}
}
