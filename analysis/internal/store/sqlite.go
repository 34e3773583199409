package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quanyu/quanyu/internal/sqlitedb"
	"github.com/quanyu/quanyu/sdk"
	_ "modernc.org/sqlite" // the database/sql driver "sqlite"
)

// FileName is the name of the database file inside the data directory.
const FileName = "analysis.db"

const (
	busyTimeout = 5 * time.Second
	maxConns    = 4
)

// SQLite is the [Store] kept in an embedded SQLite database (modernc.org/sqlite, pure Go), in
// WAL mode so that queries run beside the writer.
type SQLite struct {
	db   *sql.DB
	path string
	// wsem serialises writers inside this process: SQLite has one writer at a time anyway, and
	// queueing here is cheaper than spinning in its busy handler.
	wsem      chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens the store in dir (file analysis.db), creating the directory (mode 0700) and
// the database (mode 0600) on first start, and brings the schema up to date.
func OpenSQLite(dir string) (*SQLite, error) {
	abs, err := sqlitedb.CreateFile(dir, FileName)
	if err != nil {
		return nil, fmt.Errorf("opening analysis store: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("opening analysis store %s: %w", abs, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	ctx := context.Background()
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening analysis store %s: %w", abs, err)
	}
	if !strings.EqualFold(mode, "wal") {
		_ = db.Close()
		return nil, fmt.Errorf("opening analysis store %s: journal mode is %q, could not switch to WAL", abs, mode)
	}
	if err := sqlitedb.Migrate(ctx, db, "analysis", migrations); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("opening analysis store %s: %w", abs, err)
	}
	return &SQLite{db: db, path: abs, wsem: make(chan struct{}, 1)}, nil
}

// dsn builds the connection string. NORMAL synchronous commits are enough in WAL mode for data
// that is itself a summary of traffic: a power cut loses at most the last commits, never the
// file.
func dsn(path string) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path)}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	// Statement journals and sorts in memory: on disk they cost a write system call per page.
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Set("_txlock", "immediate")
	u.RawQuery = q.Encode()
	return u.String()
}

// Path is the database file's absolute path, for logs.
func (s *SQLite) Path() string { return s.path }

