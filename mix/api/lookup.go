package api

import (
	"net/netip"
	"slices"
	"strings"
)

// Catalog finds the application of an endpoint. Where several match items hold for an endpoint
// (CatalogEntry.Matches says when one holds), the most specific wins:
//
//  1. an item with an address range over one without (a process-only item);
//  2. among those with ranges, the longest prefix;
//  3. then an item with ports over one without, and among items with ports, the one whose
//     range that holds the port is narrower ("8080" over "8000-8999");
//  4. then an item that also names the process over one that does not;
//  5. and last, as a tie-break that does not depend on the order entries were given in, the
//     application whose id sorts first.
//
// Lookups walk the prefix lengths present, longest first, with one map probe each, so they cost
// at most 33 (IPv4) or 129 (IPv6) probes whatever the catalog's size, and allocate nothing. A
// Catalog is immutable and safe for concurrent use.
type Catalog struct {
	entries []CatalogEntry // sorted by app
	byApp   map[string]int
	v4, v6  []lengthTable // longest prefix first
	procs   map[string][]itemRef
}

// lengthTable holds the items whose ranges have one prefix length, by range.
type lengthTable struct {
	bits  int
	items map[netip.Prefix][]itemRef
}

type itemRef struct {
	entry int32 // index in Catalog.entries, so lower is the app that sorts first
	item  int32
}

// NewCatalog builds a catalog from entries, which must pass ValidateCatalog; the catalog keeps
// its own normalised copy, so later changes to entries do not reach it.
func NewCatalog(entries []CatalogEntry) (*Catalog, error) {
	norm, err := validatedCatalog(entries)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(norm, func(a, b CatalogEntry) int { return strings.Compare(a.App, b.App) })
	c := &Catalog{entries: norm, byApp: make(map[string]int, len(norm)), procs: map[string][]itemRef{}}
	v4 := map[int]map[netip.Prefix][]itemRef{}
	v6 := map[int]map[netip.Prefix][]itemRef{}
	for i := range norm {
		c.byApp[norm[i].App] = i
		for j, m := range norm[i].Match {
			ref := itemRef{int32(i), int32(j)}
			if !m.Prefix.IsValid() {
				c.procs[m.Process] = append(c.procs[m.Process], ref)
				continue
			}
			tables := v6
			if m.Prefix.Addr().Is4() {
				tables = v4
			}
			t := tables[m.Prefix.Bits()]
			if t == nil {
				t = map[netip.Prefix][]itemRef{}
				tables[m.Prefix.Bits()] = t
			}
			t[m.Prefix] = append(t[m.Prefix], ref)
		}
	}
	c.v4, c.v6 = lengthTables(v4), lengthTables(v6)
	return c, nil
}

func lengthTables(byBits map[int]map[netip.Prefix][]itemRef) []lengthTable {
	out := make([]lengthTable, 0, len(byBits))
	for bits, items := range byBits {
		out = append(out, lengthTable{bits, items})
	}
	slices.SortFunc(out, func(a, b lengthTable) int { return b.bits - a.bits })
	return out
}

// Lookup gives the application of an endpoint: its address (IPv4-mapped taken as IPv4; the zero
// Addr when unknown), its port, and the name of the process that owns it ("" when unknown).
// The entry returned belongs to the catalog and must not be changed.
func (c *Catalog) Lookup(addr netip.Addr, port uint16, process string) (*CatalogEntry, bool) {
	addr = endpointAddr(addr)
	if addr.IsValid() {
		tables := c.v6
		if addr.Is4() {
			tables = c.v4
		}
		for i := range tables {
			pfx, err := addr.Prefix(tables[i].bits)
			if err != nil {
				continue
			}
			if refs, ok := tables[i].items[pfx]; ok {
				if e := c.best(refs, addr, port, process); e >= 0 {
					return &c.entries[e], true
				}
			}
		}
	}
	if process != "" {
		if e := c.best(c.procs[process], addr, port, process); e >= 0 {
			return &c.entries[e], true
		}
	}
	return nil, false
}

// best gives the entry of the most specific item of refs that holds (steps 3 to 5 of the
// order; the caller has done 1 and 2), or -1.
func (c *Catalog) best(refs []itemRef, addr netip.Addr, port uint16, process string) int {
	bestEntry := -1
	var bestWidth uint32
	bestProc := false
	for _, r := range refs {
		m := &c.entries[r.entry].Match[r.item]
		if !m.holds(addr, port, process) {
			continue
		}
		width := uint32(1 << 17) // wider than any port range: an item without ports
		if len(m.Ports) > 0 {
			width = portWidth(m.Ports, port)
		}
		proc := m.Process != ""
		better := bestEntry < 0 ||
			width < bestWidth ||
			width == bestWidth && proc && !bestProc ||
			width == bestWidth && proc == bestProc && int(r.entry) < bestEntry
		if better {
			bestEntry, bestWidth, bestProc = int(r.entry), width, proc
		}
	}
	return bestEntry
}

// Entry gives the entry of an application by its id.
func (c *Catalog) Entry(app string) (*CatalogEntry, bool) {
	i, ok := c.byApp[app]
	if !ok {
		return nil, false
	}
	return &c.entries[i], true
}

// Len is the number of applications in the catalog.
func (c *Catalog) Len() int { return len(c.entries) }
