package analysis

import (
	"net/http"
	"slices"
	"strconv"
	"time"
)

// getAlerts answers GET /api/v1/alerts: the active alerts (pending and firing, from memory) and
// the history (alerts that fired, newest change first, from the store).
//
// Parameters: state (firing or resolved: the history in that state only), since (a duration:
// history changed within it; default 24h), limit (history entries, default 200, at most 1000).
func (s *Server) getAlerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && !slices.Contains([]string{"firing", "resolved"}, state) {
		apiError(w, http.StatusBadRequest, "state: "+strconv.Quote(state)+" is not firing or resolved")
		return
	}
	since, limit, err := historyParams(r)
	if err != nil {
		fail(w, err)
		return
	}
	hist, err := s.ev.History(r.Context(), state, since, limit)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]any{"active": s.ev.Active(), "history": hist})
}

// getAlert answers GET /api/v1/alerts/{id}: one alert, with its evidence.
func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a, ok, err := s.ev.Get(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	if !ok {
		apiError(w, http.StatusNotFound, "no alert "+strconv.Quote(id))
		return
	}
	writeJSON(w, a)
}

// getEvents answers GET /api/v1/events: events such as new edges, newest first; since and limit
// as for alerts.
func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	since, limit, err := historyParams(r)
	if err != nil {
		fail(w, err)
		return
	}
	evs, err := s.ev.Events(r.Context(), since, limit)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, map[string]any{"events": evs})
}

// getForecasts answers GET /api/v1/forecasts?target=NODE[&source=NODE]: the last 15 minutes of
// the forecast rules' series about an edge (source → target) or a node (target only): observed
// value, forecast and band per 10 s.
func (s *Server) getForecasts(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Query().Get("target")
	if target == "" {
		apiError(w, http.StatusBadRequest, "target: required (a node id such as app:api)")
		return
	}
	writeJSON(w, map[string]any{"forecasts": s.ev.Forecasts(r.URL.Query().Get("source"), target)})
}

// historyParams reads since (a duration back from now, default 24h) and limit (default 200, at
// most 1000), the parameters of every history listing.
func historyParams(r *http.Request) (since time.Time, limit int, err error) {
	d, err := duration(r, "since", 24*time.Hour)
	if err != nil {
		return time.Time{}, 0, err
	}
	if limit, err = intParam(r, "limit", 200, 1, 1000); err != nil {
		return time.Time{}, 0, err
	}
	return time.Now().Add(-d), limit, nil
}
