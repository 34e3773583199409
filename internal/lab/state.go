package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// state is what the state file records: everything a lab made, so that Down and Status know it
// without guessing. Down also searches by prefix, so a lost or stale file only costs precision.
type state struct {
	Prefix     string       `json:"prefix"`
	CIDR       netip.Prefix `json:"cidr"`
	Bridge     string       `json:"bridge"`
	BridgeAddr netip.Prefix `json:"bridge_addr"`
	Exe        string       `json:"exe"`
	Detached   bool         `json:"detached"`
	Created    time.Time    `json:"created"`
	Hosts      []Host       `json:"hosts"`
}

// stateFile is the file of the lab with this prefix in dir; one directory can hold several labs.
func stateFile(dir, prefix string) string { return filepath.Join(dir, prefix+".json") }

// writeState replaces the state file atomically, so that a crash leaves the old one or the new.
func writeState(dir string, s state) error {
	raw, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the lab's state: %w", err)
	}
	path := stateFile(dir, s.Prefix)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(raw, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the lab's state file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the lab's state file: %w", err)
	}
	return nil
}

// readState reads the lab's state file; ok is false when there is none.
func readState(dir, prefix string) (s state, ok bool, err error) {
	raw, err := os.ReadFile(stateFile(dir, prefix))
	if errors.Is(err, fs.ErrNotExist) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("reading the lab's state file: %w", err)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, false, fmt.Errorf("reading the lab's state file %s: %w", stateFile(dir, prefix), err)
	}
	if s.Prefix != prefix {
		return s, false, fmt.Errorf("the lab's state file %s is of prefix %q, not %q", stateFile(dir, prefix), s.Prefix, prefix)
	}
	return s, true, nil
}
