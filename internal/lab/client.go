package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The client is the lab's users. Requests arrive at random (exponential gaps) at a rate that
// swings around the base rate, base × (1 + 0.5·sin(2πt/period)), with ±15% noise, so the map
// shows traffic rising and falling over minutes. Each of a few users keeps its connection
// alive and opens a new one every few requests, as browsers do. What they ask for is a
// weighted mix: mostly pages and products, some orders, now and then a cancellation, the
// slow page, or a page that does not exist.

// rateAt is the client's rate (requests per second) at elapsed time since it started.
func rateAt(base float64, period, elapsed time.Duration) float64 {
	return base * (1 + 0.5*math.Sin(2*math.Pi*elapsed.Seconds()/period.Seconds()))
}

// clientRequest is one request a user makes.
type clientRequest struct {
	method, path string
	body         []byte
}

// requestKind is one kind of request and its weight in the mix.
type requestKind struct {
	name   string
	weight int
	make   func(u *user) clientRequest
}

var requestMix = []requestKind{
	{"home page", 20, func(*user) clientRequest { return clientRequest{method: "GET", path: "/"} }},
	{"product list", 22, func(*user) clientRequest { return clientRequest{method: "GET", path: "/products"} }},
	{"product", 25, func(u *user) clientRequest {
		return clientRequest{method: "GET", path: "/products/" + strconv.Itoa(1+u.rnd.IntN(len(products)))}
	}},
	{"missing product", 3, func(u *user) clientRequest {
		return clientRequest{method: "GET", path: "/products/" + strconv.Itoa(len(products)+1+u.rnd.IntN(20))}
	}},
	{"add to cart", 12, func(u *user) clientRequest {
		body, _ := json.Marshal(orderRequest{ProductID: 1 + u.rnd.IntN(len(products)), Quantity: 1 + u.rnd.IntN(3)})
		return clientRequest{method: "POST", path: "/cart", body: body}
	}},
	{"remove from cart", 5, func(u *user) clientRequest {
		id := "0-0" // nothing to remove yet: a 404, as a stale page would get
		if n := len(u.orders); n > 0 {
			i := u.rnd.IntN(n)
			id = u.orders[i]
			u.orders = append(u.orders[:i], u.orders[i+1:]...)
		}
		return clientRequest{method: "DELETE", path: "/cart/" + id}
	}},
	{"slow page", 4, func(*user) clientRequest { return clientRequest{method: "GET", path: "/slow"} }},
	{"missing page", 4, func(u *user) clientRequest {
		pages := []string{"/about", "/checkout/old", "/favicon.ico", "/wp-login.php"}
		return clientRequest{method: "GET", path: pages[u.rnd.IntN(len(pages))]}
	}},
}

// pick chooses a request kind by weight; r is in [0, 1).
func pick(r float64) requestKind {
	total := 0
	for _, k := range requestMix {
		total += k.weight
	}
	n := int(r * float64(total))
	for _, k := range requestMix {
		if n < k.weight {
			return k
		}
		n -= k.weight
	}
	return requestMix[len(requestMix)-1]
}

// user is one simulated user with its own connection.
type user struct {
	target       string
	transport    *http.Transport
	client       *http.Client
	rnd          *rand.Rand
	n            int
	newConnEvery int
	orders       []string // ids of orders it made and has not cancelled
}

// traffic is the client: its users, and counts of what they got.
type traffic struct {
	target       string
	base         float64
	period       time.Duration
	users        int
	newConnEvery int
	dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	log          *slog.Logger

	mu       sync.Mutex
	sent     int64
	byStatus map[string]int64 // "200", …, or "error"
}

func (t *traffic) newUser(seed uint64) *user {
	tr := &http.Transport{DialContext: t.dial, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second}
	return &user{target: strings.TrimRight(t.target, "/"), transport: tr, newConnEvery: t.newConnEvery,
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// do makes one request of the mix and returns its status ("error" when there is none).
func (u *user) do(ctx context.Context) string {
	u.n++
	if u.n%u.newConnEvery == 0 {
		u.transport.CloseIdleConnections()
	}
	cr := pick(u.rnd.Float64()).make(u)
	var body io.Reader
	if cr.body != nil {
		body = bytes.NewReader(cr.body)
	}
	req, err := http.NewRequestWithContext(ctx, cr.method, u.target+cr.path, body)
	if err != nil {
		return "error"
	}
	if cr.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return "error"
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if cr.method == "POST" && resp.StatusCode == http.StatusCreated {
		var o struct{ ID string }
		if json.Unmarshal(raw, &o) == nil && o.ID != "" && len(u.orders) < 100 {
			u.orders = append(u.orders, o.ID)
		}
	}
	return strconv.Itoa(resp.StatusCode)
}

func (t *traffic) count(status string) {
	t.mu.Lock()
	t.sent++
	t.byStatus[status]++
	t.mu.Unlock()
}

// run sends requests until ctx ends; now is the clock the rate follows.
func (t *traffic) run(ctx context.Context, now func() time.Time) {
	t.byStatus = map[string]int64{}
	start := now()
	// A token is one request to make. The channel holds one per user: when every user is busy
	// (web is slow) arrivals are dropped rather than queued, as impatient users leave.
	tokens := make(chan struct{}, t.users)
	var wg sync.WaitGroup
	for i := range t.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := t.newUser(uint64(time.Now().UnixNano()) + uint64(i))
			defer u.transport.CloseIdleConnections()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tokens:
					t.count(u.do(ctx))
				}
			}
		}()
	}
	report := time.NewTicker(30 * time.Second)
	defer report.Stop()
	for {
		rate := rateAt(t.base, t.period, now().Sub(start)) * (0.85 + 0.3*rand.Float64())
		gap := time.Duration(rand.ExpFloat64() / rate * float64(time.Second))
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-report.C:
			t.mu.Lock()
			t.log.Info("traffic", "sent", t.sent, "by_status", fmt.Sprint(t.byStatus), "rate", strconv.FormatFloat(rate, 'f', 1, 64))
			t.mu.Unlock()
			continue
		case <-time.After(gap):
		}
		select {
		case tokens <- struct{}{}:
		default:
		}
	}
}

func runClient(ctx context.Context, c serveConfig, log *slog.Logger) error {
	res := newResolver(c.dns, c.dnsTTL, c.dnsTCPEvery)
	t := &traffic{target: c.target, base: c.rate, period: c.period, users: c.users, newConnEvery: c.newConnEvery,
		dial: res.DialContext, log: log}
	log.Info("sending traffic", "target", c.target, "rate", c.rate, "users", c.users, "period", c.period)
	t.run(ctx, time.Now)
	return ctx.Err()
}
