// Command cluster is one multi-call binary holding a real Kubernetes control
// plane for job-executor's tests (scripts/cluster): each component runs as its
// own process, chosen by the first argument or, through a symlink, by the name
// the binary was called by (so a "kubectl" link is the matching kubectl).
package main

import (
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	if run, ok := components[filepath.Base(os.Args[0])]; ok {
		os.Exit(run(os.Args[1:]))
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	run, ok := components[os.Args[1]]
	if !ok {
		usage()
		os.Exit(2)
	}
	os.Exit(run(os.Args[2:]))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cluster COMPONENT [ARGS...]")
	for _, n := range componentNames() {
		fmt.Fprintln(os.Stderr, "  "+n)
	}
}
