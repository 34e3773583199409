package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// readyTimeout bounds how long Up waits for every service to answer.
const readyTimeout = 30 * time.Second

// Up brings a lab up: the bridge, a namespace per host, and the services, and waits until each
// answers. Whatever fails, Up removes what it made before returning the error. A lab with the
// same prefix must not exist (ErrExists); ErrNotRoot and ErrNoIP say what is missing.
func Up(ctx context.Context, o Options) (*Lab, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if o.Exe == "" {
		if o.Exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("finding this executable, which the services run from: %w", err)
		}
	}
	n := names{o.Prefix}
	if left := leftovers(n); len(left) > 0 {
		return nil, fmt.Errorf("%w: found %s; run `quanyu lab down --prefix %s` first", ErrExists, strings.Join(left, ", "), o.Prefix)
	}
	if procs := labProcesses(o.Prefix); len(procs) > 0 {
		return nil, fmt.Errorf("%w: its services run (pid %d …); run `quanyu lab down --prefix %s` first", ErrExists, procs[0].pid, o.Prefix)
	}
	if err := checkOverlap(o.CIDR); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the lab's state directory: %w", err)
	}
	gateway := addrAt(o.CIDR, 1)
	l := &Lab{opts: o, state: state{
		Prefix: o.Prefix, CIDR: o.CIDR, Bridge: n.bridge(), BridgeAddr: netip.PrefixFrom(gateway, o.CIDR.Bits()),
		Exe: o.Exe, Detached: o.Detach, Created: time.Now().UTC(), Hosts: plan(o),
	}}
	// The state file is written before anything is made, so that even an Up killed half-way
	// leaves a record; Down searches by prefix as well.
	if err := writeState(o.StateDir, l.state); err != nil {
		return nil, err
	}
	if err := l.bringUp(ctx); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, derr := Down(dctx, o); derr != nil {
			err = errors.Join(err, fmt.Errorf("removing the half-made lab: %w", derr))
		}
		return nil, err
	}
	return l, nil
}

func (l *Lab) bringUp(ctx context.Context) error {
	o, log := l.opts, l.opts.Log
	if err := createBridge(ctx, l.state.Bridge, l.state.BridgeAddr); err != nil {
		return err
	}
	log.Info("bridge created", "bridge", l.state.Bridge, "addr", l.state.BridgeAddr)
	for _, h := range l.state.Hosts {
		if err := createHost(ctx, h, l.state.Bridge, o.CIDR.Bits(), l.state.BridgeAddr.Addr()); err != nil {
			return err
		}
		log.Info("host created", "host", h.Name, "namespace", h.Namespace, "addr", h.Addr)
	}
	for i := range l.state.Hosts {
		h := &l.state.Hosts[i]
		cmd, err := startServe(o, *h, l.serveArgs(*h))
		if err != nil {
			return err
		}
		h.PID = cmd.Process.Pid
		if p, ok := readProc(h.PID); ok {
			h.Start = p.start
		}
		if o.Detach {
			_ = cmd.Process.Release()
		} else {
			go func() { _ = cmd.Wait() }() // reaps it, so a stopped service leaves no zombie
		}
		if err := writeState(o.StateDir, l.state); err != nil {
			return err
		}
		// Each service waits for the ones it calls: api seeds db before it listens, and
		// everything resolves names through dns.
		if err := waitReady(ctx, *h); err != nil {
			return withFirewallHint(err, o.CIDR)
		}
		log.Info("service started", "host", h.Name, "pid", h.PID, "service", h.Service)
	}
	return nil
}

// serveArgs are the flags of a host's service.
func (l *Lab) serveArgs(h Host) []string {
	o := l.opts
	dns := ""
	for _, x := range l.state.Hosts {
		if x.Name == "dns" {
			dns = netip.AddrPortFrom(x.Addr, 53).String()
		}
	}
	args := []string{"--dns", dns}
	switch h.Name {
	case "dns":
		for _, x := range l.state.Hosts {
			if x.Port != 0 {
				args = append(args, "--record", x.Name+"="+x.Addr.String())
			}
		}
	case "web":
		args = append(args, "--error-ratio", strconv.FormatFloat(*o.WebErrorRatio, 'g', -1, 64))
	case "api":
		args = append(args, "--error-ratio", strconv.FormatFloat(*o.APIErrorRatio, 'g', -1, 64))
	case "client":
		args = append(args, "--rate", strconv.FormatFloat(o.ClientRate, 'g', -1, 64), "--users", strconv.Itoa(o.ClientUsers))
	}
	return args
}

// waitReady waits until a host's service answers (the client: until it runs a moment), and
// otherwise returns an error with the end of the service's log.
func waitReady(ctx context.Context, h Host) error {
	deadline := time.Now().Add(readyTimeout)
	if h.Port == 0 {
		deadline = time.Now().Add(time.Second)
	}
	for {
		if !running(h.PID, h.Start) {
			return fmt.Errorf("%s's service exited: %s", h.Name, logTail(h.Log))
		}
		if h.Port != 0 && probe(ctx, h, time.Second) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			if h.Port == 0 {
				return nil
			}
			return fmt.Errorf("%s's service does not answer on %s after %s: %s", h.Name, netip.AddrPortFrom(h.Addr, uint16(h.Port)), readyTimeout, logTail(h.Log))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s's service: %w", h.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// withFirewallHint adds to a service failing to start the likeliest cause when the host's
// firewall sees bridged traffic (br_netfilter loaded, as Docker does): a FORWARD policy of DROP
// then cuts the lab's hosts off from each other while the host still reaches each of them.
func withFirewallHint(err error, cidr netip.Prefix) error {
	raw, rerr := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if rerr != nil || strings.TrimSpace(string(raw)) != "1" {
		return err
	}
	return fmt.Errorf("%w\n(bridged traffic passes this host's firewall here, net.bridge.bridge-nf-call-iptables=1: "+
		"if its FORWARD chain drops packets, let the lab's through: iptables -I FORWARD -s %s -d %s -j ACCEPT)", err, cidr, cidr)
}

// logTail is the end of a log file, for an error message.
func logTail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) == 0 {
		return "its log " + path + " is empty"
	}
	const max = 1500
	if len(raw) > max {
		raw = raw[len(raw)-max:]
	}
	return "its log " + path + " ends:\n" + strings.TrimSpace(string(raw))
}
