package alert

import (
	"time"

	"github.com/quanyu/quanyu/analysis/internal/engine"
	"github.com/quanyu/quanyu/mix/api"
)

// States of an alert.
const (
	StatePending  = "pending"  // the condition holds, not yet for the rule's "for"
	StateFiring   = "firing"   // held for "for"; receivers were told
	StateResolved = "resolved" // no longer holds; receivers were told
)

// Alert is one rule's alert on one series, as the API gives it and the history keeps it.
type Alert struct {
	ID          string       `json:"id"`          // this occurrence: the fingerprint and when it became active
	Fingerprint string       `json:"fingerprint"` // the rule and the series; the same for every occurrence
	Rule        string       `json:"rule"`
	Kind        api.RuleKind `json:"kind"`
	Metric      api.Metric   `json:"metric"`
	Level       api.Level    `json:"level"`
	Severity    api.Severity `json:"severity"`
	State       string       `json:"state"`
	Series      Series       `json:"series"`
	// Value is the metric in the last bucket evaluated (per second, seconds, or a fraction).
	Value float64 `json:"value"`
	// Op and Threshold are a threshold rule's comparison; Band a forecast rule's band then.
	Op        api.Op   `json:"op,omitempty"`
	Threshold *float64 `json:"threshold,omitempty"`
	Band      *Band    `json:"band,omitempty"`
	For       string   `json:"for"`
	// ActiveAt is the start of the first bucket in which the condition held.
	ActiveAt    time.Time         `json:"active_at"`
	FiredAt     *time.Time        `json:"fired_at,omitempty"`
	ResolvedAt  *time.Time        `json:"resolved_at,omitempty"`
	UpdatedAt   time.Time         `json:"updated_at"`
	Summary     string            `json:"summary"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	// Client and Server are the two ends and their owners. For a node, endpoint, address or
	// port series the client is the busiest client of the series when the alert became active.
	Client   *End      `json:"client,omitempty"`
	Server   *End      `json:"server,omitempty"`
	Evidence *Evidence `json:"evidence,omitempty"`
}

// Series names what an alert or forecast is about.
type Series struct {
	Name      string `json:"name"`             // for people: "web → api", "api GET /orders", …
	Source    string `json:"source,omitempty"` // client node id (edge series)
	Target    string `json:"target,omitempty"` // server node id (edge, node, endpoint series)
	Address   string `json:"address,omitempty"`
	Transport string `json:"transport,omitempty"`
	Port      uint16 `json:"port,omitempty"`
	Method    string `json:"method,omitempty"`
	Path      string `json:"path,omitempty"`
}

// End is one end of an edge and who answers for it.
type End struct {
	Node    string `json:"node"` // graph node id
	App     string `json:"app,omitempty"`
	Owner   string `json:"owner,omitempty"`
	Team    string `json:"team,omitempty"`
	Contact string `json:"contact,omitempty"`
}

// Band is a forecast and its band when the alert was last evaluated.
type Band struct {
	Forecast   float64 `json:"forecast"`
	Lower      float64 `json:"lower"`
	Upper      float64 `json:"upper"`
	Deviations float64 `json:"deviations"`
}

// States of evidence.
const (
	EvidenceRequested = "requested" // mix was asked for a narrow subscription with frames
	EvidenceSeen      = "seen"      // a flow event matched it; the trace is being read
	EvidenceCaptured  = "captured"  // the flow trace is attached
	EvidenceNone      = "none"      // the subscription expired with nothing seen
	EvidenceFailed    = "failed"    // mix refused or could not be reached
)

// Evidence is a sampled flow trace captured for an alert after it fired.
type Evidence struct {
	Subscription string               `json:"subscription"`
	Expires      time.Time            `json:"expires"`
	State        string               `json:"state"`
	Error        string               `json:"error,omitempty"`
	CommunityID  string               `json:"community_id,omitempty"`
	Agent        string               `json:"agent,omitempty"`
	CapturedAt   *time.Time           `json:"captured_at,omitempty"`
	Trace        *engine.Conversation `json:"trace,omitempty"`
}

// Event is something that happened once: a new edge.
type Event struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"` // "new_edge"
	Time    time.Time `json:"time"` // the start of the bucket it was first seen in
	Series  Series    `json:"series"`
	Client  *End      `json:"client,omitempty"`
	Server  *End      `json:"server,omitempty"`
	Summary string    `json:"summary"`
}

// EventNewEdge is the kind of an event for an edge never seen before.
const EventNewEdge = "new_edge"

// ForecastPoint is one evaluated point of a forecast series; times are Unix milliseconds.
type ForecastPoint struct {
	T        int64   `json:"t"`
	Value    float64 `json:"value"`
	Forecast float64 `json:"forecast"`
	Lower    float64 `json:"lower"`
	Upper    float64 `json:"upper"`
	Ready    bool    `json:"ready"`
}

// ForecastSeries is the recent forecast of one series of a forecast rule.
type ForecastSeries struct {
	Rule   string          `json:"rule"`
	Metric api.Metric      `json:"metric"`
	Level  api.Level       `json:"level"`
	Series Series          `json:"series"`
	StepMs int64           `json:"step_ms"`
	Points []ForecastPoint `json:"points"`
}
