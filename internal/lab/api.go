package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// products are what the lab's shop sells; api writes them into db when it starts.
var products = []product{
	{1, "Espresso cup", 8.5}, {2, "Pour-over kettle", 42}, {3, "Burr grinder", 129},
	{4, "Paper filters", 4.2}, {5, "Coffee scale", 24.9}, {6, "Milk jug", 15},
	{7, "Tamper", 19.5}, {8, "Cold brew jar", 27}, {9, "Bean canister", 17.8},
	{10, "Travel mug", 21}, {11, "Descaler", 9.9}, {12, "Knock box", 31},
}

type product struct {
	ID    int     `json:"id"`
	Name  string  `json:"name"`
	Price float64 `json:"price"`
}

// orderRequest is the body of POST /v1/orders (and of web's POST /cart).
type orderRequest struct {
	ProductID int `json:"product_id"`
	Quantity  int `json:"quantity"`
}

// apiServer is the lab's API. Products are read through the cache, falling back to db, so the
// map shows api → cache on every read and api → db on misses; orders go to db. When db fails
// the request fails with 502; when the cache fails api carries on with db, as a cache is there
// to be fast, not to be needed.
type apiServer struct {
	db, cache *kvClient
	log       *slog.Logger
	orders    atomic.Int64
}

func apiHandler(a *apiServer, st *httpStats, latency time.Duration, errorRatio float64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/products", a.listProducts)
	mux.HandleFunc("GET /v1/products/{id}", a.getProduct)
	mux.HandleFunc("POST /v1/orders", a.createOrder)
	mux.HandleFunc("DELETE /v1/orders/{id}", a.deleteOrder)
	return instrument(mux, st, latency, errorRatio, rand.Float64)
}

// seed writes the products into db, retrying until db answers or ctx ends: api listens only
// once its data is there.
func (a *apiServer) seed(ctx context.Context) error {
	ids := make([]string, len(products))
	for {
		err := func() error {
			for i, p := range products {
				raw, _ := json.Marshal(p)
				if err := a.db.Set(ctx, "product:"+strconv.Itoa(p.ID), string(raw)); err != nil {
					return err
				}
				ids[i] = strconv.Itoa(p.ID)
			}
			return a.db.Set(ctx, "products", strings.Join(ids, ","))
		}()
		if err == nil {
			return nil
		}
		a.log.Warn("seeding db, retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// readThrough reads a key from the cache, or from db (then filling the cache). errKVNotFound
// means db has no such key.
func (a *apiServer) readThrough(ctx context.Context, key string) (string, error) {
	v, err := a.cache.Get(ctx, key)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, errKVNotFound) {
		a.log.Warn("cache failed, reading db", "key", key, "err", err)
	}
	v, err = a.db.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if err := a.cache.Set(ctx, key, v); err != nil {
		a.log.Warn("cache failed, not caching", "key", key, "err", err)
	}
	return v, nil
}

func (a *apiServer) backendFailed(w http.ResponseWriter, what string, err error) {
	a.log.Warn("backend failed", "what", what, "err", err)
	http.Error(w, what+": "+err.Error(), http.StatusBadGateway)
}

func (a *apiServer) listProducts(w http.ResponseWriter, r *http.Request) {
	idList, err := a.readThrough(r.Context(), "products")
	if err != nil {
		a.backendFailed(w, "reading the product list", err)
		return
	}
	// One read per product, as an ORM would do it: the map shows api's many small calls.
	out := []json.RawMessage{}
	for _, id := range strings.Split(idList, ",") {
		v, err := a.readThrough(r.Context(), "product:"+id)
		if errors.Is(err, errKVNotFound) {
			continue
		}
		if err != nil {
			a.backendFailed(w, "reading product "+id, err)
			return
		}
		out = append(out, json.RawMessage(v))
	}
	writeJSON(w, http.StatusOK, map[string]any{"products": out})
}

func (a *apiServer) getProduct(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 1 {
		http.Error(w, "the product id is a positive number", http.StatusBadRequest)
		return
	}
	v, err := a.readThrough(r.Context(), "product:"+strconv.Itoa(id))
	if errors.Is(err, errKVNotFound) {
		http.Error(w, fmt.Sprintf("no product %d", id), http.StatusNotFound)
		return
	}
	if err != nil {
		a.backendFailed(w, "reading product", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(v + "\n"))
}

func (a *apiServer) createOrder(w http.ResponseWriter, r *http.Request) {
	var req orderRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		http.Error(w, "want {\"product_id\": N, \"quantity\": N}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Quantity < 1 || req.Quantity > 100 {
		http.Error(w, "quantity: want 1 to 100", http.StatusBadRequest)
		return
	}
	if _, err := a.readThrough(r.Context(), "product:"+strconv.Itoa(req.ProductID)); errors.Is(err, errKVNotFound) {
		http.Error(w, fmt.Sprintf("no product %d", req.ProductID), http.StatusNotFound)
		return
	} else if err != nil {
		a.backendFailed(w, "reading product", err)
		return
	}
	id := fmt.Sprintf("%d-%d", time.Now().Unix(), a.orders.Add(1))
	raw, _ := json.Marshal(map[string]any{"id": id, "product_id": req.ProductID, "quantity": req.Quantity})
	if err := a.db.Set(r.Context(), "order:"+id, string(raw)); err != nil {
		a.backendFailed(w, "storing the order", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

func (a *apiServer) deleteOrder(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	err := a.db.Del(r.Context(), "order:"+id)
	switch {
	case errors.Is(err, errKVNotFound):
		http.Error(w, "no order "+id, http.StatusNotFound)
	case err != nil:
		a.backendFailed(w, "deleting the order", err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

func runAPI(ctx context.Context, c serveConfig, log *slog.Logger) error {
	res := newResolver(c.dns, c.dnsTTL, c.dnsTCPEvery)
	a := &apiServer{db: newKVClient(c.db, res.DialContext), cache: newKVClient(c.cache, res.DialContext), log: log}
	defer a.db.close()
	defer a.cache.close()
	if err := a.seed(ctx); err != nil {
		return err
	}
	log.Info("db seeded", "products", len(products))
	return serveHTTP(ctx, c.listen, apiHandler(a, newHTTPStats(), c.latency, c.errorRatio), log)
}
