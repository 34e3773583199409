package mix

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/quanyu/quanyu/mix/internal/store"
	"github.com/quanyu/quanyu/mix/mixpb"
	"github.com/quanyu/quanyu/sdk"
)

// maxBody bounds an admin request's body.
const maxBody = 8 << 20

// The HTTP/JSON admin API, under /api/v1/: the same operations as the gRPC service.
//
//	GET    /api/v1/{kind}                 list (kind: subscriptions, catalog, rules, receivers, settings)
//	POST   /api/v1/{kind}                 apply a document (one object, an array, or {"<kind>": [...]})
//	GET    /api/v1/{kind}/{id}            one object
//	DELETE /api/v1/{kind}/{id}            delete it
//	GET    /api/v1/{kind}/{id}/history    its revisions, newest first (?limit=)
//	GET    /api/v1/history?kind=&limit=   every revision of a kind
//	GET    /api/v1/agents                 every agent and its state
//	GET    /healthz                       200 when serving
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	a, au := s.admin, s.auth
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /api/v1/agents", au.http("read", func(w http.ResponseWriter, _ *http.Request) {
		agents := s.hub.agents()
		out := make([]json.RawMessage, len(agents))
		for i, ag := range agents {
			out[i] = protoJSON(ag)
		}
		writeJSON(w, http.StatusOK, map[string]any{"agents": out})
	}))
	mux.HandleFunc("GET /api/v1/history", au.http("read", func(w http.ResponseWriter, r *http.Request) {
		revs, err := a.history(r.Context(), r.URL.Query().Get("kind"), r.URL.Query().Get("id"), limitOf(r))
		if err != nil {
			writeOpError(w, err)
			return
		}
		writeRevisions(w, revs)
	}))
	mux.HandleFunc("GET /api/v1/{kind}", au.http("read", func(w http.ResponseWriter, r *http.Request) {
		objs, err := a.list(r.Context(), principalOf(r.Context()), r.PathValue("kind"))
		if err != nil {
			writeOpError(w, err)
			return
		}
		out := make([]objectJSON, len(objs))
		for i, o := range objs {
			out[i] = toObjectJSON(o.Kind, o.Id, o.Json, o.Revision, o.UpdatedUnixNs, o.Author)
		}
		writeJSON(w, http.StatusOK, map[string]any{"objects": out})
	}))
	mux.HandleFunc("POST /api/v1/{kind}", au.http("write", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, err, nil)
			return
		}
		applied, err := a.apply(r.Context(), principalOf(r.Context()), r.PathValue("kind"), body)
		if err != nil {
			writeOpError(w, err)
			return
		}
		out := make([]map[string]any, len(applied))
		for i, ap := range applied {
			out[i] = map[string]any{"id": ap.Id, "revision": ap.Revision, "changed": ap.Changed}
		}
		writeJSON(w, http.StatusOK, map[string]any{"applied": out})
	}))
	mux.HandleFunc("GET /api/v1/{kind}/{id}", au.http("read", func(w http.ResponseWriter, r *http.Request) {
		o, err := a.get(r.Context(), principalOf(r.Context()), r.PathValue("kind"), r.PathValue("id"))
		if err != nil {
			writeOpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, toObjectJSON(o.Kind, o.Id, o.Json, o.Revision, o.UpdatedUnixNs, o.Author))
	}))
	mux.HandleFunc("DELETE /api/v1/{kind}/{id}", au.http("write", func(w http.ResponseWriter, r *http.Request) {
		rev, err := a.delete(r.Context(), principalOf(r.Context()), r.PathValue("kind"), r.PathValue("id"))
		if err != nil {
			writeOpError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"revision": rev})
	}))
	mux.HandleFunc("GET /api/v1/{kind}/{id}/history", au.http("read", func(w http.ResponseWriter, r *http.Request) {
		revs, err := a.history(r.Context(), r.PathValue("kind"), r.PathValue("id"), limitOf(r))
		if err != nil {
			writeOpError(w, err)
			return
		}
		writeRevisions(w, revs)
	}))
	return mux
}

func limitOf(r *http.Request) int {
	n, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	return n
}

type objectJSON struct {
	Kind     string          `json:"kind"`
	ID       string          `json:"id"`
	Revision int64           `json:"revision"`
	Updated  time.Time       `json:"updated"`
	Author   string          `json:"author"`
	Object   json.RawMessage `json:"object"`
}

func toObjectJSON(kind, id string, body []byte, rev, updated int64, author string) objectJSON {
	return objectJSON{Kind: kind, ID: id, Revision: rev, Updated: time.Unix(0, updated).UTC(), Author: author, Object: body}
}

func writeRevisions(w http.ResponseWriter, revs []*mixpb.Revision) {
	out := make([]map[string]any, len(revs))
	for i, r := range revs {
		m := map[string]any{"revision": r.Number, "time": time.Unix(0, r.TimeUnixNs).UTC(), "author": r.Author,
			"kind": r.Kind, "id": r.Id, "action": r.Action}
		if len(r.Json) > 0 {
			m["object"] = json.RawMessage(r.Json)
		}
		if len(r.BeforeJson) > 0 {
			m["before"] = json.RawMessage(r.BeforeJson)
		}
		out[i] = m
	}
	writeJSON(w, http.StatusOK, map[string]any{"revisions": out})
}

func protoJSON(m proto.Message) json.RawMessage {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return json.RawMessage(`null`)
	}
	return raw
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes {"error": "...", "fields": [{"path", "reason"}]}: a client (the UI) can put
// each reason next to the field it names.
func writeError(w http.ResponseWriter, code int, err error, fields []sdk.FieldError) {
	type field struct {
		Path   string `json:"path"`
		Reason string `json:"reason"`
	}
	out := struct {
		Error  string  `json:"error"`
		Fields []field `json:"fields,omitempty"`
	}{Error: err.Error()}
	for _, f := range fields {
		out.Fields = append(out.Fields, field{f.Path, f.Reason})
	}
	writeJSON(w, code, out)
}

func writeOpError(w http.ResponseWriter, err error) {
	var ve *sdk.ValidationError
	switch {
	case errors.As(err, &ve):
		writeError(w, http.StatusBadRequest, err, ve.Fields)
	case errors.Is(err, errInvalid):
		writeError(w, http.StatusBadRequest, err, nil)
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err, nil)
	default:
		writeError(w, http.StatusInternalServerError, err, nil)
	}
}
