package api

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/quanyu/quanyu/sdk"
)

// Limits of the application catalog.
const (
	MaxCatalogEntries = 10000 // applications in one catalog
	MaxMatchItems     = 1024  // match items of one application
	MaxMatchPorts     = 256   // ports and ranges of one match item
	MaxProcessLength  = 64    // characters of a process name
)

// Owner is who answers for an application: alerts on its edges go to the contact.
type Owner struct {
	Name string `json:"name"`           // required, at most MaxNameLength characters
	Team string `json:"team,omitempty"` // at most MaxNameLength characters
	// Contact is free text of at most MaxContactLength characters without control characters:
	// an email address, a URL, a phone number. It is not checked further, since any of those
	// forms is right somewhere.
	Contact string `json:"contact"`
}

// MatchItem is one way an endpoint is recognised as the application's. Every condition it
// names must hold; it names an address range, a process, or both.
type MatchItem struct {
	// Prefix is the address range (a full-length prefix for a single address); the zero
	// Prefix names no address.
	Prefix netip.Prefix
	// Ports narrow the match to these ports, sorted with overlapping and adjacent ranges
	// merged; nil means any port.
	Ports []sdk.PortRange
	// Process is the name of the process that owns the socket; "" names no process.
	Process string
}

// CatalogEntry is one application of the catalog.
type CatalogEntry struct {
	App         string            // 1 to 64 letters, digits, '.', '_', '-'
	Description string            // free text, newlines allowed, at most MaxTextLength characters
	Owner       Owner             // name and contact required
	Match       []MatchItem       // 1 to MaxMatchItems, sorted, without duplicates
	Labels      map[string]string // nil when empty
}

var catalogFields = []string{"app", "description", "owner", "match", "labels"}
var ownerFields = []string{"name", "team", "contact"}
var matchFields = []string{"cidr", "address", "ports", "process"}

// ParseCatalogEntry reads one application entry:
//
//	{"app": "web", "description": "…",
//	 "owner": {"name": "…", "team": "…", "contact": "…"},
//	 "match": [{"cidr": "10.77.0.0/24", "ports": ["80", "8080-8090"]},
//	           {"address": "2001:db8::10"}, {"process": "nginx"}],
//	 "labels": {"tier": "front"}}
//
// The result is normalised; otherwise the error is a *sdk.ValidationError naming every bad
// field.
func ParseCatalogEntry(data []byte) (CatalogEntry, error) {
	v, err := parseOne(data, parseCatalogEntry)
	return v.CatalogEntry, err
}

// ParseCatalog reads a catalog: one entry, a JSON array of them, or {"catalog": […]}. Apps must
// be unique, and no two applications may claim exactly the same match item (the same range,
// ports and process), since nothing could say which of them an endpoint belongs to. Partial
// overlaps are allowed: Catalog.Lookup resolves them by specificity.
func ParseCatalog(data []byte) ([]CatalogEntry, error) {
	parsed, err := parseSet(data, "catalog", "app", MaxCatalogEntries, parseCatalogEntry,
		func(c *parsedEntry) string { return c.App }, claimConflicts)
	if err != nil {
		return nil, err
	}
	out := make([]CatalogEntry, len(parsed))
	for i := range parsed {
		out[i] = parsed[i].CatalogEntry
	}
	return out, nil
}

// parsedEntry is an entry with, for each of its normalised match items, the index the item had
// in the document, so that errors found across entries name what the user wrote.
type parsedEntry struct {
	CatalogEntry
	from []int
}

// claimConflicts reports a match item claimed by two applications.
func claimConflicts(entries []parsedEntry, prefix string, e *errs) {
	type at struct{ entry, item int }
	claimed := map[string]at{}
	for i := range entries {
		for j := range entries[i].Match {
			k := entries[i].Match[j].key()
			// Two entries of one app are reported as a duplicate app, not item by item.
			if prev, dup := claimed[k]; dup && entries[prev.entry].App != entries[i].App {
				e.add(join(index(prefix, i), index("match", entries[i].from[j])),
					"the same match as %s.match[%d] (app %q)", index(prefix, prev.entry),
					entries[prev.entry].from[prev.item], entries[prev.entry].App)
				continue
			}
			if _, dup := claimed[k]; !dup {
				claimed[k] = at{i, j}
			}
		}
	}
}

// key identifies a match item by what it matches.
func (m *MatchItem) key() string {
	var b strings.Builder
	if m.Prefix.IsValid() {
		b.WriteString(m.Prefix.String())
	}
	b.WriteByte('|')
	for _, r := range m.Ports {
		b.WriteString(portRangeText(r))
		b.WriteByte(',')
	}
	b.WriteByte('|')
	b.WriteString(m.Process)
	return b.String()
}

