package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
)

// Down stops the lab's services and removes its namespaces, links, bridge and state file: what
// the state file records, and anything else with the lab's prefix, so that it works after a
// crash or without the state file. It returns what it removed, for people ("namespace
// qylab-web"); nothing removed is no error, so Down is idempotent. The services' logs stay in
// the state directory. Only Prefix, StateDir and Log of o matter.
func Down(ctx context.Context, o Options) ([]string, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	n := names{o.Prefix}
	var removed []string
	var errs []error
	s, haveState, err := readState(o.StateDir, o.Prefix)
	if err != nil {
		// A damaged state file must not keep the lab up: the prefix finds the rest.
		o.Log.Warn("ignoring the lab's state file", "err", err)
		errs = append(errs, err)
	}

	// The services first: a namespace outlives its deletion while a process is in it.
	procs := labProcesses(o.Prefix)
	if haveState {
		for _, h := range s.Hosts {
			if h.PID != 0 && running(h.PID, h.Start) && !slices.ContainsFunc(procs, func(p proc) bool { return p.pid == h.PID }) {
				procs = append(procs, proc{pid: h.PID, start: h.Start})
			}
		}
	}
	for _, p := range stopProcesses(ctx, procs) {
		removed = append(removed, fmt.Sprintf("process %d (%s)", p.pid, serveRole(p, s)))
	}
	for _, p := range procs {
		if running(p.pid, p.start) {
			errs = append(errs, fmt.Errorf("process %d of the lab is still running after SIGKILL", p.pid))
		}
	}

	// Deleting the host-side end of a veth pair deletes the pair, even when some other process
	// still holds the namespace of the inside end; the bridge goes last.
	namespaces := labNamespaces(n)
	links := labLinks(n)
	if haveState {
		for _, h := range s.Hosts {
			if !slices.Contains(namespaces, h.Namespace) && exists(netnsDir+"/"+h.Namespace) {
				namespaces = append(namespaces, h.Namespace)
			}
		}
	}
	for _, l := range links {
		if err := ip(ctx, "link", "del", l); err != nil {
			if linkGone(l) {
				continue // taken with its peer or namespace meanwhile
			}
			errs = append(errs, fmt.Errorf("deleting link %s: %w", l, err))
			continue
		}
		kind := "link"
		if l == n.bridge() {
			kind = "bridge"
		}
		removed = append(removed, kind+" "+l)
	}
	for _, ns := range namespaces {
		if err := ip(ctx, "netns", "del", ns); err != nil {
			errs = append(errs, fmt.Errorf("deleting namespace %s: %w", ns, err))
			continue
		}
		removed = append(removed, "namespace "+ns)
	}
	// A veth whose namespace went first vanishes with it; one deleted above is already counted.
	for _, l := range labLinks(n) {
		if err := ip(ctx, "link", "del", l); err != nil && !linkGone(l) {
			errs = append(errs, fmt.Errorf("deleting link %s: %w", l, err))
		}
	}

	path := stateFile(o.StateDir, o.Prefix)
	if err := os.Remove(path); err == nil {
		removed = append(removed, "state file "+path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("removing the lab's state file: %w", err))
	}
	for _, r := range removed {
		o.Log.Info("removed", "what", r)
	}
	return removed, errors.Join(errs...)
}

// serveRole names the service a process ran, from its command line or the state file.
func serveRole(p proc, s state) string {
	for i, a := range p.cmdline {
		if a == "serve" && i > 0 && p.cmdline[i-1] == "lab" && i+1 < len(p.cmdline) {
			return p.cmdline[i+1]
		}
	}
	for _, h := range s.Hosts {
		if h.PID == p.pid {
			return h.Name
		}
	}
	return "lab service"
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func linkGone(name string) bool {
	_, err := net.InterfaceByName(name)
	return err != nil
}
