// Command quanyu is the single binary of Quanyu: the agent, replay of capture files, and (as they
// land) mix, analysis and the all-in-one `up`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/quanyu/quanyu/internal/version"
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"agent":    {"capture traffic on this host and send records to the sinks", runAgent},
	"replay":   {"run pcap/pcapng files through the capture pipeline, JSON Lines on stdout", runReplay},
	"mix":      {"run mix, the control plane that pushes subscriptions to agents", runMix},
	"sub":      {"apply, list, get, delete subscriptions in mix, and show their history", runResource("subscription")},
	"catalog":  {"apply, list, get, delete applications and their owners in mix", runResource("catalog")},
	"rule":     {"apply, list, get, delete alert rules in mix", runResource("rule")},
	"receiver": {"apply, list, get, delete alert receivers in mix", runResource("receiver")},
	"settings": {"apply and get prediction settings in mix", runResource("settings")},
	"agents":   {"list the agents mix knows and their state", runAgents},
	"analysis": {"run analysis: OTLP in, the live service graph and its API out", runAnalysis},
	"doctor":   {"check this host for what Quanyu needs, and say how to fix what is missing", runDoctor},
	"up":       {"run mix, analysis and an agent on this host (--lab: with a lab of test hosts)", runUp},
	"lab":      {"bring a lab of test hosts (namespaces with services and traffic) up or down", runLab},
	"version":  {"print the version", runVersion},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Quanyu watches the traffic on your hosts and turns it into records.")
	fmt.Fprintln(w, "\nUsage: quanyu <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `quanyu <command> -h` for a command's flags.")
}

// errUsage marks an error already explained to the user with the command's usage.
var errUsage = errors.New("usage")

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stdout)
		return
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "quanyu: unknown command %q\n\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if !errors.Is(err, errUsage) {
			fmt.Fprintf(os.Stderr, "quanyu %s: %v\n", os.Args[1], err)
		}
		os.Exit(1)
	}
}

func runVersion(_ []string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "quanyu", version.Version)
	return nil
}

// newLogger builds the process's logger: text or JSON on stderr, at the given level.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

// listFlag is a comma-separated or repeated list flag.
type listFlag struct {
	values []string
	set    bool
}

func (l *listFlag) String() string { return strings.Join(l.values, ",") }

func (l *listFlag) Set(v string) error {
	if !l.set {
		l.values, l.set = nil, true
	}
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			l.values = append(l.values, item)
		}
	}
	return nil
}
