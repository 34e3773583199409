package analysis

import (
	"fmt"
	"net/http"
	"strings"
)

// Grafana's Node Graph panel reads two data frames, nodes and edges, with fields of fixed names
// (id, title, subtitle, mainstat, secondarystat, detail__*; id, source, target, mainstat,
// secondarystat). frame is Grafana's data-frame JSON: a schema of typed fields and the values
// column by column.
type frame struct {
	Schema frameSchema `json:"schema"`
	Data   frameData   `json:"data"`
}

type frameSchema struct {
	Name   string       `json:"name"`
	Meta   frameMeta    `json:"meta"`
	Fields []frameField `json:"fields"`
}

type frameMeta struct {
	PreferredVisualisationType string `json:"preferredVisualisationType"`
}

type frameField struct {
	Name   string            `json:"name"`
	Type   string            `json:"type"` // string or number
	Config map[string]string `json:"config,omitempty"`
}

type frameData struct {
	Values [][]any `json:"values"`
}

// column is one field of a frame being built.
type column struct {
	field  frameField
	values []any
}

func newFrame(name string, cols []*column) frame {
	f := frame{Schema: frameSchema{Name: name, Meta: frameMeta{PreferredVisualisationType: "nodeGraph"}}}
	for _, c := range cols {
		f.Schema.Fields = append(f.Schema.Fields, c.field)
		vals := c.values
		if vals == nil {
			vals = []any{}
		}
		f.Data.Values = append(f.Data.Values, vals)
	}
	return f
}

func (s *Server) getNodeGraph(w http.ResponseWriter, r *http.Request) {
	q, err := s.graphQuery(r)
	if err != nil {
		fail(w, err)
		return
	}
	g := s.eng.Graph(q)
	str := func(name, display string) *column {
		return &column{field: frameField{Name: name, Type: "string", Config: map[string]string{"displayName": display}}}
	}
	num := func(name, display, unit string) *column {
		c := &column{field: frameField{Name: name, Type: "number", Config: map[string]string{"displayName": display}}}
		if unit != "" {
			c.field.Config["unit"] = unit
		}
		return c
	}
	nID, nTitle, nSub, nMain, nSecond := str("id", "Id"), str("title", "Application"), str("subtitle", "Owner"),
		num("mainstat", "Requests", ""), num("secondarystat", "Bytes", "bytes")
	nKind, nTeam, nAddrs := str("detail__kind", "Kind"), str("detail__team", "Team"), str("detail__addresses", "Addresses")
	requests, bytes := map[string]uint64{}, map[string]uint64{}
	for _, e := range g.Edges {
		requests[e.Target] += e.Requests
		bytes[e.Source] += e.Bytes
		bytes[e.Target] += e.Bytes
	}
	for _, n := range g.Nodes {
		title := n.App
		if title == "" {
			title = n.ID
		}
		nID.values = append(nID.values, n.ID)
		nTitle.values = append(nTitle.values, title)
		nSub.values = append(nSub.values, n.Owner)
		nMain.values = append(nMain.values, requests[n.ID])
		nSecond.values = append(nSecond.values, bytes[n.ID])
		nKind.values = append(nKind.values, n.Kind)
		nTeam.values = append(nTeam.values, n.Team)
		nAddrs.values = append(nAddrs.values, strings.Join(n.Addresses, ", "))
	}
	eID, eSrc, eDst := str("id", "Id"), str("source", "Client"), str("target", "Server")
	eMain, eSecond := num("mainstat", "Requests", ""), num("secondarystat", "Latency p95", "ms")
	eProto, eErrs := str("detail__protocol", "Protocol"), num("detail__errors", "Errors", "")
	for _, e := range g.Edges {
		eID.values = append(eID.values, fmt.Sprintf("%s->%s/%s/%d", e.Source, e.Target, e.Transport, e.Port))
		eSrc.values = append(eSrc.values, e.Source)
		eDst.values = append(eDst.values, e.Target)
		eMain.values = append(eMain.values, e.Requests)
		eSecond.values = append(eSecond.values, e.LatencyP95Ms)
		eProto.values = append(eProto.values, e.Protocol)
		eErrs.values = append(eErrs.values, e.Errors)
	}
	writeJSON(w, map[string]any{"frames": []frame{
		newFrame("nodes", []*column{nID, nTitle, nSub, nMain, nSecond, nKind, nTeam, nAddrs}),
		newFrame("edges", []*column{eID, eSrc, eDst, eMain, eSecond, eProto, eErrs}),
	}})
}
