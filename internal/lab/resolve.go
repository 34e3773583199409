package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// resolver looks the lab's names up through the lab's DNS server and keeps each answer for a
// while, as a host's caching resolver would: DNS shows on the map as a steady share of
// the traffic, not one query per request.
type resolver struct {
	r   *net.Resolver
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	cache map[string]cachedAddr
	n     atomic.Int64 // queries sent, to pick the ones that go over TCP
}

type cachedAddr struct {
	addr    netip.Addr
	expires time.Time
}

// newResolver asks server (ip:port; "" for the system's resolver) for names, over TCP for every
// tcpEvery-th query (0: only when an answer is truncated, as usual).
func newResolver(server string, ttl time.Duration, tcpEvery int) *resolver {
	res := &resolver{ttl: ttl, now: time.Now, cache: map[string]cachedAddr{}}
	res.r = &net.Resolver{PreferGo: true}
	if server != "" {
		res.r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			// The Go resolver speaks DNS over TCP (length-prefixed) to any conn that is not a
			// PacketConn, so choosing the network here is all it takes.
			if n := res.n.Add(1); tcpEvery > 0 && n%int64(tcpEvery) == 0 {
				network = "tcp"
			}
			d := net.Dialer{Timeout: 2 * time.Second}
			return d.DialContext(ctx, network, server)
		}
	}
	return res
}

// lookup returns the IPv4 address of host, from the cache while the answer is fresh.
func (r *resolver) lookup(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.cache[host]
	r.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.addr, nil
	}
	// A trailing dot keeps the resolver from trying the host's search domains first.
	name := host
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	addrs, err := r.r.LookupNetIP(ctx, "ip4", name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("looking up %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("looking up %s: no address", host)
	}
	r.mu.Lock()
	r.cache[host] = cachedAddr{addrs[0].Unmap(), now.Add(r.ttl)}
	r.mu.Unlock()
	return addrs[0].Unmap(), nil
}

// DialContext dials host:port, looking host up first; it fits http.Transport.DialContext.
func (r *resolver) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	a, err := r.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
}
