package analysis

import (
	"context"
	"fmt"

	"github.com/quanyu/quanyu/mix/api"
	"github.com/quanyu/quanyu/mix/mixpb"
)

// mixPeer is analysis as mix's Watch stream sees it: it takes the application catalog from each
// push (rules and prediction settings come with the alerting work).
type mixPeer struct {
	id     string
	setCat func(*api.Catalog)
}

func (p mixPeer) Hello() *mixpb.Hello { return &mixpb.Hello{Role: "analysis", Id: p.id} }

func (p mixPeer) Apply(_ context.Context, push *mixpb.WatchResponse) error {
	if len(push.CatalogJson) == 0 {
		return nil // nothing for the catalog in this push
	}
	entries, err := api.ParseCatalog(push.CatalogJson)
	if err != nil {
		return fmt.Errorf("parsing the pushed catalog: %w", err)
	}
	cat, err := api.NewCatalog(entries)
	if err != nil {
		return fmt.Errorf("indexing the pushed catalog: %w", err)
	}
	p.setCat(cat)
	return nil
}

func (mixPeer) Status() *mixpb.Status { return nil }
