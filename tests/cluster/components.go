package main

import (
	"errors"
	"fmt"
	"github.com/spf13/pflag"
	"os"
	"sort"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	helmcmd "helm.sh/helm/v4/pkg/cmd"
	helmkube "helm.sh/helm/v4/pkg/kube"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kwokcrd "sigs.k8s.io/kwok/kustomize/crd"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	kwokcmd "sigs.k8s.io/kwok/pkg/kwok/cmd"
	kwoklog "sigs.k8s.io/kwok/pkg/log"
	kwoksignals "sigs.k8s.io/kwok/pkg/utils/signals"
)

var components = map[string]func(args []string) int{
	"etcd": func(args []string) int {
		etcdmain.Main(append([]string{"etcd"}, args...))
		return 0
	},
	"kube-apiserver": func(args []string) int {
		return runCobra(apiserver.NewAPIServerCommand(), args)
	},
	"kube-controller-manager": func(args []string) int {
		return runCobra(controllermanager.NewControllerManagerCommand(), args)
	},
	"kube-scheduler": func(args []string) int {
		return runCobra(scheduler.NewSchedulerCommand(), args)
	},
	"kubectl": func(args []string) int {
		return runCobra(kubectlcmd.NewDefaultKubectlCommand(), args)
	},
	"kwok":     runKwok,
	"pod-logs": runPodLogs,
	"kwok-crds": func(args []string) int {
		// The CRDs of the KWOK objects the cluster uses, as one YAML stream (each starts
		// with "---"): Logs, and PortForward, with which a test forwards a pod's port to a
		// process on the host (the operator it runs in the pod's place).
		for _, crd := range [][]byte{kwokcrd.Logs, kwokcrd.PortForward} {
			_, _ = os.Stdout.Write(crd)
		}
		return 0
	},
	"helm": func(args []string) int {
		// The field manager helm's own binary sets, so managedFields read "helm".
		helmkube.ManagedFieldsManager = "helm"
		cmd, err := helmcmd.NewRootCmd(os.Stdout, args, helmcmd.SetupLogging)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helm:", err)
			return 1
		}
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			var cerr helmcmd.CommandError
			if errors.As(err, &cerr) {
				return cerr.ExitCode
			}
			return 1
		}
		return 0
	},
}

func runCobra(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

func componentNames() []string {
	names := make([]string, 0, len(components))
	for n := range components {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// runKwok starts KWOK's controller the way its own main does: its logging and
// --config flags are read from the whole command line before the command runs.
func runKwok(args []string) int {
	flagset := pflag.NewFlagSet("global", pflag.ContinueOnError)
	flagset.ParseErrorsAllowlist.UnknownFlags = true
	flagset.Usage = func() {}
	ctx := kwoksignals.SetupSignalContext()
	ctx, logger := kwoklog.InitFlags(ctx, flagset)
	ctx, err := kwokconfig.InitFlags(ctx, flagset)
	if err != nil {
		logger.Error("kwok config", "err", err)
		return 1
	}
	cmd := kwokcmd.NewCommand(ctx)
	// Another component of this binary registers a global non-bool "version" flag; cobra's
	// own --version (added when Version is set) would then fail every run.
	cmd.Version = ""
	cmd.PersistentFlags().AddFlagSet(flagset)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		logger.Error("kwok", "err", err)
		return 1
	}
	return 0
}
