package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	// Named so, as the package main tests have a type lab of their own.
	qylab "github.com/quanyu/quanyu/internal/lab"
)

// runLab is `quanyu lab up|down|status|serve`: a lab of test hosts in network namespaces, with
// services and traffic, for demos and tests. The work is internal/lab's; this is its CLI.
func runLab(args []string, stdout, stderr io.Writer) error {
	usage := func() error {
		fmt.Fprintln(stderr, `Usage: quanyu lab up|down|status [flags]

Brings up a lab of test hosts on this machine: network namespaces on one bridge (qylab0,
10.177.0.0/24) running web, api, db, cache and dns services from this binary, and a client that
sends them traffic that rises and falls. An agent capturing on the lab's interfaces (qylab-*)
sees a small company's service map. Needs root.

  up      bring the lab up (and with --mix, write its applications and owners into mix's catalog)
  down    stop the lab's services and remove everything of it, even after a crash
  status  whether the lab is up, its hosts and whether each answers

Run `+"`quanyu lab <up|down|status> -h`"+` for the flags.`)
		return errUsage
	}
	if len(args) == 0 {
		return usage()
	}
	switch args[0] {
	case "up":
		return labUp(args[1:], stdout, stderr)
	case "down":
		return labDown(args[1:], stdout, stderr)
	case "status":
		return labStatus(args[1:], stdout, stderr)
	case "serve":
		// Started by `lab up` in a host's namespace, not by people.
		return qylab.Serve(context.Background(), args[1:], stderr)
	case "-h", "--help", "help":
		_ = usage()
		return flag.ErrHelp
	}
	return usage()
}

// labFlags are the flags naming a lab, shared by up, down and status.
type labFlags struct {
	fs       *flag.FlagSet
	prefix   string
	cidr     string
	stateDir string
}

func newLabFlags(verb string, stderr io.Writer) *labFlags {
	f := &labFlags{fs: flag.NewFlagSet("quanyu lab "+verb, flag.ContinueOnError)}
	f.fs.SetOutput(stderr)
	f.fs.StringVar(&f.prefix, "prefix", qylab.DefaultPrefix, "`prefix` of every name the lab makes (bridge PREFIX0, namespaces and links PREFIX-HOST)")
	f.fs.StringVar(&f.stateDir, "state-dir", "", "`directory` of the lab's state file and logs (default: the state directory of quanyu lab)")
	return f
}

// parse reads the verb's flags (no arguments are taken) and gives the lab's options.
func (f *labFlags) parse(args []string) (qylab.Options, error) {
	if err := f.fs.Parse(args); err != nil {
		return qylab.Options{}, err
	}
	if f.fs.NArg() > 0 {
		return qylab.Options{}, fmt.Errorf("unexpected argument %q", f.fs.Arg(0))
	}
	o := qylab.Options{Prefix: f.prefix, StateDir: f.stateDir}
	if f.cidr != "" {
		p, err := netip.ParsePrefix(f.cidr)
		if err != nil {
			return o, fmt.Errorf("--cidr %q: %w", f.cidr, err)
		}
		o.CIDR = p
	}
	return o, nil
}

func labUp(args []string, stdout, stderr io.Writer) error {
	f := newLabFlags("up", stderr)
	f.fs.StringVar(&f.cidr, "cidr", qylab.DefaultCIDR, "the IPv4 `range` the lab owns (/24 or wider); the bridge takes .1")
	rate := f.fs.Float64("client-rate", 5, "the client's base `rate` in requests per second; it swings ±50% over five minutes")
	users := f.fs.Int("client-users", 4, "the client's concurrent `users`")
	webErr := f.fs.Float64("web-error-ratio", 0.01, "share of requests web fails on purpose (HTTP 500)")
	apiErr := f.fs.Float64("api-error-ratio", 0.02, "share of requests api fails on purpose (HTTP 500)")
	logLevel := f.fs.String("log-level", "info", "debug, info, warn or error")
	c := &clientFlags{}
	f.fs.StringVar(&c.addr, "mix", "", "mix's gRPC `address`: write the lab's applications and owners into its catalog")
	f.fs.StringVar(&c.token, "token", "", "bearer `token` for mix ($QUANYU_CLI_TOKEN)")
	f.fs.StringVar(&c.ca, "ca", "", "CA `file` of mix's certificate (TLS)")
	f.fs.StringVar(&c.cert, "cert", "", "client certificate `file` (mTLS)")
	f.fs.StringVar(&c.key, "key", "", "client key `file` (mTLS)")
	f.fs.StringVar(&c.serverName, "server-name", "", "the `name` in mix's certificate")
	o, err := f.parse(args)
	if err != nil {
		return err
	}
	o.ClientRate, o.ClientUsers = *rate, *users
	o.WebErrorRatio, o.APIErrorRatio = webErr, apiErr
	o.Detach = true // the services outlive this command, until `lab down`
	o.Log = newLogger(stderr, *logLevel, "text").With("component", "lab")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := qylab.Up(ctx, o)
	if err != nil {
		return err
	}
	printLab(stdout, l, f)
	if c.addr == "" {
		return nil
	}
	if err := labCatalog(l, c, stdout, stderr); err != nil {
		return fmt.Errorf("the lab is up, but writing its catalog into mix failed (retry with `quanyu catalog apply -f %s`): %w",
			labCatalogFile(l), err)
	}
	return nil
}

