package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// mixPeer is analysis as mix's Watch stream sees it: each push carries the application catalog,
// the alert rules, the receivers and the prediction settings, each whole. A push that does not
// parse is refused as a whole (mix records the NACK) and what was applied before stays.
type mixPeer struct {
	id          string
	setCat      func(*api.Catalog)
	setRules    func([]api.Rule)
	setRecv     func([]api.Receiver)
	setSettings func(api.PredictionSettings)
}

func (p mixPeer) Hello() *mixpb.Hello { return &mixpb.Hello{Role: "analysis", Id: p.id} }

func (p mixPeer) Apply(_ context.Context, push *mixpb.WatchResponse) error {
	// Parse everything before applying anything.
	var cat *api.Catalog
	if len(push.CatalogJson) > 0 {
		entries, err := api.ParseCatalog(push.CatalogJson)
		if err != nil {
			return fmt.Errorf("parsing the pushed catalog: %w", err)
		}
		if cat, err = api.NewCatalog(entries); err != nil {
			return fmt.Errorf("indexing the pushed catalog: %w", err)
		}
	}
	var rules []api.Rule
	if len(push.RulesJson) > 0 {
		var err error
		if rules, err = api.ParseRules(push.RulesJson); err != nil {
			return fmt.Errorf("parsing the pushed rules: %w", err)
		}
	}
	var recv []api.Receiver
	if len(push.ReceiversJson) > 0 {
		var err error
		if recv, err = api.ParseReceivers(push.ReceiversJson); err != nil {
			return fmt.Errorf("parsing the pushed receivers: %w", err)
		}
	}
	settings := api.DefaultPredictionSettings()
	if len(push.SettingsJson) > 0 {
		var objs []json.RawMessage
		if err := json.Unmarshal(push.SettingsJson, &objs); err != nil {
			return fmt.Errorf("parsing the pushed prediction settings: %w", err)
		}
		switch len(objs) {
		case 0:
		case 1:
			s, err := api.ParsePredictionSettings(objs[0])
			if err != nil {
				return fmt.Errorf("parsing the pushed prediction settings: %w", err)
			}
			settings = s
		default:
			return errors.New("the push holds more than one set of prediction settings")
		}
	}
	if cat != nil && p.setCat != nil {
		p.setCat(cat)
	}
	// An empty list is a set of no rules (or receivers): apply it, since that is how the last
	// one is deleted. Pushes always carry every part.
	if p.setSettings != nil {
		p.setSettings(settings)
	}
	if p.setRules != nil {
		p.setRules(rules)
	}
	if p.setRecv != nil {
		p.setRecv(recv)
	}
	return nil
}

func (mixPeer) Status() *mixpb.Status { return nil }
