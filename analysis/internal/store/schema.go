package store

import "github.com/quanyu/quanyu/internal/sqlitedb"

// migrations is the whole history of the schema, oldest first.
//
// Times are Unix nanoseconds (UTC) in INTEGER columns. Addresses are 16-byte BLOBs (IPv4 as
// IPv4-mapped IPv6), so that a CIDR filter is a range comparison on an index-friendly column,
// as it would be on ClickHouse's IPv6 type. Rollup rows have no unique key: they are deltas,
// summed by readers.
var migrations = []sqlitedb.Migration{
	{
		Version: 1,
		Name:    "rollups, records and node addresses",
		Stmts: []string{
			`CREATE TABLE rollups (
				res        TEXT NOT NULL,
				bucket_ns  INTEGER NOT NULL,
				level      TEXT NOT NULL,
				source     TEXT NOT NULL,
				target     TEXT NOT NULL,
				transport  INTEGER NOT NULL,
				port       INTEGER NOT NULL,
				protocol   TEXT NOT NULL,
				method     TEXT NOT NULL,
				path       TEXT NOT NULL,
				flows      INTEGER NOT NULL,
				pkts_c2s   INTEGER NOT NULL,
				pkts_s2c   INTEGER NOT NULL,
				bytes_c2s  INTEGER NOT NULL,
				bytes_s2c  INTEGER NOT NULL,
				rtt_sum_ns INTEGER NOT NULL,
				rtt_count  INTEGER NOT NULL,
				retrans    INTEGER NOT NULL,
				requests   INTEGER NOT NULL,
				errors     INTEGER NOT NULL,
				protocols  INTEGER NOT NULL,
				latency    BLOB
			)`,
			`CREATE INDEX rollups_by_time ON rollups (res, level, bucket_ns)`,
			`CREATE TABLE flows (
				id          INTEGER PRIMARY KEY,
				end_ns      INTEGER NOT NULL,
				start_ns    INTEGER NOT NULL,
				agent       TEXT NOT NULL,
				host        TEXT NOT NULL,
				nic         TEXT NOT NULL,
				ifindex     INTEGER NOT NULL,
				netns       TEXT NOT NULL,
				transport   INTEGER NOT NULL,
				client_ip   BLOB NOT NULL,
				client_port INTEGER NOT NULL,
				server_ip   BLOB NOT NULL,
				server_port INTEGER NOT NULL,
				community_id TEXT NOT NULL,
				pkts_c2s    INTEGER NOT NULL,
				bytes_c2s   INTEGER NOT NULL,
				pkts_s2c    INTEGER NOT NULL,
				bytes_s2c   INTEGER NOT NULL,
				tcp_flags   INTEGER NOT NULL,
				rtt_ns      INTEGER NOT NULL,
				retrans     INTEGER NOT NULL,
				final       INTEGER NOT NULL,
				end_reason  TEXT NOT NULL,
				vlan        TEXT NOT NULL,
				macs        BLOB,
				subs        TEXT NOT NULL,
				l7_protocol TEXT NOT NULL,
				l7_tx       INTEGER NOT NULL,
				l7_errors   INTEGER NOT NULL,
				l7_partial  INTEGER NOT NULL
			)`,
			`CREATE INDEX flows_by_time ON flows (end_ns, id)`,
			`CREATE INDEX flows_by_cid ON flows (community_id, end_ns)`,
			`CREATE TABLE events (
				id           INTEGER PRIMARY KEY,
				time_ns      INTEGER NOT NULL,
				agent        TEXT NOT NULL,
				community_id TEXT NOT NULL,
				body         TEXT NOT NULL
			)`,
			`CREATE INDEX events_by_time ON events (time_ns)`,
			`CREATE INDEX events_by_cid ON events (community_id, time_ns)`,
			`CREATE TABLE l7 (
				id           INTEGER PRIMARY KEY,
				time_ns      INTEGER NOT NULL,
				agent        TEXT NOT NULL,
				community_id TEXT NOT NULL,
				method       TEXT NOT NULL,
				body         TEXT NOT NULL
			)`,
			`CREATE INDEX l7_by_time ON l7 (time_ns)`,
			`CREATE INDEX l7_by_cid ON l7 (community_id, time_ns)`,
			`CREATE TABLE node_addresses (
				node         TEXT NOT NULL,
				addr         TEXT NOT NULL,
				last_seen_ns INTEGER NOT NULL,
				PRIMARY KEY (node, addr)
			) WITHOUT ROWID`,
		},
	},
	{
		Version: 2,
		Name:    "handshake RTT sketches and the alert history",
		Stmts: []string{
			`ALTER TABLE rollups ADD COLUMN rtt BLOB`,
			// One row per alert (a rule's alert on one series, pending to resolved) or event,
			// replaced as it changes; the body is the whole alert as the API gives it, so the
			// history keeps what was said at the time even after rules or the catalog change.
			`CREATE TABLE alerts (
				id          TEXT PRIMARY KEY,
				kind        TEXT NOT NULL,
				fingerprint TEXT NOT NULL,
				rule        TEXT NOT NULL,
				state       TEXT NOT NULL,
				started_ns  INTEGER NOT NULL,
				updated_ns  INTEGER NOT NULL,
				body        TEXT NOT NULL
			) WITHOUT ROWID`,
			`CREATE INDEX alerts_by_time ON alerts (updated_ns)`,
		},
	},
}
