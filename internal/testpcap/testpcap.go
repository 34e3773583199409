// Package testpcap reads the shared test captures (../shared/testdata/pcaps) for tests.
package testpcap

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/quanyu/quanyu/internal/testbin"
)

// Files lists every pcap under pcaps/zeek of the shared test data, sorted.
func Files(tb testing.TB) []string {
	tb.Helper()
	root := filepath.Join(testbin.SharedTestdata(tb), "pcaps", "zeek")
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Ext(path) == ".pcap" {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		tb.Fatalf("listing pcaps under %s: %d files, %v", root, len(files), err)
	}
	sort.Strings(files)
	return files
}

// Frame is one captured frame (copied out of the file) and its timestamp.
type Frame struct {
	Data []byte
	TS   time.Time
}

// Read returns every frame of a pcap file and its link type.
func Read(tb testing.TB, path string) ([]Frame, layers.LinkType) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("opening %s: %v", path, err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatalf("reading the pcap header of %s: %v", path, err)
	}
	var frames []Frame
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return frames, r.LinkType()
		}
		if err != nil {
			tb.Fatalf("reading frame %d of %s: %v", len(frames)+1, path, err)
		}
		frames = append(frames, Frame{Data: data, TS: ci.Timestamp})
	}
}

// Data returns every frame's bytes of a pcap file.
func Data(tb testing.TB, path string) [][]byte {
	tb.Helper()
	frames, _ := Read(tb, path)
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = f.Data
	}
	return out
}
