// Command lab-webhook runs the Azure Workload Identity mutating webhook (v1.6.0) for the lab, on a port of the
// lab's choosing.
//
// Why it exists: upstream's cmd/webhook/main.go never sets controller-runtime's webhook.Options.Port, so its
// server always listens on :9443 of every interface and one machine can run one lab webhook at a time
// (docs/lab.md §5). This entry point wires the manager as upstream's does, adding only --webhook-host and
// --webhook-port. The admission logic is upstream's package github.com/Azure/azure-workload-identity/pkg/webhook,
// compiled unchanged: NewPodMutator is the handler registered at /mutate-v1-pod, as in upstream's main.
//
// Left out: the cert-controller rotator. It manages a Secret and a Service DNS name the lab does not have, so the
// lab always ran upstream's binary with --disable-cert-rotation; that flag is still accepted (it must stay true),
// and the server reads tls.crt/tls.key from --webhook-cert-dir.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"monis.app/mlog"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/Azure/azure-workload-identity/pkg/metrics"
	"github.com/Azure/azure-workload-identity/pkg/version"
	wh "github.com/Azure/azure-workload-identity/pkg/webhook"
)

// Where upstream registers the pod mutator; the lab's MutatingWebhookConfiguration calls this path.
const mutatePodPath = "/mutate-v1-pod"

var tlsVersions = map[string]uint16{
	"1.0": tls.VersionTLS10,
	"1.1": tls.VersionTLS11,
	"1.2": tls.VersionTLS12,
	"1.3": tls.VersionTLS13,
}

func main() {
	if err := run(); err != nil {
		mlog.Fatal(err)
	}
}

func run() error {
	defer mlog.Setup()()

	// Upstream's flags, names and defaults unchanged, plus --webhook-host and --webhook-port.
	audience := flag.String("audience", "", "Audience for service account token")
	certDir := flag.String("webhook-cert-dir", "/certs", "Directory holding the webhook's tls.crt and tls.key")
	noRotation := flag.Bool("disable-cert-rotation", true, "Must be true: this entry point has no cert rotation")
	tlsMinVersion := flag.String("tls-min-version", "1.3", "Minimum TLS version")
	healthAddr := flag.String("health-addr", ":9440", "The address the health endpoint binds to")
	metricsAddr := flag.String("metrics-addr", ":8095", "The address the metrics endpoint binds to")
	metricsBackend := flag.String("metrics-backend", "prometheus", "Backend used for metrics")
	logLevel := flag.String("log-level", "", "In order of increasing verbosity: unset, info, debug, trace and all.")
	printVersion := flag.Bool("version", false, "Print version information and exit")
	cteSuffix := flag.String("custom-token-endpoint-annotation-suffix", "",
		"Suffix to append to 'azure.workload.identity/use-' for the custom token endpoint annotation")
	cteAudience := flag.String("custom-token-endpoint-audience", "",
		"Audience of service account tokens for custom token endpoints")
	host := flag.String("webhook-host", "127.0.0.1", "The address the webhook server listens on")
	port := flag.Int("webhook-port", webhook.DefaultPort, "The port the webhook server listens on")
	flag.Parse()

	if *printVersion {
		return version.PrintVersionToStdout()
	}
	if !*noRotation {
		return errors.New("cert rotation is not supported here: put tls.crt and tls.key in --webhook-cert-dir")
	}
	if *port <= 0 || *port > 65535 {
		return fmt.Errorf("invalid --webhook-port %d", *port)
	}
	tlsVersion, ok := tlsVersions[*tlsMinVersion]
	if !ok {
		return fmt.Errorf("invalid --tls-min-version %q: must be one of 1.0, 1.1, 1.2, 1.3", *tlsMinVersion)
	}

	ctx := signals.SetupSignalHandler()
	spec := mlog.LogSpec{Level: mlog.LogLevel(*logLevel), Format: mlog.FormatJSON}
	if err := mlog.ValidateAndSetLogLevelAndFormatGlobally(ctx, spec); err != nil {
		return fmt.Errorf("invalid --log-level set: %w", err)
	}
	log.SetLogger(mlog.Logr()) //nolint:staticcheck // controller-runtime takes the logr.Logger, as upstream's main
	entryLog := mlog.New().WithName("entrypoint")

	config := ctrl.GetConfigOrDie()
	config.UserAgent = version.GetUserAgent("webhook") // azure-workload-identity/webhook/<version> ...

	// The exporter comes before the mutator, which registers its measurements with it.
	entryLog.Info("initializing metrics backend", "backend", *metricsBackend)
	if err := metrics.InitMetricsExporter(*metricsBackend); err != nil {
		return fmt.Errorf("failed to initialize metrics exporter: %w", err)
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	entryLog.Info("setting up manager", "userAgent", config.UserAgent, "host", *host, "port", *port)
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:                 scheme,
		LeaderElection:         false,
		HealthProbeBindAddress: *healthAddr,
		Metrics:                metricsserver.Options{BindAddress: *metricsAddr},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    *host,
			Port:    *port,
			CertDir: *certDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tlsVersion }},
		}),
		MapperProvider: apiutil.NewDynamicRESTMapper,
	})
	if err != nil {
		return fmt.Errorf("unable to set up controller manager: %w", err)
	}

	// Without the rotator there is nothing to wait for: register the mutator before the manager starts, and let
	// health and readiness be "the webhook server answers TLS" (upstream's checks once its certs are ready).
	mutator, err := wh.NewPodMutator(mgr.GetClient(), mgr.GetAPIReader(), *audience, mgr.GetScheme(),
		mgr.GetConfig(), *cteSuffix, *cteAudience)
	if err != nil {
		return fmt.Errorf("unable to set up pod mutator: %w", err)
	}
	mgr.GetWebhookServer().Register(mutatePodPath, &webhook.Admission{Handler: mutator})
	started := mgr.GetWebhookServer().StartedChecker()
	if err := mgr.AddHealthzCheck("healthz", started); err != nil {
		return fmt.Errorf("unable to add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", started); err != nil {
		return fmt.Errorf("unable to add readyz check: %w", err)
	}

	entryLog.Info("starting manager")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("unable to run manager: %w", err)
	}
	return nil
}