func parseCatalogEntry(raw json.RawMessage, p string, e *errs) parsedEntry {
	var c parsedEntry
	fields, ok := fieldsOf(raw, p, "a catalog entry", catalogFields, e)
	if !ok {
		return c
	}
	c.App = id(fields, "app", p, true, e)
	c.Description = text(fields, "description", p, MaxTextLength, false, true, e)
	if v, ok := fields["owner"]; !ok {
		e.add(join(p, "owner"), "required ({\"name\": …, \"contact\": …})")
	} else if of, ok := fieldsOf(v, join(p, "owner"), "an owner", ownerFields, e); ok {
		op := join(p, "owner")
		c.Owner.Name = text(of, "name", op, MaxNameLength, true, false, e)
		c.Owner.Team = text(of, "team", op, MaxNameLength, false, false, e)
		c.Owner.Contact = text(of, "contact", op, MaxContactLength, true, false, e)
	}
	if v, ok := fields["match"]; !ok {
		e.add(join(p, "match"), "required: a list of at least one {\"cidr\"}, {\"address\"} or {\"process\"}")
	} else {
		c.Match, c.from = parseMatchList(v, join(p, "match"), e)
	}
	if v, ok := fields["labels"]; ok {
		c.Labels = stringMap(v, join(p, "labels"), false, checkMapKey, nil, e)
	}
	return c
}

// parseMatchList reads the match items, sorts them and drops duplicates; from gives each
// remaining item's index in the document.
func parseMatchList(raw json.RawMessage, p string, e *errs) (items []MatchItem, from []int) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		e.add(p, "want a list of match items")
		return nil, nil
	}
	switch {
	case len(list) == 0:
		e.add(p, "empty: an application needs at least one match item")
		return nil, nil
	case len(list) > MaxMatchItems:
		e.add(p, "%d entries, at most %d", len(list), MaxMatchItems)
		return nil, nil
	}
	type numbered struct {
		MatchItem
		from int
	}
	all := make([]numbered, 0, len(list))
	for i, item := range list {
		if m, ok := parseMatchItem(item, index(p, i), e); ok {
			all = append(all, numbered{m, i})
		}
	}
	// A stable sort keeps the first of equal items first, so a duplicate is named by its first
	// occurrence.
	slices.SortStableFunc(all, func(a, b numbered) int { return compareMatch(a.MatchItem, b.MatchItem) })
	all = slices.CompactFunc(all, func(a, b numbered) bool { return compareMatch(a.MatchItem, b.MatchItem) == 0 })
	items = make([]MatchItem, len(all))
	from = make([]int, len(all))
	for i, n := range all {
		items[i], from[i] = n.MatchItem, n.from
	}
	return items, from
}

func parseMatchItem(raw json.RawMessage, p string, e *errs) (MatchItem, bool) {
	var m MatchItem
	before := len(e.fields)
	fields, ok := fieldsOf(raw, p, "a match item", matchFields, e)
	if !ok {
		return m, false
	}
	_, hasCIDR := fields["cidr"]
	_, hasAddr := fields["address"]
	_, hasProc := fields["process"]
	switch {
	case hasCIDR && hasAddr:
		e.add(join(p, "address"), "give cidr or address, not both")
	case hasCIDR:
		if v, ok := str(fields["cidr"], join(p, "cidr"), e); ok {
			pfx, err := parsePrefix(v)
			if err != nil {
				e.add(join(p, "cidr"), "%v", err)
			}
			m.Prefix = pfx
		}
	case hasAddr:
		if v, ok := str(fields["address"], join(p, "address"), e); ok {
			a, err := parseAddr(v)
			if err != nil {
				e.add(join(p, "address"), "%v", err)
			} else {
				m.Prefix = netip.PrefixFrom(a, a.BitLen())
			}
		}
	}
	if hasProc {
		fp := join(p, "process")
		if v, ok := str(fields["process"], fp, e); ok {
			if reason := checkProcess(v); reason != "" {
				e.add(fp, "%q: %s", v, reason)
			} else {
				m.Process = v
			}
		}
	}
	if raw, ok := fields["ports"]; ok {
		// An empty or null list is any port, as an empty include list is in a subscription.
		eachString(raw, join(p, "ports"), MaxMatchPorts, e, func(v, path string) {
			r, err := parsePortRange(v)
			if err != nil {
				e.add(path, "%v", err)
				return
			}
			m.Ports = append(m.Ports, r)
		})
		if len(m.Ports) > 0 {
			m.Ports = mergeRanges(m.Ports)
		}
	}
	if !hasCIDR && !hasAddr && !hasProc {
		e.add(p, "names no cidr, address or process (ports alone would claim those ports on every host)")
	}
	return m, len(e.fields) == before
}

// checkProcess gives the reason a process name is refused, or "".
func checkProcess(v string) string {
	n := utf8.RuneCountInString(v)
	if v == "" || n > MaxProcessLength {
		return fmt.Sprintf("want 1 to %d characters", MaxProcessLength)
	}
	if !utf8.ValidString(v) {
		return "not valid UTF-8"
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Sprintf("unprintable character %U", r)
		}
	}
	if strings.TrimSpace(v) != v {
		return "begins or ends with a space"
	}
	return ""
}

