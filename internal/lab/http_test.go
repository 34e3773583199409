package lab

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// shop is web, api, db and cache wired together in-process on loopback ports.
type shop struct {
	web, api          *httptest.Server
	webStats          *httpStats
	apiStats          *httpStats
	stopDB, stopCache func()
}

func newShop(t *testing.T, webErr, apiErr float64) *shop {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	dbAddr, _, stopDB := startKV(t, newKVStore(0))
	cacheAddr, _, stopCache := startKV(t, newKVStore(20*time.Second))
	a := &apiServer{db: newKVClient(dbAddr, dialDirect), cache: newKVClient(cacheAddr, dialDirect), log: log}
	t.Cleanup(a.db.close)
	t.Cleanup(a.cache.close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.seed(ctx); err != nil {
		t.Fatal(err)
	}
	s := &shop{webStats: newHTTPStats(), apiStats: newHTTPStats(), stopDB: stopDB, stopCache: stopCache}
	s.api = httptest.NewServer(apiHandler(a, s.apiStats, 0, apiErr))
	t.Cleanup(s.api.Close)
	w := &web{api: s.api.URL, client: &http.Client{}, log: log}
	s.web = httptest.NewServer(webHandler(w, s.webStats, 0, webErr))
	t.Cleanup(s.web.Close)
	return s
}

func call(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestShop walks web's routes and checks what each answers, and that web and api count them.
func TestShop(t *testing.T) {
	s := newShop(t, 0, 0)
	for _, tc := range []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"GET", "/", "", 200, "Lab storefront"},
		{"GET", "/products", "", 200, "Burr grinder"},
		{"GET", "/products/3", "", 200, `"name":"Burr grinder"`},
		{"GET", "/products/99", "", 404, "no product 99"},
		{"GET", "/products/x", "", 400, "positive number"},
		{"GET", "/about", "", 404, ""},
		{"POST", "/cart", `{"product_id": 2, "quantity": 1}`, 201, `"id"`},
		{"POST", "/cart", `{"product_id": 99, "quantity": 1}`, 404, "no product 99"},
		{"POST", "/cart", `{"product_id": 2}`, 400, "quantity"},
		{"POST", "/cart", `nonsense`, 400, "product_id"},
		{"DELETE", "/cart/0-0", "", 404, "no order"},
		{"GET", "/slow", "", 200, "slow page"},
	} {
		status, body := call(t, tc.method, s.web.URL+tc.path, tc.body)
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, status, body, tc.status, tc.contains)
		}
	}

	// An order made can be cancelled once.
	_, body := call(t, "POST", s.web.URL+"/cart", `{"product_id": 5, "quantity": 2}`)
	var o struct{ ID string }
	if err := json.Unmarshal([]byte(body), &o); err != nil || o.ID == "" {
		t.Fatalf("POST /cart answered %q", body)
	}
	if status, _ := call(t, "DELETE", s.web.URL+"/cart/"+o.ID, ""); status != 204 {
		t.Errorf("cancelling order %s: %d, want 204", o.ID, status)
	}
	if status, _ := call(t, "DELETE", s.web.URL+"/cart/"+o.ID, ""); status != 404 {
		t.Errorf("cancelling order %s again: %d, want 404", o.ID, status)
	}

	var st StatsSnapshot
	_, body = call(t, "GET", s.web.URL+"/stats", "")
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Requests != 15 || st.ByStatus["201"] != 2 || st.ByRoute["GET /products/{id}"] != 3 || st.ByRoute["no route"] != 1 {
		t.Errorf("web's stats: %+v", st)
	}
	if api := s.apiStats.snapshot(); api.ByRoute["POST /v1/orders"] != 5 || api.ByStatus["204"] != 1 {
		t.Errorf("api's stats: %+v", api)
	}
}

// TestShopFailures: the error ratios, and what each backend failing does.
func TestShopFailures(t *testing.T) {
	t.Run("web's own errors", func(t *testing.T) {
		s := newShop(t, 1, 0)
		if status, body := call(t, "GET", s.web.URL+"/", ""); status != 500 || !strings.Contains(body, "error-ratio") {
			t.Errorf("GET /: %d %q, want 500", status, body)
		}
		if status, _ := call(t, "GET", s.web.URL+"/healthz", ""); status != 200 {
			t.Errorf("GET /healthz fails with the error ratio: %d", status)
		}
	})
	t.Run("api's errors are web's 502", func(t *testing.T) {
		s := newShop(t, 0, 1)
		if status, _ := call(t, "GET", s.web.URL+"/products/1", ""); status != 502 {
			t.Errorf("GET /products/1: %d, want 502", status)
		}
		if status, _ := call(t, "GET", s.web.URL+"/", ""); status != 200 {
			t.Errorf("GET / does not call api, yet: %d", status)
		}
	})
	t.Run("db down is 502", func(t *testing.T) {
		s := newShop(t, 0, 0)
		s.stopDB()
		if status, _ := call(t, "GET", s.api.URL+"/v1/products/7", ""); status != 502 {
			t.Errorf("api GET /v1/products/7: %d, want 502", status)
		}
		if status, _ := call(t, "POST", s.web.URL+"/cart", `{"product_id": 1, "quantity": 1}`); status != 502 {
			t.Errorf("web POST /cart: %d, want 502", status)
		}
	})
	t.Run("cache down is not an error", func(t *testing.T) {
		s := newShop(t, 0, 0)
		s.stopCache()
		if status, _ := call(t, "GET", s.web.URL+"/products", ""); status != 200 {
			t.Errorf("GET /products: %d, want 200 from db", status)
		}
	})
	t.Run("api unreachable is 502", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + ln.Addr().String()
		_ = ln.Close()
		w := &web{api: dead, client: &http.Client{}, log: slog.New(slog.DiscardHandler)}
		srv := httptest.NewServer(webHandler(w, newHTTPStats(), 0, 0))
		defer srv.Close()
		if status, _ := call(t, "GET", srv.URL+"/products", ""); status != 502 {
			t.Errorf("GET /products: %d, want 502", status)
		}
	})
}