// Close closes the database; it is safe to call more than once.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		// Take the writer's seat so that no write is cut in half.
		s.wsem <- struct{}{}
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("closing analysis store %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wsem }()
	if s.closed.Load() {
		return ErrClosed
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	return nil
}

// WriteRollups implements [Store].
func (s *SQLite) WriteRollups(ctx context.Context, res Resolution, rows []Rollup) error {
	if res.Duration() == 0 {
		return fmt.Errorf("writing rollups: unknown resolution %q", res)
	}
	if len(rows) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO rollups (res, bucket_ns, level, source, target,
			transport, port, protocol, method, path, flows, pkts_c2s, pkts_s2c, bytes_c2s, bytes_s2c,
			rtt_sum_ns, rtt_count, retrans, requests, errors, protocols, latency, rtt)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i := range rows {
			r := &rows[i]
			lat, _ := r.Latency.MarshalBinary()
			rtt, _ := r.RTT.MarshalBinary()
			if _, err := st.ExecContext(ctx, string(res), r.Bucket.UnixNano(), string(r.Key.Level),
				r.Key.Source, r.Key.Target, int64(r.Key.Transport), int64(r.Key.Port), r.Key.Protocol,
				r.Key.Method, r.Key.Path, i64(r.Flows), i64(r.PacketsToServer), i64(r.PacketsToClient),
				i64(r.BytesToServer), i64(r.BytesToClient), i64(r.RTTSumNs), i64(r.RTTCount),
				i64(r.Retransmits), i64(r.Requests), i64(r.Errors), int64(r.Protocols), lat, rtt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing %d rollup rows at %s: %w", len(rows), res, err)
	}
	return nil
}

// i64 stores a counter in an INTEGER column; counters never come near 2^63.
func i64(v uint64) int64 { return int64(v) }

// ReadRollups implements [Store].
func (s *SQLite) ReadRollups(ctx context.Context, q RollupQuery) ([]Rollup, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if q.Resolution.Duration() == 0 {
		return nil, fmt.Errorf("reading rollups: unknown resolution %q", q.Resolution)
	}
	where := []string{"res = ?", "level = ?", "bucket_ns >= ?", "bucket_ns < ?"}
	args := []any{string(q.Resolution), string(q.Level), timeArg(q.From, minNs), timeArg(q.To, maxNs)}
	if q.Source != "" {
		where = append(where, "source = ?")
		args = append(args, q.Source)
	}
	if q.Target != "" {
		where = append(where, "target = ?")
		args = append(args, q.Target)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT bucket_ns, source, target, transport, port, protocol,
		method, path, flows, pkts_c2s, pkts_s2c, bytes_c2s, bytes_s2c, rtt_sum_ns, rtt_count, retrans,
		requests, errors, protocols, latency, rtt FROM rollups WHERE `+strings.Join(where, " AND "), args...)
	if err != nil {
		return nil, fmt.Errorf("reading %s rollups at %s: %w", q.Level, q.Resolution, err)
	}
	defer rows.Close()
	var out []Rollup
	for rows.Next() {
		var r Rollup
		var bucket, transport, port, protocols int64
		var lat, rtt []byte
		if err := rows.Scan(&bucket, &r.Key.Source, &r.Key.Target, &transport, &port, &r.Key.Protocol,
			&r.Key.Method, &r.Key.Path, &r.Flows, &r.PacketsToServer, &r.PacketsToClient, &r.BytesToServer,
			&r.BytesToClient, &r.RTTSumNs, &r.RTTCount, &r.Retransmits, &r.Requests, &r.Errors,
			&protocols, &lat, &rtt); err != nil {
			return nil, fmt.Errorf("reading %s rollups at %s: %w", q.Level, q.Resolution, err)
		}
		r.Bucket = time.Unix(0, bucket).UTC()
		r.Key.Level = q.Level
		r.Key.Transport = sdk.Transport(transport)
		r.Key.Port = uint16(port)
		r.Protocols = uint8(protocols)
		if err := r.Latency.UnmarshalBinary(lat); err != nil {
			return nil, fmt.Errorf("reading %s rollups at %s: %w", q.Level, q.Resolution, err)
		}
		// Rows written before the RTT column existed have NULL there: an empty sketch.
		if err := r.RTT.UnmarshalBinary(rtt); err != nil {
			return nil, fmt.Errorf("reading %s rollups at %s: %w", q.Level, q.Resolution, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading %s rollups at %s: %w", q.Level, q.Resolution, err)
	}
	return out, nil
}

const (
	minNs = int64(-1 << 63)
	maxNs = int64(1<<63 - 1)
)

func timeArg(t time.Time, zero int64) int64 {
	if t.IsZero() {
		return zero
	}
	return t.UnixNano()
}

// ipBytes is the 16-byte form of an address; the zero Addr is 16 zero bytes.
func ipBytes(a netip.Addr) []byte {
	b := a.As16()
	if !a.IsValid() {
		b = [16]byte{}
	}
	return b[:]
}

func ipFrom(b []byte) netip.Addr {
	if len(b) != 16 {
		return netip.Addr{}
	}
	a := netip.AddrFrom16([16]byte(b))
	if a == netip.IPv6Unspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// prefixRange gives the first and last address of a prefix in 16-byte form.
func prefixRange(p netip.Prefix) (lo, hi []byte) {
	p = p.Masked()
	first := p.Addr().As16()
	last := first
	hostBits := p.Addr().BitLen() - p.Bits()
	for i := 15; i >= 0 && hostBits > 0; i-- {
		n := min(hostBits, 8)
		last[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	return first[:], last[:]
}

func joinVLAN(v []uint16) string {
	if len(v) == 0 {
		return ""
	}
	parts := make([]string, len(v))
	for i, id := range v {
		parts[i] = strconv.Itoa(int(id))
	}
	return strings.Join(parts, ",")
}

func splitVLAN(s string) []uint16 {
	if s == "" {
		return nil
	}
	var out []uint16
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(p)
		if err == nil {
			out = append(out, uint16(n))
		}
	}
	return out
}

// Subscription ids are validated identifiers without commas, so a joined list reads back as it
// was.
func joinSubs(s []string) string { return strings.Join(s, ",") }

func splitSubs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// WriteRecords implements [Store].
func (s *SQLite) WriteRecords(ctx context.Context, r Records) error {
	if r.Len() == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if len(r.Flows) > 0 {
			st, err := tx.PrepareContext(ctx, `INSERT INTO flows (id, end_ns, start_ns, agent,
				host, nic, ifindex, netns, transport, client_ip, client_port, server_ip, server_port,
				community_id, pkts_c2s, bytes_c2s, pkts_s2c, bytes_s2c, tcp_flags, rtt_ns, retrans, final,
				end_reason, vlan, macs, subs, l7_protocol, l7_tx, l7_errors, l7_partial)
				VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
			if err != nil {
				return err
			}
			defer st.Close()
			for i := range r.Flows {
				f := &r.Flows[i]
				var macs []byte
				if len(f.ClientMAC) > 0 || len(f.ServerMAC) > 0 {
					macs = make([]byte, 12)
					copy(macs[:6], f.ClientMAC)
					copy(macs[6:], f.ServerMAC)
				}
				var l7 sdk.L7Summary
				if f.L7 != nil {
					l7 = *f.L7
				}
				if _, err := st.ExecContext(ctx, i64(f.ID), f.End.UnixNano(), f.Start.UnixNano(), f.Agent,
					f.Host, f.NIC, f.IfIndex, f.Netns, int64(f.Transport), ipBytes(f.Client.Addr),
					int64(f.Client.Port), ipBytes(f.Server.Addr), int64(f.Server.Port), f.CommunityID,
					i64(f.ClientToServer.Packets), i64(f.ClientToServer.IPBytes), i64(f.ServerToClient.Packets),
					i64(f.ServerToClient.IPBytes), int64(f.TCPFlags), int64(f.RTT), int64(f.Retransmits),
					f.Final, f.EndReason, joinVLAN(f.VLAN), macs, joinSubs(f.Subscriptions), l7.Protocol,
					i64(l7.Transactions), i64(l7.Errors), i64(l7.Partial)); err != nil {
					return err
				}
			}
		}
		if len(r.Events) > 0 {
			st, err := tx.PrepareContext(ctx, `INSERT INTO events (id, time_ns, agent, community_id, body) VALUES (?,?,?,?,?)`)
			if err != nil {
				return err
			}
			defer st.Close()
			for i := range r.Events {
				ev := &r.Events[i]
				body, err := json.Marshal(plainEvent(ev.Event))
				if err != nil {
					return fmt.Errorf("encoding event: %w", err)
				}
				if _, err := st.ExecContext(ctx, i64(ev.ID), ev.Time.UnixNano(), ev.Agent, ev.CommunityID, string(body)); err != nil {
					return err
				}
			}
		}
		if len(r.L7) > 0 {
			st, err := tx.PrepareContext(ctx, `INSERT INTO l7 (id, time_ns, agent, community_id, method, body) VALUES (?,?,?,?,?,?)`)
			if err != nil {
				return err
			}
			defer st.Close()
			for i := range r.L7 {
				l := &r.L7[i]
				body, err := json.Marshal(plainL7(l.L7))
				if err != nil {
					return fmt.Errorf("encoding L7 record: %w", err)
				}
				if _, err := st.ExecContext(ctx, i64(l.ID), l.Time.UnixNano(), l.Agent, l.CommunityID, l.Method, string(body)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing %d records: %w", r.Len(), err)
	}
	return nil
}

const flowColumns = `id, end_ns, start_ns, agent, host, nic, ifindex, netns, transport, client_ip,
	client_port, server_ip, server_port, community_id, pkts_c2s, bytes_c2s, pkts_s2c, bytes_s2c,
	tcp_flags, rtt_ns, retrans, final, end_reason, vlan, macs, subs, l7_protocol, l7_tx, l7_errors,
	l7_partial`

func scanFlow(rows *sql.Rows) (FlowRecord, error) {
	var f FlowRecord
	var id, endNs, startNs, transport, cport, sport, flags, rtt, retrans int64
	var cip, sip, macs []byte
	var vlan, subs, l7proto string
	var l7tx, l7err, l7part uint64
	if err := rows.Scan(&id, &endNs, &startNs, &f.Agent, &f.Host, &f.NIC, &f.IfIndex, &f.Netns,
		&transport, &cip, &cport, &sip, &sport, &f.CommunityID, &f.ClientToServer.Packets,
		&f.ClientToServer.IPBytes, &f.ServerToClient.Packets, &f.ServerToClient.IPBytes, &flags, &rtt,
		&retrans, &f.Final, &f.EndReason, &vlan, &macs, &subs, &l7proto, &l7tx, &l7err, &l7part); err != nil {
		return f, err
	}
	f.ID = uint64(id)
	f.End = time.Unix(0, endNs).UTC()
	f.Start = time.Unix(0, startNs).UTC()
	f.Transport = sdk.Transport(transport)
	f.Client = sdk.Endpoint{Addr: ipFrom(cip), Port: uint16(cport)}
	f.Server = sdk.Endpoint{Addr: ipFrom(sip), Port: uint16(sport)}
	f.TCPFlags = sdk.TCPFlags(flags)
	f.RTT = time.Duration(rtt)
	f.Retransmits = uint32(retrans)
	f.VLAN = splitVLAN(vlan)
	if len(macs) == 12 {
		f.ClientMAC = net.HardwareAddr(macs[:6:6])
		f.ServerMAC = net.HardwareAddr(macs[6:])
	}
	f.Subscriptions = splitSubs(subs)
	if l7proto != "" {
		f.L7 = &sdk.L7Summary{Protocol: l7proto, Transactions: l7tx, Errors: l7err, Partial: l7part}
	}
	return f, nil
}

// QueryFlows implements [Store].
func (s *SQLite) QueryFlows(ctx context.Context, f FlowFilter) ([]FlowRecord, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if f.Limit <= 0 || f.Limit > MaxPage {
		return nil, fmt.Errorf("querying flows: limit %d, want 1 to %d", f.Limit, MaxPage)
	}
	where := []string{"end_ns >= ?", "end_ns < ?"}
	args := []any{timeArg(f.From, minNs), timeArg(f.To, maxNs)}
	add := func(cond string, a ...any) {
		where = append(where, cond)
		args = append(args, a...)
	}
	if f.NIC != "" {
		add("nic = ?", f.NIC)
	}
	if f.Agent != "" {
		add("agent = ?", f.Agent)
	}
	if f.Addr.IsValid() {
		b := ipBytes(f.Addr.Unmap())
		add("(client_ip = ? OR server_ip = ?)", b, b)
	}
	if f.Prefix.IsValid() {
		lo, hi := prefixRange(f.Prefix)
		add("((client_ip BETWEEN ? AND ?) OR (server_ip BETWEEN ? AND ?))", lo, hi, lo, hi)
	}
	if f.Transport != 0 {
		add("transport = ?", int64(f.Transport))
	}
	if f.Port != 0 {
		add("(client_port = ? OR server_port = ?)", int64(f.Port), int64(f.Port))
	}
	if f.CommunityID != "" {
		add("community_id = ?", f.CommunityID)
	}
	if f.L7Method != "" {
		add(`community_id IN (SELECT community_id FROM l7 WHERE method = ? AND time_ns >= ? AND time_ns < ?)`,
			f.L7Method, timeArg(f.From, minNs), timeArg(f.To, maxNs))
	}
	if f.After != nil {
		t := f.After.Time.UnixNano()
		add("(end_ns < ? OR (end_ns = ? AND id < ?))", t, t, i64(f.After.ID))
	}
	args = append(args, f.Limit)
	rows, err := s.db.QueryContext(ctx, `SELECT `+flowColumns+` FROM flows WHERE `+
		strings.Join(where, " AND ")+` ORDER BY end_ns DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("querying flows: %w", err)
	}
	defer rows.Close()
	var out []FlowRecord
	for rows.Next() {
		r, err := scanFlow(rows)
		if err != nil {
			return nil, fmt.Errorf("querying flows: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("querying flows: %w", err)
	}
	return out, nil
}

// Conversation implements [Store].
func (s *SQLite) Conversation(ctx context.Context, communityID string, from, to time.Time, limit int) (Records, error) {
	var out Records
	if s.closed.Load() {
		return out, ErrClosed
	}
	if limit <= 0 || limit > MaxPage {
		return out, fmt.Errorf("reading conversation %q: limit %d, want 1 to %d", communityID, limit, MaxPage)
	}
	lo, hi := timeArg(from, minNs), timeArg(to, maxNs)
	rows, err := s.db.QueryContext(ctx, `SELECT `+flowColumns+` FROM flows
		WHERE community_id = ? AND end_ns >= ? AND end_ns < ? ORDER BY end_ns, id LIMIT ?`, communityID, lo, hi, limit)
	if err != nil {
		return out, fmt.Errorf("reading conversation %q: %w", communityID, err)
	}
	for rows.Next() {
		r, err := scanFlow(rows)
		if err != nil {
			rows.Close()
			return out, fmt.Errorf("reading conversation %q: %w", communityID, err)
		}
		out.Flows = append(out.Flows, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("reading conversation %q: %w", communityID, err)
	}
	if err := readBodies(ctx, s.db, `SELECT id, agent, body FROM events WHERE community_id = ? AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id LIMIT ?`,
		[]any{communityID, lo, hi, limit}, func(id int64, agent string, b []byte) error {
			var ev plainEvent
			if err := json.Unmarshal(b, &ev); err != nil {
				return err
			}
			out.Events = append(out.Events, EventRecord{ID: uint64(id), Agent: agent, Event: sdk.Event(ev)})
			return nil
		}); err != nil {
		return out, fmt.Errorf("reading events of conversation %q: %w", communityID, err)
	}
	if err := readBodies(ctx, s.db, `SELECT id, agent, body FROM l7 WHERE community_id = ? AND time_ns >= ? AND time_ns < ? ORDER BY time_ns, id LIMIT ?`,
		[]any{communityID, lo, hi, limit}, func(id int64, agent string, b []byte) error {
			var l plainL7
			if err := json.Unmarshal(b, &l); err != nil {
				return err
			}
			out.L7 = append(out.L7, L7Record{ID: uint64(id), Agent: agent, L7: sdk.L7(l)})
			return nil
		}); err != nil {
		return out, fmt.Errorf("reading L7 records of conversation %q: %w", communityID, err)
	}
	return out, nil
}

// plainEvent and plainL7 are the sdk records without their JSON methods: the store keeps every
// field as it is, not the export form (which leaves some out and has no decoder for events).
type (
	plainEvent sdk.Event
	plainL7    sdk.L7
)

func readBodies(ctx context.Context, db *sql.DB, query string, args []any, fn func(id int64, agent string, body []byte) error) error {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var agent string
		var b []byte
		if err := rows.Scan(&id, &agent, &b); err != nil {
			return err
		}
		if err := fn(id, agent, b); err != nil {
			return err
		}
	}
	return rows.Err()
}

// WriteNodeAddresses implements [Store].
func (s *SQLite) WriteNodeAddresses(ctx context.Context, nodes []NodeAddress) error {
	if len(nodes) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO node_addresses (node, addr, last_seen_ns) VALUES (?,?,?)
			ON CONFLICT (node, addr) DO UPDATE SET last_seen_ns = max(last_seen_ns, excluded.last_seen_ns)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, n := range nodes {
			if _, err := st.ExecContext(ctx, n.Node, n.Addr.String(), n.LastSeen.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing %d node addresses: %w", len(nodes), err)
	}
	return nil
}

// ReadNodeAddresses implements [Store].
func (s *SQLite) ReadNodeAddresses(ctx context.Context, since time.Time) ([]NodeAddress, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rows, err := s.db.QueryContext(ctx, `SELECT node, addr, last_seen_ns FROM node_addresses WHERE last_seen_ns >= ?`, timeArg(since, minNs))
	if err != nil {
		return nil, fmt.Errorf("reading node addresses: %w", err)
	}
	defer rows.Close()
	var out []NodeAddress
	for rows.Next() {
		var n NodeAddress
		var addr string
		var ns int64
		if err := rows.Scan(&n.Node, &addr, &ns); err != nil {
			return nil, fmt.Errorf("reading node addresses: %w", err)
		}
		n.Addr, _ = netip.ParseAddr(addr)
		n.LastSeen = time.Unix(0, ns).UTC()
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading node addresses: %w", err)
	}
	return out, nil
}

// WriteAlerts implements [Store].
func (s *SQLite) WriteAlerts(ctx context.Context, alerts []AlertRecord) error {
	if len(alerts) == 0 {
		return nil
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO alerts (id, kind, fingerprint, rule,
			state, started_ns, updated_ns, body) VALUES (?,?,?,?,?,?,?,?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i := range alerts {
			a := &alerts[i]
			if _, err := st.ExecContext(ctx, a.ID, a.Kind, a.Fingerprint, a.Rule, a.State,
				a.Started.UnixNano(), a.Updated.UnixNano(), string(a.Body)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("writing %d alerts: %w", len(alerts), err)
	}
	return nil
}

// ReadAlerts implements [Store].
func (s *SQLite) ReadAlerts(ctx context.Context, q AlertQuery) ([]AlertRecord, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if q.Limit <= 0 || q.Limit > MaxPage {
		return nil, fmt.Errorf("reading alerts: limit %d, want 1 to %d", q.Limit, MaxPage)
	}
	where := []string{"updated_ns >= ?"}
	args := []any{timeArg(q.Since, minNs)}
	for _, f := range []struct{ col, v string }{{"kind", q.Kind}, {"state", q.State}, {"fingerprint", q.Fingerprint}} {
		if f.v != "" {
			where = append(where, f.col+" = ?")
			args = append(args, f.v)
		}
	}
	args = append(args, q.Limit)
	rows, err := s.db.QueryContext(ctx, `SELECT id, kind, fingerprint, rule, state, started_ns,
		updated_ns, body FROM alerts WHERE `+strings.Join(where, " AND ")+
		` ORDER BY updated_ns DESC, id DESC LIMIT ?`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading alerts: %w", err)
	}
	defer rows.Close()
	var out []AlertRecord
	for rows.Next() {
		var a AlertRecord
		var started, updated int64
		var body string
		if err := rows.Scan(&a.ID, &a.Kind, &a.Fingerprint, &a.Rule, &a.State, &started, &updated, &body); err != nil {
			return nil, fmt.Errorf("reading alerts: %w", err)
		}
		a.Started, a.Updated, a.Body = time.Unix(0, started).UTC(), time.Unix(0, updated).UTC(), []byte(body)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading alerts: %w", err)
	}
	return out, nil
}

// Prune implements [Store].
func (s *SQLite) Prune(ctx context.Context, c Cutoffs) (int64, error) {
	var total int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		exec := func(q string, args ...any) error {
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return err
			}
			n, _ := res.RowsAffected()
			total += n
			return nil
		}
		for res, before := range c.Rollups {
			if before.IsZero() {
				continue
			}
			if err := exec(`DELETE FROM rollups WHERE res = ? AND bucket_ns < ?`, string(res), before.UnixNano()); err != nil {
				return err
			}
		}
		if !c.Records.IsZero() {
			ns := c.Records.UnixNano()
			for _, q := range []string{`DELETE FROM flows WHERE end_ns < ?`, `DELETE FROM events WHERE time_ns < ?`, `DELETE FROM l7 WHERE time_ns < ?`} {
				if err := exec(q, ns); err != nil {
					return err
				}
			}
		}
		if !c.Alerts.IsZero() {
			if err := exec(`DELETE FROM alerts WHERE updated_ns < ?`, c.Alerts.UnixNano()); err != nil {
				return err
			}
		}
		if !c.Nodes.IsZero() {
			if err := exec(`DELETE FROM node_addresses WHERE last_seen_ns < ?`, c.Nodes.UnixNano()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return total, fmt.Errorf("pruning the analysis store: %w", err)
	}
	return total, nil
}
