package mix

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/mix/internal/store"
	"github.com/quanyu/quanyu/sdk"
)

// kind is one sort of resource mix holds: how a document of it is parsed and validated into
// canonical objects by id, and who is told when it changes.
type kind struct {
	name   store.Kind
	plural string // the admin API's path segment
	// parse validates a document (one object, an array, or {"<plural>": [...]}) and returns each
	// object's canonical JSON by id, in the document's order.
	parse func(data []byte) ([]parsed, error)
	// forAgents: a change concerns agents (their subscription sets); otherwise analysis.
	forAgents bool
	// whole, when set, checks the kind's objects as a whole after a change (the catalog: no two
	// applications may claim the same addresses); it gets every object's JSON.
	whole func(all []json.RawMessage) error
}

type parsed struct {
	id   string
	body json.RawMessage
}

var kinds = map[string]*kind{}

// kindByName finds a kind by its name or its plural.
func kindByName(name string) (*kind, error) {
	if k, ok := kinds[name]; ok {
		return k, nil
	}
	for _, k := range kinds {
		if k.plural == name {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: no kind of resource %q (subscription, catalog, rule, receiver, settings)", errInvalid, name)
}

func register(k *kind) { kinds[string(k.name)] = k }

// errInvalid marks a request that is wrong in itself (HTTP 400, gRPC InvalidArgument).
var errInvalid = errors.New("invalid request")

// each parses a document with a kind's parser and returns each object's canonical JSON.
func each[T any](parse func([]byte) ([]T, error), id func(*T) string) func([]byte) ([]parsed, error) {
	return func(data []byte) ([]parsed, error) {
		objs, err := parse(data)
		if err != nil {
			return nil, err
		}
		out := make([]parsed, 0, len(objs))
		for i := range objs {
			body, err := json.Marshal(objs[i])
			if err != nil {
				return nil, fmt.Errorf("encoding %q: %w", id(&objs[i]), err)
			}
			out = append(out, parsed{id: id(&objs[i]), body: body})
		}
		return out, nil
	}
}

// predictionID is the id of the one prediction settings object.
const predictionID = "prediction"

func init() {
	register(&kind{name: "catalog", plural: "catalog",
		parse: each(api.ParseCatalog, func(e *api.CatalogEntry) string { return e.App }),
		whole: func(all []json.RawMessage) error {
			raw, err := json.Marshal(all)
			if err != nil {
				return err
			}
			_, err = api.ParseCatalog(raw)
			return err
		}})
	register(&kind{name: "rule", plural: "rules", parse: each(api.ParseRules, func(r *api.Rule) string { return r.ID })})
	register(&kind{name: "receiver", plural: "receivers", parse: each(api.ParseReceivers, func(r *api.Receiver) string { return r.ID })})
	register(&kind{name: "settings", plural: "settings", parse: func(data []byte) ([]parsed, error) {
		s, err := api.ParsePredictionSettings(data)
		if err != nil {
			return nil, err
		}
		body, err := json.Marshal(s)
		if err != nil {
			return nil, err
		}
		return []parsed{{id: predictionID, body: body}}, nil
	}})
	register(&kind{name: "subscription", plural: "subscriptions", forAgents: true, parse: func(data []byte) ([]parsed, error) {
		subs, err := sdk.ParseSubscriptions(data)
		if err != nil {
			return nil, err
		}
		out := make([]parsed, 0, len(subs))
		for _, s := range subs {
			body, err := json.Marshal(s)
			if err != nil {
				return nil, fmt.Errorf("encoding subscription %q: %w", s.ID, err)
			}
			out = append(out, parsed{id: s.ID, body: body})
		}
		return out, nil
	}})
}
