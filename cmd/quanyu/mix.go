package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/quanyu/quanyu/mix"
	"github.com/quanyu/quanyu/mix/mixpb"
)

func runMix(args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("quanyu mix", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "YAML configuration `file`")
	listen := fs.String("listen", "", "gRPC `address` (default 127.0.0.1:7070)")
	httpListen := fs.String("http-listen", "", "HTTP admin API `address` (default 127.0.0.1:7071)")
	dataDir := fs.String("data-dir", "", "`directory` of the database (default: the user's state directory)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: quanyu mix [flags]\n\nRuns mix, the control plane: it stores subscriptions, the application catalog, alert rules and\nprediction settings, and pushes them to agents and analysis.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	flags := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			flags["listen"] = *listen
		case "http-listen":
			flags["http_listen"] = *httpListen
		case "data-dir":
			flags["data_dir"] = *dataDir
		}
	})
	cfg, err := mix.Load(mix.LoadOptions{File: *config, Flags: flags})
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := mix.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// clientFlags are the flags of every command that talks to mix.
type clientFlags struct {
	fs                         *flag.FlagSet
	addr, token, ca, cert, key string
	serverName, output, file   string
	limit                      int
}

func newClientFlags(name string, stderr io.Writer) *clientFlags {
	c := &clientFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.addr, "mix", envOr("QUANYU_CLI_MIX", "127.0.0.1:7070"), "mix's gRPC `address` ($QUANYU_CLI_MIX)")
	c.fs.StringVar(&c.token, "token", os.Getenv("QUANYU_CLI_TOKEN"), "bearer `token` ($QUANYU_CLI_TOKEN)")
	c.fs.StringVar(&c.ca, "ca", "", "CA `file` of mix's certificate (TLS)")
	c.fs.StringVar(&c.cert, "cert", "", "client certificate `file` (mTLS)")
	c.fs.StringVar(&c.key, "key", "", "client key `file` (mTLS)")
	c.fs.StringVar(&c.serverName, "server-name", "", "the `name` in mix's certificate")
	c.fs.StringVar(&c.output, "o", "table", "output: table or json")
	return c
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (c *clientFlags) connect() (mixpb.MixClient, func(), error) {
	conn, err := mix.Dial(mix.DialOptions{Address: c.addr, Token: c.token, CA: c.ca, Cert: c.cert, Key: c.key, ServerName: c.serverName})
	if err != nil {
		return nil, nil, err
	}
	return mixpb.NewMixClient(conn), func() { _ = conn.Close() }, nil
}

