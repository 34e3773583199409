package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Roles are the services `lab serve` runs, one per host.
var Roles = []string{"web", "api", "db", "cache", "dns", "client"}

// serveConfig is the flags of `lab serve`; each role reads the ones it needs.
type serveConfig struct {
	role       string
	lab, netns string
	parentPID  int
	listen     string
	dns        string        // the lab's DNS server, ip:53
	dnsTTL     time.Duration // how long a looked-up name is kept
	latency    time.Duration // added to each answer, ±50%
	errorRatio float64
	api        string // web: the api's base URL
	db, cache  string // api: host:port of the stores
	ttl        time.Duration
	records    listValue
	target     string // client: web's base URL
	rate       float64
	users      int
	period     time.Duration
	newConnEvery,
	dnsTCPEvery int
}

// listValue is a repeatable flag.
type listValue []string

func (l *listValue) String() string     { return strings.Join(*l, ",") }
func (l *listValue) Set(v string) error { *l = append(*l, v); return nil }

// roleDefaults are each role's port, latency and own error ratio.
var roleDefaults = map[string]struct {
	listen     string
	latency    time.Duration
	errorRatio float64
}{
	"web":    {":80", 5 * time.Millisecond, 0.01},
	"api":    {":8080", 10 * time.Millisecond, 0.02},
	"db":     {":5432", 2 * time.Millisecond, 0},
	"cache":  {":6379", 0, 0},
	"dns":    {":53", 0, 0},
	"client": {"", 0, 0},
}

// Serve runs one lab service until ctx ends, SIGTERM or SIGINT arrives, its parent changes
// (with --parent-pid) or its namespace is deleted (with --netns). args are the role and its
// flags, as after `quanyu lab serve`; it logs to stderr.
func Serve(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("lab serve: which service? one of %s", strings.Join(Roles, ", "))
	}
	def, ok := roleDefaults[args[0]]
	if !ok {
		return fmt.Errorf("lab serve: no service %q (one of %s)", args[0], strings.Join(Roles, ", "))
	}
	c := serveConfig{role: args[0]}
	fs := flag.NewFlagSet("quanyu lab serve "+c.role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.lab, "lab", DefaultPrefix, "the `prefix` of the lab this service belongs to (how `lab down` finds it)")
	fs.StringVar(&c.netns, "netns", "", "exit when this network `namespace` is deleted")
	fs.IntVar(&c.parentPID, "parent-pid", 0, "exit when the parent process is no longer this `pid`")
	fs.StringVar(&c.listen, "listen", def.listen, "`address` to listen on")
	fs.StringVar(&c.dns, "dns", "", "the lab's DNS server `ip:port` (default: the system's resolver)")
	fs.DurationVar(&c.dnsTTL, "dns-ttl", 10*time.Second, "how long a looked-up name is kept")
	fs.DurationVar(&c.latency, "latency", def.latency, "added to each answer (±50%)")
	fs.Float64Var(&c.errorRatio, "error-ratio", def.errorRatio, "share of requests failed on purpose (HTTP 500)")
	fs.StringVar(&c.api, "api", "http://api.lab:8080", "web: the api's base `URL`")
	fs.StringVar(&c.db, "db", "db.lab:5432", "api: the database's `host:port`")
	fs.StringVar(&c.cache, "cache", "cache.lab:6379", "api: the cache's `host:port`")
	fs.DurationVar(&c.ttl, "ttl", 0, "db, cache: keys expire after this long (0: never; cache default 20s)")
	fs.Var(&c.records, "record", "dns: an A record `name=ip` (name without the domain); repeatable")
	fs.StringVar(&c.target, "target", "http://web.lab", "client: web's base `URL`")
	fs.Float64Var(&c.rate, "rate", 5, "client: base rate, requests per second (swings ±50% over --period)")
	fs.IntVar(&c.users, "users", 4, "client: concurrent users")
	fs.DurationVar(&c.period, "period", 5*time.Minute, "client: period of the rate's swing")
	fs.IntVar(&c.newConnEvery, "new-conn-every", 20, "client: each user opens a new connection after this many requests")
	fs.IntVar(&c.dnsTCPEvery, "dns-tcp-every", 0, "look every n-th name up over TCP (0: UDP only; client default 4)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("lab serve %s: unexpected argument %q", c.role, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.role == "cache" && !set["ttl"] {
		c.ttl = 20 * time.Second
	}
	if c.role == "client" && !set["dns-tcp-every"] {
		c.dnsTCPEvery = 4
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("lab serve %s: %w", c.role, err)
	}

	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "lab-"+c.role, "lab", c.lab)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if c.parentPID != 0 {
		go watchParent(ctx, cancel, c.parentPID, time.Second, os.Getppid)
	}
	if c.netns != "" {
		go watchNamespace(ctx, cancel, c.netns, time.Second, log)
	}
	log.Info("starting", "listen", c.listen, "dns", c.dns)
	var err error
	switch c.role {
	case "web":
		err = runWeb(ctx, c, log)
	case "api":
		err = runAPI(ctx, c, log)
	case "db", "cache":
		err = runKV(ctx, c, log)
	case "dns":
		err = runDNS(ctx, c, log)
	case "client":
		err = runClient(ctx, c, log)
	}
	why := context.Cause(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("stopped", "err", err)
		return err
	}
	log.Info("stopped", "why", why)
	return nil
}

