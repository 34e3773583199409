package lab

import (
	"net/netip"

	"github.com/quanyu/quanyu/mix/api"
)

// catalog builds one application per host, named as the host, matching the host's address; the
// owners are made up but look like a small company's, so that alerts and the map's owner
// column have something to show.
func catalog(prefix string, hosts []Host) []api.CatalogEntry {
	out := make([]api.CatalogEntry, 0, len(hosts))
	for _, h := range hosts {
		r, ok := roleByName(h.Name)
		if !ok {
			continue
		}
		out = append(out, api.CatalogEntry{
			App:         h.Name,
			Description: r.owner.desc,
			Owner:       api.Owner{Name: r.owner.name, Team: r.owner.team, Contact: r.owner.contact},
			Match:       []api.MatchItem{{Prefix: netip.PrefixFrom(h.Addr, 32)}},
			Labels:      map[string]string{"lab": prefix, "service": h.Name},
		})
	}
	return out
}