// labCatalogFile is where `lab up` leaves the lab's catalog document, beside its state file.
func labCatalogFile(l *qylab.Lab) string {
	return strings.TrimSuffix(l.StateFile(), ".json") + "-catalog.json"
}

// labCatalog writes the lab's applications into mix as `quanyu catalog apply -f FILE` does, by
// the same code, so the lab's catalog goes the way a person's does (and shows in mix's history).
func labCatalog(l *qylab.Lab, c *clientFlags, stdout, stderr io.Writer) error {
	doc, err := l.CatalogJSON()
	if err != nil {
		return err
	}
	path := labCatalogFile(l)
	if err := os.WriteFile(path, append(doc, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the lab's catalog document: %w", err)
	}
	args := []string{"apply", "-f", path, "-mix", c.addr}
	for _, kv := range [][2]string{{"-token", c.token}, {"-ca", c.ca}, {"-cert", c.cert}, {"-key", c.key}, {"-server-name", c.serverName}} {
		if kv[1] != "" {
			args = append(args, kv[0], kv[1])
		}
	}
	return runResource("catalog")(args, stdout, stderr)
}

func printLab(w io.Writer, l *qylab.Lab, f *labFlags) {
	fmt.Fprintf(w, "The lab is up: %d hosts on bridge %s.\n\n", len(l.Hosts()), l.Bridge())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tNAME\tSERVICE\tPID\tINTERFACE")
	for _, h := range l.Hosts() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", h.Name, h.Addr, labDNSName(h), h.Service, h.PID, h.Veth)
	}
	_ = tw.Flush()
	prefix := strings.TrimSuffix(l.Bridge(), "0")
	fmt.Fprintf(w, "\nCapture on: %s (quanyu agent --nic '%s-*')\n", strings.Join(l.Interfaces(), ", "), prefix)
	fmt.Fprintf(w, "State: %s (the services' logs are beside it)\n", l.StateFile())
	down := "quanyu lab down"
	if f.prefix != qylab.DefaultPrefix {
		down += " --prefix " + f.prefix
	}
	if f.stateDir != "" {
		down += " --state-dir " + f.stateDir
	}
	fmt.Fprintf(w, "Take it down with: %s\n", down)
}

func labDNSName(h qylab.Host) string {
	if h.Port == 0 {
		return "-"
	}
	return h.Name + ".lab"
}

func labDown(args []string, stdout, stderr io.Writer) error {
	f := newLabFlags("down", stderr)
	logLevel := f.fs.String("log-level", "warn", "debug, info, warn or error")
	o, err := f.parse(args)
	if err != nil {
		return err
	}
	o.Log = newLogger(stderr, *logLevel, "text").With("component", "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	removed, err := qylab.Down(ctx, o)
	if len(removed) == 0 && err == nil {
		fmt.Fprintf(stdout, "Nothing to remove: no lab with prefix %s.\n", f.prefix)
		return nil
	}
	for _, r := range removed {
		fmt.Fprintln(stdout, "removed", r)
	}
	if err != nil {
		return fmt.Errorf("taking the lab down (run it again; what is left is named above): %w", err)
	}
	fmt.Fprintln(stdout, "The lab is down.")
	return nil
}

func labStatus(args []string, stdout, stderr io.Writer) error {
	f := newLabFlags("status", stderr)
	output := f.fs.String("o", "table", "output: table or json")
	o, err := f.parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := qylab.Status(ctx, o)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	switch {
	case len(st.Hosts) == 0 && len(st.Leftovers) == 0:
		fmt.Fprintf(stdout, "The lab (prefix %s) is down.\n", st.Prefix)
		return nil
	case len(st.Hosts) == 0:
		fmt.Fprintf(stdout, "The lab (prefix %s) is down, but some of it is left (run `quanyu lab down --prefix %s`):\n  %s\n",
			st.Prefix, st.Prefix, strings.Join(st.Leftovers, "\n  "))
		return nil
	case st.Up:
		fmt.Fprintf(stdout, "The lab (prefix %s) is up: bridge %s, %s.\n\n", st.Prefix, st.Bridge, st.BridgeAddr)
	default:
		fmt.Fprintf(stdout, "The lab (prefix %s) is not healthy: see below, or run `quanyu lab down --prefix %s` and up again.\n\n", st.Prefix, st.Prefix)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tADDRESS\tSERVICE\tPID\tRUNNING\tANSWERS\tPROBLEM")
	for _, h := range st.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", h.Name, h.Addr, h.Service, h.PID, yesNo(h.Running), yesNo(h.Answers), orDash(h.Problem))
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "\nCapture on: %s\n", strings.Join(st.Interfaces, ", "))
	if len(st.Leftovers) > 0 {
		fmt.Fprintf(stdout, "Also found: %s\n", strings.Join(st.Leftovers, ", "))
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