func (c serveConfig) validate() error {
	switch {
	case c.errorRatio < 0 || c.errorRatio > 1:
		return fmt.Errorf("--error-ratio %g: want 0 to 1", c.errorRatio)
	case c.latency < 0:
		return fmt.Errorf("--latency %s: want 0 or more", c.latency)
	case c.role == "client" && (c.rate <= 0 || c.rate > 10000):
		return fmt.Errorf("--rate %g: want more than 0, at most 10000", c.rate)
	case c.role == "client" && (c.users < 1 || c.users > 1000):
		return fmt.Errorf("--users %d: want 1 to 1000", c.users)
	case c.role == "client" && c.period < time.Second:
		return fmt.Errorf("--period %s: want at least 1s", c.period)
	case c.newConnEvery < 1:
		return fmt.Errorf("--new-conn-every %d: want at least 1", c.newConnEvery)
	}
	return nil
}

// errParentGone and errNamespaceGone say why a service stopped on its own.
var (
	errParentGone    = errors.New("the parent process is gone")
	errNamespaceGone = errors.New("the namespace is deleted")
)

// watchParent ends the service once its parent is no longer ppid: the parent died and the
// service was handed to init (or a subreaper). It polls, as nothing signals the change.
func watchParent(ctx context.Context, cancel context.CancelCauseFunc, ppid int, every time.Duration, getppid func() int) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if getppid() != ppid {
			cancel(fmt.Errorf("%w (was pid %d)", errParentGone, ppid))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchNamespace ends the service once its named namespace is deleted (or is another): the lab
// was taken down without stopping it. A service not started in that namespace does not watch.
func watchNamespace(ctx context.Context, cancel context.CancelCauseFunc, ns string, every time.Duration, log *slog.Logger) {
	path := netnsDir + "/" + ns
	own, err := nsID("/proc/self/ns/net")
	if err != nil {
		log.Warn("not watching the namespace", "namespace", ns, "err", err)
		return
	}
	if id, err := nsID(path); err != nil || id != own {
		log.Warn("not watching the namespace: this process is not in it", "namespace", ns)
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if id, err := nsID(path); err != nil || id != own {
			cancel(fmt.Errorf("%w (%s)", errNamespaceGone, ns))
			return
		}
	}
}

// nsID identifies a namespace by its nsfs device and inode.
func nsID(path string) ([2]uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{uint64(st.Dev), st.Ino}, nil
}
