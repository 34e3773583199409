package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// StatusReport is what Status found.
type StatusReport struct {
	Prefix    string `json:"prefix"`
	StateFile string `json:"state_file"`
	// Up: the state file and the bridge are there and every service runs and answers.
	Up         bool         `json:"up"`
	Bridge     string       `json:"bridge,omitempty"`
	BridgeAddr netip.Prefix `json:"bridge_addr,omitzero"`
	Hosts      []HostStatus `json:"hosts,omitempty"`
	// Interfaces are the host-side veth ends an agent should capture on.
	Interfaces []string `json:"interfaces,omitempty"`
	// Leftovers are things of the lab found without a state file that records them, or
	// without the rest of the lab: Down removes them.
	Leftovers []string `json:"leftovers,omitempty"`
}

// HostStatus is one host and whether its service runs and answers.
type HostStatus struct {
	Host
	Running bool `json:"running"`
	// Answers: a TCP connect to its port (dns: a query over UDP) from this host succeeded; the
	// client serves nothing, so for it Answers is Running.
	Answers bool   `json:"answers"`
	Problem string `json:"problem,omitempty"`
}

// Status says whether the lab is up, and how each host is. It changes nothing and needs no
// root for what it reads, though without root it cannot see every namespace's name.
func Status(ctx context.Context, o Options) (*StatusReport, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	n := names{o.Prefix}
	r := &StatusReport{Prefix: o.Prefix, StateFile: stateFile(o.StateDir, o.Prefix)}
	s, ok, err := readState(o.StateDir, o.Prefix)
	if err != nil {
		return nil, err
	}
	if !ok {
		r.Leftovers = leftovers(n)
		for _, p := range labProcesses(o.Prefix) {
			r.Leftovers = append(r.Leftovers, fmt.Sprintf("process %d (%s)", p.pid, serveRole(p, s)))
		}
		return r, nil
	}
	r.Bridge, r.BridgeAddr = s.Bridge, s.BridgeAddr
	r.Up = !linkGone(s.Bridge)
	if !r.Up {
		r.Leftovers = leftovers(n)
	}
	for _, h := range s.Hosts {
		hs := HostStatus{Host: h, Running: h.PID != 0 && running(h.PID, h.Start)}
		switch {
		case !hs.Running:
			hs.Problem = "not running"
		case h.Port == 0:
			hs.Answers = true
		default:
			if err := probe(ctx, h, 2*time.Second); err != nil {
				hs.Problem = err.Error()
			} else {
				hs.Answers = true
			}
		}
		r.Up = r.Up && hs.Answers
		r.Hosts = append(r.Hosts, hs)
		r.Interfaces = append(r.Interfaces, h.Veth)
	}
	return r, nil
}

// probe checks from this host that a host's service answers: a TCP connect, or for dns an
// answer to a query over UDP.
func probe(ctx context.Context, h Host, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := net.JoinHostPort(h.Addr.String(), strconv.Itoa(h.Port))
	var d net.Dialer
	if h.Name != "dns" {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	id := uint16(rand.IntN(1 << 16))
	q, err := buildQuery(id, "dns.lab.", dnsmessage.TypeA)
	if err != nil {
		return err
	}
	if _, err := c.Write(q); err != nil {
		return err
	}
	buf := make([]byte, 512)
	for {
		m, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("no answer to a DNS query: %w", err)
		}
		var p dnsmessage.Parser
		if hdr, err := p.Start(buf[:m]); err == nil && hdr.ID == id && hdr.Response {
			return nil
		}
	}
}

// buildQuery is a DNS query for one name and type, recursion desired, as a host's resolver sends.
func buildQuery(id uint16, name string, typ dnsmessage.Type) ([]byte, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("building a DNS query for %q: %w", name, err)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(dnsmessage.Question{Name: n, Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		return nil, err
	}
	return b.Finish()
}