// callError makes a gRPC error readable: the status message, which names the fields.
func callError(what string, err error) error {
	if st, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s: %s", what, st.Code(), st.Message())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// runResource is `quanyu <sub|catalog|rule|receiver|settings> <apply|list|get|delete|history>`.
func runResource(kind string) func(args []string, stdout, stderr io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		usage := func() error {
			fmt.Fprintf(stderr, "Usage: quanyu %s apply -f FILE | list | get ID | delete ID | history [ID]  [flags: -mix ADDR -token T -o json]\n", cliName[kind])
			return errUsage
		}
		if len(args) == 0 {
			return usage()
		}
		verb := args[0]
		c := newClientFlags("quanyu "+cliName[kind]+" "+verb, stderr)
		c.fs.StringVar(&c.file, "f", "", "`file` to apply (- for standard input)")
		c.fs.IntVar(&c.limit, "limit", 0, "at most this many revisions (history)")
		positional, err := parseInterspersed(c.fs, args[1:])
		if err != nil {
			return err
		}
		client, closeConn, err := c.connect()
		if err != nil {
			return err
		}
		defer closeConn()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		id := ""
		if len(positional) > 0 {
			id = positional[0]
		}
		switch verb {
		case "apply":
			if c.file == "" {
				return usage()
			}
			var body []byte
			if c.file == "-" {
				body, err = io.ReadAll(os.Stdin)
			} else {
				body, err = os.ReadFile(c.file)
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", c.file, err)
			}
			resp, err := client.Apply(ctx, &mixpb.ApplyRequest{Kind: kind, Json: body})
			if err != nil {
				return callError("applying", err)
			}
			if c.output == "json" {
				return printJSON(stdout, resp)
			}
			for _, a := range resp.Applied {
				what := "unchanged"
				if a.Changed {
					what = "applied"
				}
				fmt.Fprintf(stdout, "%s %s %s: revision %d\n", kind, a.Id, what, a.Revision)
			}
		case "list":
			resp, err := client.List(ctx, &mixpb.ListRequest{Kind: kind})
			if err != nil {
				return callError("listing", err)
			}
			if c.output == "json" {
				return printJSON(stdout, resp)
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tREVISION\tUPDATED\tAUTHOR\tOBJECT")
			for _, o := range resp.Objects {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", o.Id, o.Revision, time.Unix(0, o.UpdatedUnixNs).UTC().Format(time.RFC3339),
					o.Author, abbreviate(string(o.Json), 80))
			}
			return tw.Flush()
		case "get":
			if id == "" {
				return usage()
			}
			o, err := client.Get(ctx, &mixpb.GetRequest{Kind: kind, Id: id})
			if err != nil {
				return callError("getting "+id, err)
			}
			var pretty any
			_ = json.Unmarshal(o.Json, &pretty)
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(pretty)
		case "delete":
			if id == "" {
				return usage()
			}
			resp, err := client.Delete(ctx, &mixpb.DeleteRequest{Kind: kind, Id: id})
			if err != nil {
				return callError("deleting "+id, err)
			}
			fmt.Fprintf(stdout, "%s %s deleted: revision %d\n", kind, id, resp.Revision)
		case "history":
			resp, err := client.History(ctx, &mixpb.HistoryRequest{Kind: kind, Id: id, Limit: int32(c.limit)})
			if err != nil {
				return callError("reading history", err)
			}
			if c.output == "json" {
				return printJSON(stdout, resp)
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "REVISION\tTIME\tAUTHOR\tACTION\tID\tOBJECT")
			for _, r := range resp.Revisions {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.Number, time.Unix(0, r.TimeUnixNs).UTC().Format(time.RFC3339),
					r.Author, r.Action, r.Id, abbreviate(string(r.Json), 60))
			}
			return tw.Flush()
		default:
			return usage()
		}
		return nil
	}
}

var cliName = map[string]string{"subscription": "sub", "catalog": "catalog", "rule": "rule", "receiver": "receiver", "settings": "settings"}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func printJSON(w io.Writer, m proto.Message) error {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(raw))
	return err
}

// parseInterspersed parses flags that may come before or after the positional arguments
// (`quanyu sub get web --mix host:7070`), which the flag package alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// runAgents is `quanyu agents`: every agent mix knows and its state.
func runAgents(args []string, stdout, stderr io.Writer) error {
	c := newClientFlags("quanyu agents", stderr)
	if _, err := parseInterspersed(c.fs, args); err != nil {
		return err
	}
	client, closeConn, err := c.connect()
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := client.Agents(ctx, &mixpb.AgentsRequest{})
	if err != nil {
		return callError("listing agents", err)
	}
	if c.output == "json" {
		return printJSON(stdout, resp)
	}
	sort.Slice(resp.Agents, func(i, j int) bool { return resp.Agents[i].Id < resp.Agents[j].Id })
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tHOST\tSTATUS\tAPPLIED\tBACKEND\tLAST SEEN\tLAST ERROR")
	for _, a := range resp.Agents {
		seen := "-"
		if a.LastSeenUnixNs > 0 {
			seen = time.Since(time.Unix(0, a.LastSeenUnixNs)).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Id, a.Host, a.Status, orDash(a.AppliedVersion), orDash(a.Backend),
			seen, abbreviate(strings.ReplaceAll(a.LastError, "\n", " "), 80))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
