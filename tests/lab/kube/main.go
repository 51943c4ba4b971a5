// Command kube-testenv is the lab's Kubernetes control plane: an embedded etcd plus the real
// kube-apiserver from k8s.io/kubernetes, in one process (docs/lab.md §1, §2).
//
// Usage:
//
//	kube-testenv [--etcd-data-dir DIR] [--etcd-client-port N] [--etcd-peer-port N] -- <kube-apiserver flags>
//	kube-testenv etcd <etcd flags>                  a plain etcd server (etcdmain)
//	kube-testenv kube-apiserver <apiserver flags>   a plain kube-apiserver (needs --etcd-servers)
//
// When invoked through a link named "etcd" or "kube-apiserver" it acts as that binary, so a folder of
// two links can serve as KUBEBUILDER_ASSETS (docs/lab.md §3.1, §6).
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"
	_ "time/tzdata" // as upstream cmd/kube-apiserver: time zone data for CronJob

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdmain"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream: JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream: version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	switch name := filepath.Base(os.Args[0]); {
	case name == "etcd":
		etcdmain.Main(os.Args)
		return
	case name == "kube-apiserver":
		os.Exit(cli.Run(app.NewAPIServerCommand()))
	}
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "etcd":
			etcdmain.Main(os.Args[1:])
			return
		case "kube-apiserver":
			command := app.NewAPIServerCommand()
			command.SetArgs(os.Args[2:])
			os.Exit(cli.Run(command))
		}
	}
	os.Exit(runCombined(os.Args[1:]))
}

// runCombined starts embedded etcd, then kube-apiserver against it, and returns the exit code.
func runCombined(args []string) int {
	flags := flag.NewFlagSet("kube-testenv", flag.ContinueOnError)
	dataDir := flags.String("etcd-data-dir", "", "etcd data directory (required)")
	clientPort := flags.Int("etcd-client-port", 2379, "etcd client port on 127.0.0.1")
	peerPort := flags.Int("etcd-peer-port", 2380, "etcd peer port on 127.0.0.1")
	logLevel := flags.String("etcd-log-level", "warn", "etcd log level")
	readyTimeout := flags.Duration("etcd-ready-timeout", time.Minute, "how long to wait for etcd")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "kube-testenv: --etcd-data-dir is required")
		return 2
	}

	// Construct the apiserver command first: NewAPIServerCommand installs the process's one and only
	// SIGTERM/SIGINT handler (SetupSignalContext may run once per process, docs/lab.md §1.1), and its
	// context lets a signal that arrives while etcd is still starting end the process cleanly too.
	command := app.NewAPIServerCommand()
	stopping := command.Context()

	etcd, err := startEtcd(*dataDir, *clientPort, *peerPort, *logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-testenv: starting etcd: %v\n", err)
		return 1
	}
	// The apiserver has stopped (or never started) whenever we leave; only then close etcd, so a
	// graceful apiserver shutdown can still reach its storage.
	defer etcd.Close()

	select {
	case <-etcd.Server.ReadyNotify():
	case <-stopping.Done():
		return 0
	case <-time.After(*readyTimeout):
		fmt.Fprintln(os.Stderr, "kube-testenv: etcd did not become ready in time")
		return 1
	}

	go func() {
		// etcd dying under a running apiserver leaves a server that answers but cannot store anything;
		// shut the apiserver down instead, so the launcher sees the process exit.
		if err, ok := <-etcd.Err(); ok && err != nil {
			fmt.Fprintf(os.Stderr, "kube-testenv: etcd failed: %v\n", err)
			genericapiserver.RequestShutdown()
		}
	}()

	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", *clientPort)
	command.SetArgs(append(flags.Args(), "--etcd-servers="+etcdURL))
	return cli.Run(command)
}

// startEtcd starts a single-member etcd on loopback, configured as k8s.io/apiserver's own etcd3
// testserver does (docs/lab.md §2): no fsync, since the lab's data is disposable.
func startEtcd(dataDir string, clientPort, peerPort int, logLevel string) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "lab"
	cfg.Dir = dataDir
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = logLevel
	// NewConfig leaves this at 0 (only etcd's flag parsing sets the default), which would log every request
	// as "expensive" at warn level.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return embed.StartEtcd(cfg)
}