// compareMatch orders match items by address range, then ports, then process.
func compareMatch(a, b MatchItem) int {
	if c := comparePrefix(a.Prefix, b.Prefix); c != 0 {
		return c
	}
	if c := slices.CompareFunc(a.Ports, b.Ports, func(x, y sdk.PortRange) int {
		if x.First != y.First {
			return int(x.First) - int(y.First)
		}
		return int(x.Last) - int(y.Last)
	}); c != 0 {
		return c
	}
	return strings.Compare(a.Process, b.Process)
}

func comparePrefix(a, b netip.Prefix) int {
	if a.IsValid() != b.IsValid() {
		if a.IsValid() {
			return 1
		}
		return -1
	}
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Matches reports whether an endpoint belongs to the application: whether any of its match
// items holds. A match item holds when every condition it names holds: the address is in its
// range (IPv4-mapped addresses are taken as IPv4, zones are ignored, and the zero Addr is in no
// range), the port is in one of its ports or ranges, and the process name is equal to its
// process, byte for byte ("" is the name of no process). Ranges are compared as the parser
// normalises them, so an entry built in code should be normalised first (NewCatalog does that).
// An item that names neither a range nor a process (which the parser never gives) holds for
// nothing, rather than for everything.
func (c *CatalogEntry) Matches(addr netip.Addr, port uint16, process string) bool {
	addr = endpointAddr(addr)
	for i := range c.Match {
		if c.Match[i].holds(addr, port, process) {
			return true
		}
	}
	return false
}

// holds is Matches for one item; addr is already unmapped and without a zone.
func (m *MatchItem) holds(addr netip.Addr, port uint16, process string) bool {
	if !m.Prefix.IsValid() && m.Process == "" {
		return false
	}
	if m.Prefix.IsValid() && !m.Prefix.Contains(addr) {
		return false
	}
	if m.Process != "" && m.Process != process {
		return false
	}
	return len(m.Ports) == 0 || portWidth(m.Ports, port) != 0
}

// portWidth is the number of ports in the range of ports that holds port, 0 when none does.
func portWidth(ports []sdk.PortRange, port uint16) uint32 {
	for _, r := range ports {
		if r.Contains(port) {
			return uint32(r.Last) - uint32(r.First) + 1
		}
	}
	return 0
}

type matchJSON struct {
	CIDR    string   `json:"cidr,omitempty"`
	Address string   `json:"address,omitempty"`
	Ports   []string `json:"ports,omitempty"`
	Process string   `json:"process,omitempty"`
}

// MarshalJSON writes a single address as "address" and a wider range as "cidr", ports as
// strings ("80", "8080-8090").
func (m MatchItem) MarshalJSON() ([]byte, error) {
	var j matchJSON
	if m.Prefix.IsValid() {
		if m.Prefix.IsSingleIP() {
			j.Address = m.Prefix.Addr().String()
		} else {
			j.CIDR = m.Prefix.String()
		}
	}
	for _, r := range m.Ports {
		j.Ports = append(j.Ports, portRangeText(r))
	}
	j.Process = m.Process
	return json.Marshal(j)
}

// UnmarshalJSON reads one match item as ParseCatalogEntry does.
func (m *MatchItem) UnmarshalJSON(data []byte) error {
	var e errs
	v, ok := parseMatchItem(data, "", &e)
	if !ok {
		return e.err()
	}
	*m = v
	return nil
}

type catalogJSON struct {
	App         string            `json:"app"`
	Description string            `json:"description,omitempty"`
	Owner       Owner             `json:"owner"`
	Match       []MatchItem       `json:"match"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// MarshalJSON writes the normalised entry; ParseCatalogEntry reads it back to an equal value.
func (c CatalogEntry) MarshalJSON() ([]byte, error) {
	return json.Marshal(catalogJSON(c))
}

// UnmarshalJSON is ParseCatalogEntry.
func (c *CatalogEntry) UnmarshalJSON(data []byte) error {
	v, err := ParseCatalogEntry(data)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Validate checks an entry built in code against the parser's rules by writing it out and
// reading it back.
func (c *CatalogEntry) Validate() error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding catalog entry %q: %w", c.App, err)
	}
	_, err = ParseCatalogEntry(data)
	return err
}

// ValidateCatalog checks a catalog built in code as ParseCatalog checks a document: each entry
// valid, apps unique, no match item claimed twice, within MaxCatalogEntries.
func ValidateCatalog(entries []CatalogEntry) error {
	_, err := validatedCatalog(entries)
	return err
}

func validatedCatalog(entries []CatalogEntry) ([]CatalogEntry, error) {
	data, err := marshalSet(entries)
	if err != nil {
		return nil, fmt.Errorf("encoding the catalog: %w", err)
	}
	return ParseCatalog(data)
}
